"""The gsm8k suite: SemCoT losses by hand, the Skip-Thinking pieces the recipes add, the
SemCoT encoder, usage errors, and a tiny end-to-end run of every method through lm-eval."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_llama, word_tokenizer

from bench.cli import main
from methods.losses.semcot import semcot_generator_loss, semcot_infonce
from methods.trainer import logged_train_seconds

# --- SemCoT losses ---------------------------------------------------------------------------


def test_semcot_infonce_by_hand():
    r = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    c = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    s = 1 / math.sqrt(2)  # cos(r0, c0) = cos(r1, c0) = 1/sqrt2; cos(r0, c1) = 0, cos(r1, c1) = -1
    expected = -(math.log(math.exp(s) / (math.exp(s) + 1))
                 + math.log(math.exp(-1) / (math.exp(s) + math.exp(-1)))) / 2
    assert semcot_infonce(r, c).item() == pytest.approx(expected, rel=1e-6)
    assert semcot_infonce(r, c, temperature=0.5).item() != pytest.approx(expected)
    assert semcot_infonce(r[:1], c[:1]).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        semcot_infonce(r, c[:1])


def test_semcot_generator_loss_by_hand():
    implicit = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    logits = torch.zeros(2, 2, 3)
    logits[0, 0] = torch.tensor([2.0, 0.0, 0.0])
    ids = torch.tensor([[0, 1], [2, 0]])
    mask = torch.tensor([[True, False], [True, True]])
    loss, parts = semcot_generator_loss(implicit, target, logits, ids, mask=mask, alpha=0.25)
    reason = ((1 - 0.0) + (1 - 1.0)) / 2
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    answer = (ce0 + math.log(3) + math.log(3)) / 3  # the masked token is left out
    assert parts["reason"].item() == pytest.approx(reason)
    assert parts["answer"].item() == pytest.approx(answer, rel=1e-6)
    assert loss.item() == pytest.approx(0.25 * reason + 0.75 * answer, rel=1e-6)
    loss.backward()
    assert implicit.grad is not None and implicit.grad.abs().sum() > 0
    only_reason, _ = semcot_generator_loss(implicit, target, logits, ids, alpha=1.0)
    assert only_reason.item() == pytest.approx(reason)
    with pytest.raises(ValueError):
        semcot_generator_loss(implicit, target, logits, ids, alpha=1.5)


# --- recipe pieces ---------------------------------------------------------------------------


def test_prompt_is_lm_evals_and_steps_split_lines_and_sentences():
    from bench.reasoning.lm_eval_tasks import DOC_TO_TEXT
    from methods.reasoning.cot_distill import PROMPT, reasoning_steps

    assert PROMPT.replace("{question}", "{{question}}") == DOC_TO_TEXT
    assert reasoning_steps("He has 3 apples. She gives 2 more.\n3 + 2 = 5\n\n") == [
        "He has 3 apples.", "She gives 2 more.", "3 + 2 = 5"]


def test_condensed_reasoning_keeps_the_computed_values():
    from bench.reasoning.arith import make_problem
    from methods.reasoning.semcot import condense

    p = make_problem(123, 456)
    assert condense(p.rationale, p.answer) == (
        "Intermediate results: 738, 6150, 49200, 6888, 56088; answer 56088.")
    assert condense("No equations here.", "7") == "answer 7."


def test_sbc_span_costs_from_one_forward_equal_prefix_forwards(tiny_chat_model_dir):
    """The NLL of a chunk given everything before it is a slice of one full pass."""
    from bench.core.assets import load_causal_lm
    from methods.reasoning.skip_thinking import SkipConfig, chunk_units, sentence_nlls
    from methods.reasoning.skip_thinking_chunks import lm_chunk_cost, search_chunks

    model, _ = load_causal_lm(str(tiny_chat_model_dir))
    prompt = [4, 5, 6]
    units = [[7, 8], [9], [10, 11, 12], [13, 4], [5, 6, 7], [8]]
    flat = [t for u in units for t in u]
    nll = sentence_nlls(model, [(prompt, flat)], pad_id=0)[0].float()
    cost = lm_chunk_cost(model, prompt)
    starts = [0, 2, 3, 6, 8, 11, 12]
    for i, j in [(0, 2), (1, 4), (3, 6)]:
        chunk = [t for u in units[i:j] for t in u]
        context = [t for u in units[:i] for t in u]
        sliced = nll[starts[i]:starts[j]].mean().item()
        assert sliced == pytest.approx(cost(context, chunk), abs=0.05)  # bf16 vs fp32 pass
    chunks = chunk_units(units, SkipConfig(n_chunks=3), nll)
    assert [t for c in chunks for t in c] == flat and len(chunks) == 3

    def exact(context, chunk):
        i = len(context)
        return float(nll[starts[i]:starts[i + len(chunk)]].mean())

    expected = search_chunks(units, 3, exact)
    assert chunks == [[t for u in g for t in u] for g in expected]
    assert chunk_units(units, SkipConfig(n_chunks=3, chunking="average"), None) == [
        [7, 8, 9], [10, 11, 12, 13, 4], [5, 6, 7, 8]]


def test_batched_skippable_equals_the_sequential_rule(monkeypatch):
    """A fake student answers right iff it sees token 50 (chunk 2's) or no chunk at all is
    missing; batched rounds must give skippable_chunks' answers."""
    from bench.core import generation
    from bench.core.generation import Generation
    from methods.reasoning.skip_thinking import SkipConfig, batched_skippable
    from methods.reasoning.skip_thinking_chunks import skippable_chunks

    def student(ids):
        return "#### 7" if 50 in ids else "#### 3"

    calls = []

    def fake_generate(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        return [Generation(list(p), [], student(p)) for p in prompts]

    monkeypatch.setattr(generation, "generate", fake_generate)
    items = [([1], [[10], [20], [50], [30], [40]], "7"), ([2], [[10], [50], [60]], "7"),
             ([3], [[10], [20], [40]], "7"), ([4], [[10], [20]], "7")]

    class Dummy(torch.nn.Module):
        pass

    got = batched_skippable(Dummy(), None, items, SkipConfig())
    want = [skippable_chunks(lambda q, kept, p=p: student(p + [t for c in kept[:-1] for t in c]),
                             "", chunks, ans) for p, chunks, ans in items]
    assert got == want == [[1, 3], [], [], []]
    assert len(calls) <= 4  # rounds, not one call per check


def test_skippability_decisions_are_stored_with_their_cwt_run(monkeypatch, tmp_path):
    from methods.reasoning import skip_thinking
    from methods.reasoning.skip_thinking import SkipConfig, cached_skippable

    calls = []

    def fake_batched(model, tokenizer, items, cfg):
        calls.append(len(items))
        return [[1]] * len(items)

    monkeypatch.setattr(skip_thinking, "batched_skippable", fake_batched)
    items = [([1], [[10], [20], [30]], "7")]
    assert cached_skippable(tmp_path, None, None, items, SkipConfig()) == [[1]]
    assert cached_skippable(tmp_path, None, None, items, SkipConfig()) == [[1]]
    assert calls == [1]  # the second call read skippable.json
    other = [([1], [[10], [20], [31]], "7")]  # other chunks: decide again
    cached_skippable(tmp_path, None, None, other, SkipConfig())
    cached_skippable(tmp_path, None, None, other, SkipConfig(skip_check_tokens=8))
    assert calls == [1, 1, 1]


def test_sentence_encoder_runs_the_teachers_layers(tiny_chat_model_dir):
    from bench.core.assets import load_causal_lm
    from methods.reasoning.semcot import SentenceEncoder

    teacher, _ = load_causal_lm(str(tiny_chat_model_dir))
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    with torch.no_grad():
        hs = teacher.model(input_ids=ids, output_hidden_states=True).hidden_states
        enc = SentenceEncoder(teacher, 0, 2, 16)
        pooled = enc.pooled(hs[0])
        # padding after the row changes nothing (causal layers, masked mean)
        padded = torch.cat([hs[0], torch.zeros(1, 3, hs[0].shape[-1])], 1)
        mask = torch.tensor([[1] * 5 + [0] * 3])
        torch.testing.assert_close(enc.pooled(padded, mask), pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, hs[-1].mean(1), rtol=1e-4, atol=1e-4)
    assert enc(hs[0]).shape == (1, 16)


# --- suite -----------------------------------------------------------------------------------


def test_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    out = ["--suite", "gsm8k", "--out", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w")]
    assert main(["run", "--method", "cot-sft", "--dataset", "gsm8k", *out]) == 2
    err = capsys.readouterr().err
    assert "DISTILLBENCH_ONLINE=1" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "--method", "cot-sft", "--dataset", "svamp", *out]) == 2
    assert "not a dataset of suite 'gsm8k'" in capsys.readouterr().err
    assert main(["run", "--method", "fkl", *out]) == 2
    assert "does not run on suite 'gsm8k'" in capsys.readouterr().err
    assert main(["run", "--method", "cot-sft", "--set", "alpha=0.5", *out]) == 2
    assert "--set alpha" in capsys.readouterr().err


def test_digits_dataset_id_maps_to_its_own_lm_eval_task(tmp_path):
    from bench.reasoning.lm_eval_tasks import write_lm_eval_tasks
    from bench.reasoning.suite import parse_dataset

    ds = parse_dataset("offline/arith-2x2-digits")
    assert (ds.task, ds.style, ds.digits) == ("arith_2x2_digits", "digits", (2, 2))
    assert parse_dataset("offline/arith-2x2").task == "arith_2x2"
    tasks = write_lm_eval_tasks(tmp_path, arith_sizes=[(2, 2)], asdiv=False,
                                arith_style="digits")
    assert [f.name for f in tasks.iterdir()] == ["arith_2x2_digits.yaml"]
    first = json.loads((tmp_path / "data" / "arith_2x2_digits" / "test.jsonl").open().readline())
    steps = first["answer"].splitlines()[1]
    assert steps.count(" = ") == 2 and " + " in steps  # terms = pairwise sum = value


def test_accuracy_vs_latency_plot(tmp_path):
    from bench.core.plots import accuracy_vs_latency

    def rec(method, em, lat):
        return {"suite": "gsm8k", "method": method, "model": "m", "seed": 0,
                "dataset": {"id": "offline/arith-3x3", "offline_stand_in": True},
                "metrics": {"exact_match": em, "latency_s": lat}}

    records = [rec("cot-sft", 0.4, 2.0), rec("answer-only", 0.1, 0.3), rec("semcot", 0.05, 0.5)]
    [path] = accuracy_vs_latency(records, tmp_path)
    assert path.name.startswith("gsm8k_offline_arith-3x3") and path.suffix == ".png"
    first = path.read_bytes()
    accuracy_vs_latency(records, tmp_path)
    assert path.read_bytes() == first  # deterministic


@pytest.mark.slow
def test_tiny_end_to_end_every_method(tiny_chat_model_dir, tmp_path):
    results = tmp_path / "results"
    common = ["--suite", "gsm8k", "--teacher", str(tiny_chat_model_dir), "--preset", "smoke",
              "--dataset", "offline/arith-2x2", "--work-dir",
              str(tmp_path / "work"), "--set", "n_train=6", "--set", "n_test=3",
              "--set", "teacher_train=6", "--set", "max_gen_toks=6"]
    gold = ["--set", "rationales=gold"]  # the random tiny teacher is never right
    runs = {"cot-sft": gold, "teacher": [], "teacher-direct": [], "answer-only": [],
            "skip-thinking": gold, "skip-thinking-cwt": gold,
            "semcot": [*gold, "--set", "k_train=2"]}
    for method, extra in runs.items():
        assert main(["run", "--method", method, *common, *extra, "--out", str(results)]) == 0, \
            method
    files = {f.name.split("__")[0]: json.loads(f.read_text())
             for f in (results / "gsm8k").rglob("*.json")}
    assert set(files) == set(runs)
    for method, rec in files.items():
        assert rec["dataset"]["offline_stand_in"] and rec["dataset"]["num_items"] == 3
        assert set(rec["metrics"]) == {"exact_match", "exact_match_flexible",
                                       "generated_tokens", "latency_s"}, method
        assert all(len(v) == 3 for v in rec["per_item"].values())
        assert [s["id"] for s in rec["config"]["samples"]] == list(rec["per_item"]["exact_match"])
        assert rec["config"]["lm_eval_task"] == "arith_2x2"
        assert 0 < rec["metrics"]["generated_tokens"] <= 6 and rec["metrics"]["latency_s"] > 0
        assert rec["cost"]["parameters"] > 0, method
        assert rec["cost"]["ms_per_item"] == pytest.approx(rec["metrics"]["latency_s"] * 1000,
                                                           rel=1e-3)
        if method != "cot-sft":
            assert rec["config"]["paired_bootstrap_vs_baseline"]["baseline"] == "cot-sft"
    assert files["teacher"]["config"]["teacher"]["finetuned"]
    # every row records which teacher it came from, and the rows trained on rationales the
    # digest of what they trained on
    assert len({rec["config"]["teacher"]["weights_fingerprint"] for rec in files.values()}) == 1
    digests = {m: files[m]["config"]["teacher"].get("rationales_sha256") for m in files}
    assert digests["cot-sft"] == digests["skip-thinking"] == digests["semcot"]
    assert digests["cot-sft"] is not None
    assert digests["teacher"] is None
    assert files["teacher"]["config"]["teacher"]["direct_prompt"] == "\nAnswer directly:"
    assert files["semcot"]["config"]["answer_prompt"] == "\nAnswer directly:"
    # one model name per method whatever the dataset's teacher (no "-arith-ft" in it)
    assert files["cot-sft"]["model"] == "tiny-chat-llama0-2L"
    assert files["teacher-direct"]["model"] == "tiny-chat-llama0-direct"
    assert files["skip-thinking"]["config"]["cwt_examples"] >= 6
    assert files["semcot"]["config"]["recipe"]["k_eval"] == 1
    # training time from the step logs of every training run (skip-thinking: CWT and STT)
    assert len(files["skip-thinking"]["config"]["train_runs"]) == 2
    assert len(files["semcot"]["config"]["train_runs"]) >= 2
    # the ablation is skip-thinking's own first stage (its cached CWT run), never skipped
    cwt_only = files["skip-thinking-cwt"]["config"]
    assert cwt_only["train_runs"] == files["skip-thinking"]["config"]["train_runs"][:1]
    assert "stt_examples" not in cwt_only and "skipped_chunks" not in cwt_only
    for method in ("cot-sft", "answer-only", "skip-thinking", "skip-thinking-cwt", "semcot"):
        config = files[method]["config"]
        logged = sum(logged_train_seconds(run) for run in config["train_runs"])
        assert config["seconds"]["train_steps"] == round(logged, 3) > 0, method
    assert "train_steps" not in files["teacher"]["config"]["seconds"]
    # a rerun loads the trained student from the cache and still reports its training time
    again = tmp_path / "again"
    assert main(["run", "--method", "cot-sft", *common, *gold, "--out", str(again)]) == 0
    rerun = json.loads(next((again / "gsm8k").rglob("*.json")).read_text())["config"]
    assert rerun["seconds"]["train_steps"] == files["cot-sft"]["config"]["seconds"]["train_steps"]
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "gsm8k.md").exists()
    assert list((tmp_path / "lb").glob("gsm8k_*accuracy_latency.png"))


def _tiny_arith_model(path, n_test: int):
    """A random 2-layer Llama whose word-level vocabulary covers the first ``n_test`` arith
    test prompts (so they differ), with the EOS row of its LM head set to outscore one
    token that some but not all greedy answers emit: answers then end at different lengths."""
    from bench.reasoning.arith import make_arith
    from bench.reasoning.lm_eval_tasks import ARITH_SEED

    words = sorted({w for p in make_arith(2, 2, n_test, ARITH_SEED, split="test")
                    for w in f"Question: {p.question} Answer: #### {p.answer}".split()})
    tok = word_tokenizer(words)
    model = tiny_llama(len(tok), tied=False, max_positions=2048, eos_token_id=2,
                       pad_token_id=0)
    with torch.no_grad():
        model.lm_head.weight[:3] = 0.0  # logit 0: below the argmax, until EOS is rewired
        firsts = []
        for p in make_arith(2, 2, n_test, ARITH_SEED, split="test"):
            ids = tok(f"Question: {p.question}\nAnswer:", return_tensors="pt")["input_ids"]
            firsts.append(model.generate(ids, max_new_tokens=12, do_sample=False,
                                         pad_token_id=0)[0, ids.shape[1]:].tolist())
        seen = [t for out in firsts for t in out]
        stop = next(t for t in seen if 0 < sum(t in out for out in firsts) < len(firsts))
        model.lm_head.weight[2] = model.lm_head.weight[stop] * 1.01
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_batched_answers_equal_batch_one_and_only_the_subset_is_timed(tmp_path, capfd):
    """Accuracy batches must give batch 1's answers and token counts (greedy, left padding);
    latency exists only for the first ``latency_items`` documents. lm-eval draws none of its
    own bars (dataset splits, request building): the log shows this suite's bar only."""
    import lm_eval.api.task

    from bench.core.assets import load_causal_lm
    from bench.reasoning.evaluation import evaluate_model
    from bench.reasoning.suite import parse_dataset

    path = _tiny_arith_model(tmp_path / "model", 7)
    model, tok = load_causal_lm(str(path), dtype="float32")
    ds = parse_dataset("offline/arith-2x2")
    base = {"max_gen_toks": 24, "n_test": 7, "num_fewshot": None}
    capfd.readouterr()
    original_bar = lm_eval.api.task.tqdm
    one, p1 = evaluate_model(ds, {**base, "eval_batch_size": 1, "latency_items": 0}, model,
                             tok, "batch 1", 0, tmp_path)
    many, p4 = evaluate_model(ds, {**base, "eval_batch_size": 4, "latency_items": 2}, model,
                              tok, "batched", 0, tmp_path)
    printed = capfd.readouterr()
    assert "it/s" not in printed.err + printed.out and "Generating" not in printed.err
    assert lm_eval.api.task.tqdm is original_bar  # put back
    assert [r["output"] for r in many] == [r["output"] for r in one]
    counts = [r["generated_tokens"] for r in one]
    assert [r["generated_tokens"] for r in many] == counts
    assert len(set(counts)) > 1 and min(counts) < 24  # some answers stop at EOS
    assert all(r["latency_s"] > 0 for r in one)
    assert ["latency_s" in r for r in many] == [True, True] + [False] * 5
    assert (p1["latency_items"], p4["latency_items"], p4["batch_size"]) == (7, 2, 4)


def test_cpu_long_preset_is_the_arith_learning_recipe_and_set_overrides_it():
    from bench.contracts import resolve_recipe
    from bench.reasoning.suite import GSM8KSuite
    from bench.suite import RunOptions
    from methods.reasoning.cot_distill import sft_config

    suite = GSM8KSuite()
    options = RunOptions(method="cot-sft", preset="cpu-long", overrides={"epochs": 3})
    settings = suite.settings(options, resolve_recipe("cot-sft", "gsm8k"))
    assert [d.id for d in suite._datasets(options, settings)] == ["offline/arith-3x1-digits"]
    cfg = sft_config(settings, 0)
    assert (cfg.student_layers, cfg.epochs, settings["n_train"]) == (16, 3, 1200)
    default = suite.settings(RunOptions(method="cot-sft"), resolve_recipe("cot-sft", "gsm8k"))
    assert "student_layers" not in default and default["n_train"] == 1200
    assert sft_config(default, 0).epochs == 4
    assert "cpu-long" in GSM8KSuite.presets


def test_batched_chat_prompts_find_their_token_counts(tiny_chat_model_dir, tmp_path):
    """The ASDiv teacher row: lm-eval applies the chat template, then batches."""
    from bench.core.assets import load_causal_lm
    from bench.reasoning.evaluation import evaluate_model
    from bench.reasoning.suite import COT_INSTRUCTION, parse_dataset

    model, tok = load_causal_lm(str(tiny_chat_model_dir), dtype="float32")
    settings = {"max_gen_toks": 5, "n_test": 6, "num_fewshot": None, "eval_batch_size": 4,
                "latency_items": 1}
    rows, protocol = evaluate_model(parse_dataset("offline/asdiv"), settings, model, tok,
                                    "chat", 0, tmp_path, system_instruction=COT_INSTRUCTION)
    assert protocol["prompt"] == "chat + instruction" and len(rows) == 6
    assert all(1 <= r["generated_tokens"] <= 5 for r in rows)
    assert ["latency_s" in r for r in rows] == [True] + [False] * 5


def test_lm_eval_asks_git_quietly_outside_a_checkout(tmp_path, monkeypatch, capfd):
    """lm-eval's evaluator runs `git describe` in the working directory; outside a checkout
    git's "fatal: not a git repository" must not reach the user's terminal."""
    import lm_eval.evaluator

    from bench.reasoning.evaluation import quiet_git_hash

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    original = lm_eval.evaluator.get_git_commit_hash
    with quiet_git_hash():
        assert lm_eval.evaluator.get_git_commit_hash() is None
    assert lm_eval.evaluator.get_git_commit_hash is original
    assert "fatal" not in capfd.readouterr().err
