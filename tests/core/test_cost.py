"""bench.core.cost: parameter counts (tied, peft, held models), timing, the cost field."""

import math

import pytest
import torch
from conftest import WORDS, tiny_llama, word_tokenizer

from bench.core import cost


def test_tied_embeddings_count_once():
    tied, untied = tiny_llama(40, tied=True), tiny_llama(40, tied=False)
    n = cost.parameter_count(tied)
    assert n == sum(p.numel() for p in tied.parameters())  # torch's own unique view
    assert sum(t.numel() for t in tied.state_dict().values()) == n + 40 * 32  # naive: twice
    assert cost.parameter_count(untied) - n == 40 * 32  # an untied LM head is 40 x 32 more
    assert cost.parameter_count(tied, tied) == n  # a model given twice is one model


def test_a_peft_lora_model_counts_its_base_and_its_adapters():
    from peft import LoraConfig

    from bench.core.hf import with_lora

    base = tiny_llama(40)
    before = cost.parameter_count(base)
    lora = with_lora(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapters = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    # 2 layers x (q_proj 32 -> 32, v_proj 32 -> 16), each A [4, 32] plus B [out, 4]
    assert adapters == 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4))
    assert cost.parameter_count(lora) == before + adapters
    merged = lora.merge_and_unload()
    assert cost.parameter_count(merged) == before


def test_objects_holding_models_count_each_shared_module_once():
    teacher, generator = tiny_llama(40), torch.nn.Linear(32, 32)

    class Pipeline:  # e.g. SemCoT at inference: a generator in front of the frozen teacher
        def __init__(self):
            self.teacher, self.generator, self.k = teacher, generator, 3

    class Holder:  # e.g. a reranker holding an encoder object holding the model
        def __init__(self):
            self.encoder = type("Encoder", (), {})()
            self.encoder.model = teacher

    both = cost.parameter_count(teacher) + 32 * 32 + 32
    assert cost.parameter_count(Pipeline()) == both
    assert cost.parameter_count(Pipeline(), teacher) == both  # shared: counted once
    assert cost.parameter_count(Holder()) == cost.parameter_count(teacher)
    assert cost.parameter_count(Pipeline(), exclude=teacher) == 32 * 32 + 32
    assert cost.parameter_count(None) == 0
    assert cost.parameter_count(object()) == 0  # a training-free draft holds no model
    aliased = torch.nn.Linear(40, 32, bias=False)  # a head that shares the target's tensor
    aliased.weight = teacher.get_input_embeddings().weight
    assert cost.parameter_count(aliased, exclude=teacher) == 0


def test_weights_dtype_is_the_dtype_of_most_parameters():
    model = tiny_llama(40).to(torch.bfloat16)
    assert cost.weights_dtype(model) == "bf16"
    assert cost.weights_dtype(model.float()) == "fp32"
    assert cost.weights_dtype(None) == "unknown"


def test_time_per_item_warms_up_then_takes_the_median_within_the_budget():
    calls = {"run": 0, "warmup": 0}

    def run():
        calls["run"] += 1

    ms = cost.time_per_item(run, 4, repeats=3, warmup=lambda: calls.update(warmup=1))
    assert calls == {"run": 3, "warmup": 1} and ms >= 0
    calls["run"] = 0
    cost.time_per_item(run, 4, repeats=3, budget_s=0.0)  # the budget is spent after one
    assert calls["run"] == 1
    with pytest.raises(ValueError):
        cost.time_per_item(run, 0)


def test_cost_entry_checks_and_rounds():
    entry = cost.cost_entry(135, 12.345678, "response, batch 8")
    assert entry == {"parameters": 135, "ms_per_item": 12.35, "per": "response, batch 8"}
    assert cost.cost_entry(None, 1e-6, "image")["ms_per_item"] > 0  # never rounds to 0
    assert cost.cost_entry(None, None, "query")["ms_per_item"] is None
    for bad in [(-1, 1.0, "x"), (1.5, 1.0, "x"), (True, 1.0, "x"), (1, -0.1, "x"),
                (1, math.nan, "x"), (1, math.inf, "x"), (1, "fast", "x"), (1, 1.0, " ")]:
        with pytest.raises(ValueError):
            cost.cost_entry(*bad)
    assert cost.ms_per_item(2.0, 4) == 500.0 and cost.ms_per_item(1.0, 0) is None


def test_generation_cost_probes_the_first_prompts_uncached():
    tokenizer = word_tokenizer(WORDS)
    model = tiny_llama(len(tokenizer), eos_token_id=2, pad_token_id=0)
    prompts = [tokenizer.encode(text) for text in ("the cat", "a dog sat on", "the mat")] * 4
    entry = cost.generation_cost(model, tokenizer, prompts, max_new_tokens=3, batch_size=32)
    assert entry["parameters"] == cost.parameter_count(model) > 0
    assert entry["ms_per_item"] > 0
    assert entry["per"].startswith("response of up to 3 new tokens, greedy, batch 8, fp32")
    assert "the first 8 evaluated prompts generated again, uncached" in entry["per"]
