"""The instruct suite and token-level KD recipes: splits, ROUGE-L, batching, losses on the
top-k cache, user losses, bootstrap intervals, and a tiny end-to-end run."""

import json

import pytest
import torch

from bench.cli import main
from bench.core.stats import bootstrap_ci
from bench.errors import UsageError
from bench.instruct.suite import Item, rouge_l, split
from methods.instruct.token_kd import TrainExample, collate, response_logits


def test_split_is_fixed_disjoint_and_keeps_groups_together():
    items = [Item(f"i{n}", f"p{n}", ("r",), f"story{n % 7}") for n in range(70)]
    train, test = split(items)
    assert split(list(reversed(items))) == (train, test)  # order-independent
    assert len(train) + len(test) == 70
    assert not {it.group for it in train} & {it.group for it in test}
    assert len({it.group for it in test}) == 2  # round(7 * 0.3)


def test_rouge_l_takes_the_best_reference():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert rouge_l("the cat sat", ("a dog ran", "the cat sat"), scorer) == 1.0
    # LCS "cat mat" (stemmed): P = 2/3, R = 2/4, F = 4/7
    assert rouge_l("cat on mat", ("the cat sat mat",), scorer) == pytest.approx(4 / 7)
    assert rouge_l("", ("the cat",), scorer) == 0.0


def test_bootstrap_ci_brackets_the_mean_difference():
    a = {str(i): float(i % 3) for i in range(60)}
    b = {str(i): float(i % 3) - 0.5 for i in range(60)}
    assert bootstrap_ci(a, b) == (0.5, 0.5, 0.5)
    b = {str(i): (i % 5) / 5 for i in range(60)}
    delta, low, high = bootstrap_ci(a, b, seed=1)
    assert low < delta < high
    assert bootstrap_ci({"x": 1.0}, {"x": 0.0})[1] != bootstrap_ci({"x": 1.0}, {"x": 0.0})[1]


def test_collate_marks_the_positions_that_predict_response_tokens():
    batch = collate([TrainExample([5, 6, 7], [8, 9]), TrainExample([5], [4, 3, 2])], pad_id=0)
    ids, predict = batch["input_ids"], batch["predict"]
    nxt = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
    assert nxt[predict].tolist() == batch["targets"].tolist() == [8, 9, 4, 3, 2]
    assert batch["attention_mask"].sum().item() == 9


def test_response_logits_equal_the_full_forward(tiny_chat_model_dir):
    from bench.core.assets import load_causal_lm

    model, _ = load_causal_lm(str(tiny_chat_model_dir))
    batch = collate([TrainExample([5, 6, 7], [8, 9]), TrainExample([5], [4, 3, 2])], pad_id=0)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(response_logits(model, batch), full[batch["predict"]],
                               rtol=1e-5, atol=1e-5)


def test_kd_on_a_full_topk_support_equals_the_online_loss(tiny_chat_model_dir):
    """With k = V the cached top-k path is exact (the renormalisation is the identity)."""
    from bench.core.assets import load_causal_lm
    from bench.core.topk import topk_lse_of
    from methods.instruct.token_kd import ForwardKL, KDConfig

    teacher, _ = load_causal_lm(str(tiny_chat_model_dir))
    torch.manual_seed(1)
    student, _ = load_causal_lm(str(tiny_chat_model_dir))
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    examples = [TrainExample([5, 6, 7], [8, 9]), TrainExample([5], [4, 3, 2])]
    with torch.no_grad():
        t_logits = response_logits(teacher, collate(examples, 0))
    values, indices, lse = topk_lse_of(t_logits, t_logits.shape[-1])
    start = 0
    for e in examples:
        n = len(e.response_ids)
        e.topk_values, e.topk_indices = values[start:start + n], indices[start:start + n]
        e.topk_lse = lse[start:start + n]
        start += n
    cfg, recipe = KDConfig(), ForwardKL()
    cached, _ = recipe.step_loss(student, collate(examples, 0), cfg, None)
    online, _ = recipe.step_loss(student, collate(examples, 0), cfg, teacher)
    assert cached.item() == pytest.approx(online.item(), rel=1e-4, abs=1e-6)


def _write(tmp_path, body):
    path = tmp_path / "user_loss.py"
    path.write_text("import torch\n" + body)
    return path


def test_user_loss_is_checked_before_training(tmp_path):
    from bench.core.user_loss import load_user_loss

    good = _write(tmp_path, (
        "def my_kl(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
        "    s = torch.log_softmax(student_logits / temperature, -1)\n"
        "    t = torch.log_softmax(teacher_logits / temperature, -1)\n"
        "    per = (t.exp() * (t - s)).sum(-1)\n"
        "    return per[mask].mean() if mask is not None else per.mean()\n"
        "def detached(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
        "    return torch.tensor(0.0)\n"
        "def not_zero(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
        "    return student_logits.mean() * 0 + 1.0\n"))
    fn, name, sha = load_user_loss(f"{good}:my_kl")
    assert name == "my_kl" and len(sha) == 64 and callable(fn)
    for attr, words in (("detached", "no gradient"), ("not_zero", "should be 0"),
                        ("missing", "no function")):
        with pytest.raises(UsageError, match=words):
            load_user_loss(f"{good}:{attr}")
    with pytest.raises(UsageError, match="FILE.py:FUNCTION"):
        load_user_loss(str(good))


def test_run_with_a_user_loss_on_a_suite_without_training_is_a_usage_error(tmp_path, capsys):
    path = _write(tmp_path, "def f(s, t, *, mask=None, temperature=1.0):\n    return 0\n")
    assert main(["run", "--loss", f"{path}:f", "--suite", "beir"]) == 2
    assert "does not train with token-level losses" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_three_records_and_resumes(tiny_chat_model_dir, tmp_path):
    common = ["--suite", "instruct", "--preset", "smoke", "--teacher", str(tiny_chat_model_dir),
              "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
              "--limit", "3", "--set", "max_new_tokens=4", "--set", "train_per_task=4",
              "--set", "student_layers=1", "--set", "mixed_precision=no",
              "--set", "gen_batch_size=4", "--set", "max_context_tokens=16"]
    assert main(["run", "--method", "sft", *common, "--set", "max_steps=2"]) == 0
    assert main(["run", "--method", "fkl", *common, "--set", "max_steps=3"]) == 0
    files = sorted((tmp_path / "results" / "instruct").rglob("*.json"))
    assert len(files) == 6
    record = json.loads(next(f for f in files if f.name.startswith("fkl")).read_text())
    assert record["dataset"]["offline_stand_in"] and record["preset"] == "smoke"
    assert len(record["per_item"]["rougeL"]) == 3
    assert record["config"]["paired_bootstrap_vs_baseline"]["baseline"] == "sft"
    assert record["config"]["train_steps"] == 3
    # size and speed beside the score: the 1-layer student, probed on the 3 test prompts
    from transformers import AutoModelForCausalLM

    from bench.core.cost import parameter_count

    cost = record["cost"]
    teacher = parameter_count(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir))
    assert 0 < cost["parameters"] < teacher and cost["ms_per_item"] > 0
    assert cost["per"].startswith("response of up to 4 new tokens, greedy, batch 3, bf16")
    # rerunning resumes from the final checkpoint: no new training step is logged
    metrics = next((tmp_path / "work").rglob("fkl-*/metrics.jsonl"))
    before = metrics.read_text()
    assert main(["run", "--method", "fkl", *common, "--set", "max_steps=3",
                 "--overwrite"]) == 0
    assert metrics.read_text() == before


def test_a_local_jsonl_prompt_set_is_read_and_split(tmp_path):
    from bench.instruct.suite import ExternalTask

    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"x{i}", "prompt": f"say {i}", "references": [str(i)]} for i in range(10)]
    rows[0]["split"] = "test"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    train, test = ExternalTask(str(path), str(path), "local").pools(None, 128)
    assert len(train) + len(test) == 10 and "x0" in {it.id for it in test}
    path.write_text('{"id": "a", "prompt": "p"}\n')
    with pytest.raises(UsageError, match=r"prompts.jsonl:1: need a JSON object"):
        ExternalTask(str(path), str(path), "local").pools(None, 128)


@pytest.mark.slow
def test_compare_runs_missing_seeds_then_reports_mean_and_std(tiny_chat_model_dir, tmp_path,
                                                              capsys, monkeypatch):
    # compare's runs train in the cache folder: keep them out of the user's
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path / "cache"))
    sets = ["max_new_tokens=3", "train_per_task=2", "test_per_task=2", "student_layers=1",
            "mixed_precision=no", "gen_batch_size=4", "max_context_tokens=8", "max_steps=1"]
    loss = _write(tmp_path, (
        "def sym_kl(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
        "    s = torch.log_softmax(student_logits / temperature, -1)\n"
        "    t = torch.log_softmax(teacher_logits / temperature, -1)\n"
        "    per = ((t.exp() - s.exp()) * (t - s)).sum(-1)\n"
        "    return per[mask].mean() if mask is not None else per.mean()\n"))
    argv = ["compare", "--suite", "instruct", "--methods", f"fkl,{loss}:sym_kl",
            "--seeds", "2", "--preset", "smoke", "--teacher", str(tiny_chat_model_dir),
            "--results", str(tmp_path / "results"), "--dataset", "offline/nq-open"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "results").rglob("*.json"))
    assert len(files) == 6  # sft, fkl and the user's loss, seeds 0 and 1
    assert sum(f.startswith("custom-sym_kl__") for f in files) == 2
    table = out.replace("  ", " ")
    assert "| fkl |" in table and "| custom-sym\\_kl |" in table and "Mean ± std" in out
    assert main(argv) == 0  # everything present now: nothing is rerun
    assert "running" not in capsys.readouterr().out


def test_cached_responses_without_logits_get_them_by_a_forward_pass(tiny_chat_model_dir,
                                                                    tmp_path):
    """Generation logits and a teacher-forced pass over the same tokens agree, so tokens
    cached without top-k logits (older versions) are completed instead of regenerated."""
    from bench.core.assets import load_causal_lm
    from bench.core.generation import GenerationCache, generate

    model, tok = load_causal_lm(str(tiny_chat_model_dir))
    prompts = [tok.encode("the cat sat :", add_special_tokens=False),
               tok.encode("a dog :", add_special_tokens=False)]
    direct = generate(model, tok, prompts, max_new_tokens=4, topk=5, progress=False)
    cache = GenerationCache(tmp_path, "tiny")
    generate(model, tok, prompts, max_new_tokens=4, cache=cache, progress=False)  # text only
    completed = generate(model, tok, prompts, max_new_tokens=4, topk=5, cache=cache,
                         progress=False)
    for a, b in zip(direct, completed, strict=True):
        assert a.output_ids == b.output_ids
        torch.testing.assert_close(b.topk_values, a.topk_values, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.topk_lse, a.topk_lse, rtol=1e-4, atol=1e-4)
    again = GenerationCache(tmp_path, "tiny").get(prompts[0], 5)
    assert again is not None and again.topk_lse is not None


def test_validation_split_and_teacher_fine_tune(tiny_chat_model_dir, tmp_path):
    """``eval_split=validation`` scores held-out training-pool items under their own dataset
    id; ``teacher_sft_steps`` fine-tunes the teacher once (cached) and names it."""
    from bench.instruct.suite import held_out

    assert held_out(list(range(10)), 2) == (list(range(8)), [8, 9])
    assert held_out(list(range(6)), 60) == ([0, 1, 2, 3], [4, 5])  # at most a third
    common = ["--suite", "instruct", "--preset", "smoke", "--teacher", str(tiny_chat_model_dir),
              "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
              "--limit", "2", "--set", "max_new_tokens=3", "--set", "train_per_task=3",
              "--set", "gen_batch_size=4", "--set", "max_context_tokens=16",
              "--set", "eval_split=validation", "--set", "val_per_task=2",
              "--set", "teacher_sft_steps=2"]
    assert main(["run", "--method", "teacher", *common]) == 0
    records = [json.loads(f.read_text()) for f in (tmp_path / "results").rglob("*.json")]
    assert len(records) == 3
    for record in records:
        assert record["dataset"]["id"].endswith("@validation@limit2")
        assert record["dataset"]["split"] == "validation"
        assert record["model"].endswith("-sft2")
        assert record["config"]["teacher_sft"]["steps"] == 2
    tuned = list((tmp_path / "work").rglob("teacher-sft/*/metrics.jsonl"))
    assert len(tuned) == 1 and len(tuned[0].read_text().splitlines()) == 2
    # a second method reuses the fine-tuned teacher: no new teacher training
    assert main(["run", "--method", "student-init", *common, "--set", "student_layers=1"]) == 0
    assert len(tuned[0].read_text().splitlines()) == 2
