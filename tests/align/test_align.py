"""The align suite: preference building on stub rewards, the gold reward, win rates, seeded
sampling, response log-probs, KL to the reference, the pairwise judge, the reward/KL plot,
and a tiny end-to-end run of every method."""

import json
from types import SimpleNamespace

import pytest
import torch

from bench.align.evaluation import GoldReward, preference_pairs, win_scores
from bench.cli import main
from methods.align.dpo import collate_responses, response_logits, response_logps


def _gen(text, ids):
    return SimpleNamespace(text=text, output_ids=ids)


def test_preference_pairs_keep_best_and_worst_under_the_reward():
    def stub_reward(texts, refs):  # longer is better; the refs are passed along per sample
        assert len(texts) == len(refs)
        return [float(len(t)) for t in texts]

    samples = [[_gen("aa", [1, 2]), _gen("aaaa", [3]), _gen("a", [4])],
               [_gen("b", [5]), _gen("b", [6])],             # all tied: dropped
               [_gen("", []), _gen("ccc", [7])]]              # worst is empty: dropped
    pairs, stats = preference_pairs(["x", "y", "z"], [[9], [8], [7]], samples,
                                    [("r",), ("s",), ("t",)], stub_reward)
    assert [(p.id, p.chosen_ids, p.rejected_ids) for p in pairs] == [("x", [3], [4])]
    assert (pairs[0].chosen_reward, pairs[0].rejected_reward) == (4.0, 1.0)
    assert stats["pairs"] == 1 and stats["skipped"] == 2 and stats["prompts"] == 3


def test_gold_reward_is_the_best_cosine_over_references():
    vectors = {"cat": [1.0, 0.0], "dog": [0.0, 1.0], "kitten": [0.8, 0.6]}

    class Encoder:
        def encode(self, texts, max_length=128):
            return torch.tensor([vectors[t] for t in texts])

    reward = GoldReward(Encoder())
    scores = reward(["kitten", "kitten", ""], [("dog",), ("dog", "cat"), ("cat",)])
    assert scores == pytest.approx([0.6, 0.8, 0.0])


def test_win_scores_count_ties_as_half():
    assert win_scores([0.9, 0.1, 0.5, 0.3], [0.2, 0.4, 0.5, 0.7],
                      ["a", "b", "c", "same"], ["x", "y", "z", "same"]) == [1.0, 0.0, 0.5, 0.5]


def test_sampling_is_seeded_cached_and_leaves_greedy_alone(tiny_chat_model_dir, tmp_path):
    from bench.core.assets import load_causal_lm
    from bench.core.generation import GenerationCache, Sampling, generate, sample

    model, tok = load_causal_lm(str(tiny_chat_model_dir))
    prompts = [tok.encode("the cat sat :", add_special_tokens=False),
               tok.encode("a dog :", add_special_tokens=False)]
    state = torch.get_rng_state()
    a = sample(model, tok, prompts, n=3, max_new_tokens=6, sampling=Sampling(seed=1),
               progress=False)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    b = sample(model, tok, prompts, n=3, max_new_tokens=6, sampling=Sampling(seed=1),
               progress=False)
    c = sample(model, tok, prompts, n=3, max_new_tokens=6, sampling=Sampling(seed=2),
               progress=False)
    ids = [[g.output_ids for g in row] for row in a]
    assert ids == [[g.output_ids for g in row] for row in b]
    assert ids != [[g.output_ids for g in row] for row in c]
    assert len({tuple(x) for x in ids[0]}) > 1  # the n samples differ
    cache = GenerationCache(tmp_path, "tiny-sample")
    sample(model, tok, prompts, n=3, max_new_tokens=6, sampling=Sampling(seed=1), cache=cache,
           progress=False)
    again = GenerationCache(tmp_path, "tiny-sample")
    assert [again.get(prompts[0], None, j).output_ids for j in range(3)] == ids[0]
    assert again.get(prompts[0], None) is None  # greedy keys are not salted samples
    g1 = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    g2 = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    assert [g.output_ids for g in g1] == [g.output_ids for g in g2]


def test_response_logps_equal_a_full_forward(tiny_chat_model_dir):
    from bench.core.assets import load_causal_lm

    model, _ = load_causal_lm(str(tiny_chat_model_dir))
    rows = [([5, 6, 7], [8, 9]), ([5], [4, 3, 2])]
    batch = collate_responses(rows, pad_id=0)
    logps = response_logps(model, batch)
    for i, (prompt, response) in enumerate(rows):
        seq = torch.tensor([prompt + response])
        logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
        expected = sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(response))
        assert logps[i].item() == pytest.approx(expected.item(), abs=1e-4)
    assert response_logits(model, batch).shape[:2] == (2, 3)


def test_kl_to_reference_is_zero_for_the_reference_and_positive_otherwise(tiny_chat_model_dir):
    import copy

    from bench.align.evaluation import kl_to_reference
    from bench.core.assets import load_causal_lm

    model, _ = load_causal_lm(str(tiny_chat_model_dir))
    rows = [([5, 6, 7], [8, 9]), ([5], [4, 3, 2]), ([5, 6], [])]
    assert kl_to_reference(model, model, rows, 0) == [0.0, 0.0, 0.0]
    assert kl_to_reference(model, copy.deepcopy(model), rows, 0) == pytest.approx([0, 0, 0],
                                                                               abs=1e-5)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    kls = kl_to_reference(other, model, rows, 0)
    assert kls[0] > 0 and kls[1] > 0 and kls[2] == 0.0


def test_pairwise_judge_averages_both_orders(tiny_chat_model_dir):
    from bench.align.evaluation import PairwiseJudge
    from bench.core.assets import load_causal_lm

    model, tok = load_causal_lm(str(tiny_chat_model_dir))
    judge = PairwiseJudge(model, tok, "tiny")
    probs = judge.win_probabilities(["the cat"], ["a dog sat"], ["the mat"])
    assert 0.0 <= probs[0] <= 1.0
    first = judge.prob_first_better(["the cat"], ["a dog sat"], ["the mat"])[0]
    second = judge.prob_first_better(["the cat"], ["the mat"], ["a dog sat"])[0]
    assert probs[0] == pytest.approx((first + 1 - second) / 2)
    assert judge.win_probabilities(["q"], ["same"], ["same"]) == [0.5]


def test_reward_kl_plot_is_deterministic(tmp_path):
    from bench.core.plots import reward_kl_frontier

    def record(method, kl, reward, seed=0):
        return {"suite": "align", "method": method, "model": "m", "seed": seed,
                "dataset": {"id": "offline/qa-mix", "offline_stand_in": True},
                "metrics": {"kl_to_ref": kl, "gold_reward": reward, "win_rate": 0.5}}

    records = [record("sft", 0.0, 0.30), record("dpo", 0.2, 0.35), record("dpo", 0.22, 0.36, 1),
               record("aligndistil", 0.1, 0.34)]
    first = reward_kl_frontier(records, tmp_path / "a")
    second = reward_kl_frontier(list(reversed(records)), tmp_path / "b")
    assert len(first) == 1 and first[0].name.startswith("align_offline_qa-mix")
    assert first[0].name.endswith("_reward_kl.png")
    assert first[0].read_bytes() == second[0].read_bytes()


ALIGN_METHODS = ["sft", "dpo", "dpo-reverse", "aligndistil", "aligndistil-on",
                 "aligndistil-constant", "aligndistil-contrastive"]


@pytest.mark.slow
def test_tiny_end_to_end_run_of_every_method(tiny_chat_model_dir, tmp_path):
    common = ["--suite", "align", "--preset", "smoke", "--student", str(tiny_chat_model_dir),
              "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
              "--limit", "2"]
    sets = ["max_new_tokens=4", "train_per_task=3", "samples_per_prompt=3", "min_margin=1e-9",
            "max_context_tokens=16", "gen_batch_size=8", "mixed_precision=no", "lora_r=4",
            "dpo_mixed_precision=no", "dpo_lora_r=4", "max_steps=2", "dpo_max_steps=2",
            "batch_size=2", "dpo_batch_size=2", "chunk_size=3"]
    for method in ALIGN_METHODS:
        argv = ["run", "--method", method, *common]
        if method == "sft":
            argv += ["--judge", str(tiny_chat_model_dir)]
        for item in sets:
            key = item.split("=")[0]
            if method in ("dpo", "dpo-reverse") and key in ("chunk_size", "dpo_mixed_precision",
                                                          "dpo_lora_r", "dpo_max_steps",
                                                          "dpo_batch_size"):
                continue
            if method == "sft" and key not in ("max_new_tokens", "train_per_task",
                                               "samples_per_prompt", "min_margin",
                                               "max_context_tokens", "gen_batch_size"):
                continue
            argv += ["--set", item]
        assert main(argv) == 0, method
        if method == "dpo":  # one more point of DPO's beta sweep, under its own model name
            assert main([*argv, "--set", "beta=0.5"]) == 0
    files = sorted((tmp_path / "results" / "align").rglob("*.json"))
    swept = [f for f in files if "-beta0.5" in f.name]
    assert len(swept) == 1 and json.loads(swept[0].read_text())["model"].endswith("-beta0.5")
    records = {json.loads(f.read_text())["method"]: json.loads(f.read_text())
               for f in files if f not in swept}
    assert sorted(records) == sorted(ALIGN_METHODS)
    assert all(r["main_score"] == "gold_reward" for r in records.values())
    sft = records["sft"]
    assert sft["metrics"]["win_rate"] == 0.5 and sft["metrics"]["kl_to_ref"] == 0.0
    assert sft["metrics"]["judge_win_rate"] == 0.5  # its responses are the reference's
    assert sft["dataset"]["offline_stand_in"] and sft["dataset"]["id"] == "offline/qa-mix@limit2"
    assert len(sft["per_item"]["win_rate"]) == 6  # 2 test prompts x 3 sets
    for record in records.values():  # LoRA is merged: every policy has the reference's size
        assert record["cost"]["ms_per_item"] > 0 and "batch 6" in record["cost"]["per"]
        assert record["cost"]["parameters"] == sft["cost"]["parameters"] > 0
    ad = records["aligndistil"]
    assert ad["config"]["paired_bootstrap_vs_baseline"]["baseline"] == "dpo"
    assert ad["config"]["train"]["train_steps"] == 2
    assert ad["config"]["train"]["recipe"]["r"] == 10.0
    assert records["aligndistil-on"]["config"]["train"]["recipe"]["r"] == 15.0
    # AlignDistil reused the dpo run's DPO model: one dpo checkpoint directory per beta
    assert len(list((tmp_path / "work" / "align" / "train").glob("dpo-????????????????"))) == 2
    assert main(["leaderboard", "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "boards")]) == 0
    assert len(list((tmp_path / "boards").glob("align_*_reward_kl.png"))) == 1
    board = (tmp_path / "boards" / "align.md").read_text()
    assert "reward_kl.png" in board
    assert "against DPO at matched KL" in board and "against DPO at equal length" in board
    assert "swept rows (`beta0.5`;" in board


def test_usage_errors_are_one_line(tiny_chat_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    base = ["run", "--suite", "align", "--out", str(tmp_path / "r"), "--work-dir",
            str(tmp_path / "w"), "--student", str(tiny_chat_model_dir)]
    assert main([*base, "--method", "dpo", "--dataset", "ultrafeedback"]) == 2
    assert "DISTILLBENCH_ONLINE=1" in capsys.readouterr().err
    assert main([*base, "--method", "dpo", "--teacher", "x"]) == 2
    assert "--student" in capsys.readouterr().err
    assert main([*base, "--method", "dpo", "--set", "alpha=2"]) == 2  # an AlignDistil key
    assert "not a setting of method 'dpo'" in capsys.readouterr().err
    assert main([*base, "--method", "fkl"]) == 2
    assert "does not run on suite 'align'" in capsys.readouterr().err
