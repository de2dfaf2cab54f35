"""The gsm8k suite's validation split (``--set eval_split=validation``): items held out of
each offline training pool, never trained on, scored under ``<id>@validation``, and carved
out without moving a single training item (so the cached teacher keeps its key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.reasoning.arith import make_arith
from bench.reasoning.asdiv import asdiv_splits
from bench.reasoning.lm_eval_tasks import ARITH_SEED, ARITH_TEST_SIZE
from bench.reasoning.splits import (
    arith_pools,
    parse_dataset,
    training_items,
    validation_items,
)

ROOT = Path(__file__).resolve().parents[2]


def _settings(**overrides):
    from bench.contracts import resolve_recipe
    from bench.reasoning.suite import GSM8KSuite
    from bench.suite import RunOptions

    return GSM8KSuite().settings(RunOptions(method="cot-sft", overrides=overrides),
                                 resolve_recipe("cot-sft", "gsm8k"))


def _pairs(problems):
    return {(min(p.a, p.b), max(p.a, p.b)) for p in problems}


def test_settings_and_their_defaults():
    settings = _settings()
    assert (settings["eval_split"], settings["val_per_task"]) == ("test", 100)
    assert _settings(eval_split="validation")["eval_split"] == "validation"


def test_arith_validation_follows_the_unchanged_training_items():
    ds = parse_dataset("offline/arith-2x2-digits")
    settings = _settings(eval_split="validation")  # teacher_train 1200 >= n_train
    before = make_arith(2, 2, 1200, ARITH_SEED, split="train", style="digits")  # as drawn before
    train, validation = arith_pools(ds, settings, settings["val_per_task"])
    assert train == before  # the first items, every field, unchanged by carving out
    assert [it.id for it in training_items(ds, settings)] == [p.id for p in before]
    assert len(validation) == 100 and validation == validation_items(ds, settings)
    # disjoint from the students' items, the teacher's and the test split (as unordered pairs)
    assert not _pairs(validation) & _pairs(before)
    test = make_arith(2, 2, ARITH_TEST_SIZE, ARITH_SEED, split="test", style="digits")
    assert not _pairs(validation) & _pairs(test)
    # stable: the same items however many students train below the teacher's items
    assert validation_items(ds, _settings(eval_split="validation", n_train=50)) == validation
    assert validation_items(ds, settings) == validation


def test_arith_validation_stays_clear_of_a_larger_student_pool():
    ds = parse_dataset("offline/arith-2x2")
    settings = _settings(eval_split="validation", n_train=40, teacher_train=10,
                         val_per_task=7)
    train = training_items(ds, settings)
    validation = validation_items(ds, settings)
    assert len(train) == 40 and len(validation) == 7
    assert not {it.id for it in train} & {p.id for p in validation}
    assert [p.id for p in validation] == [p.id for p in make_arith(2, 2, 47, ARITH_SEED)[40:]]


def test_teacher_key_of_the_committed_teacher_is_unchanged():
    """The default arith teacher's key, in both modes, is the one the committed results'
    teacher was trained under: carving out validation retrains nothing."""
    from bench.reasoning.teacher import teacher_key

    record = next(ROOT.glob("leaderboards/results/gsm8k/offline_arith-3x1-digits-*/"
                            "teacher__smollm2-135m-instruct__seed0.json"))
    committed = json.loads(record.read_text())["config"]["teacher"]["key"]
    ds = parse_dataset("offline/arith-3x1-digits")
    for split in ("test", "validation"):
        settings = _settings(eval_split=split)
        key, _, items = teacher_key(ds, settings, "smollm2-135m-instruct", 30,
                                    training_items(ds, settings))
        assert key == committed and len(items) == 1200
        assert not {it.id for it in items} & {p.id for p in validation_items(ds, settings)}


def test_asdiv_validation_is_the_end_of_the_train_pool():
    ds = parse_dataset("offline/asdiv")
    pool = asdiv_splits()[0]
    settings = _settings(eval_split="validation")
    validation = validation_items(ds, settings)
    assert validation == pool[-100:]
    # the default students' items are the pool's first n_train; with every item, still
    # none held out
    assert [it.id for it in training_items(ds, settings)] == [
        p.id for p in pool[:settings["n_train"]]]
    everything = training_items(ds, _settings(eval_split="test", n_train=None))
    assert [it.id for it in everything] == [p.id for p in pool[:-100]]
    assert not {it.id for it in everything} & {p.id for p in validation}
    # a pool too small for the request gives at most a third of itself
    capped = validation_items(ds, _settings(eval_split="validation", val_per_task=10**6))
    assert capped == pool[len(pool) - len(pool) // 3:]


def test_validation_task_scores_the_held_out_items(tmp_path):
    from bench.reasoning.lm_eval_tasks import (
        load_tasks,
        score_outputs,
        task_splits,
        write_validation_task,
    )

    ds = parse_dataset("offline/arith-2x2")
    fewshot = task_splits([(2, 2)], False)["arith_2x2"][0]
    validation = arith_pools(ds, _settings(n_train=10, teacher_train=10), 5)[1]
    assert {p.id for p in validation} <= {p.id for p in fewshot}  # the overlap to remove
    include = write_validation_task(tmp_path, "arith_2x2", fewshot, validation)
    data = include.parent / "data" / "arith_2x2_validation"
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p.id for p in validation]
    shots = {json.loads(line)["id"] for line in (data / "train.jsonl").read_text().splitlines()}
    assert not shots & {p.id for p in validation} and len(shots) == len(fewshot) - 5
    # other items live in another folder: a concurrent run never overwrites these files
    assert write_validation_task(tmp_path, "arith_2x2", fewshot, validation[:4]) != include
    task = load_tasks(include, ["arith_2x2_validation"])["arith_2x2_validation"]
    gold = [f"#### {p.answer}" for p in validation]
    assert [s["strict-match"]["exact_match"] for s in score_outputs(task, gold)] == [1.0] * 5


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bench: error: "), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--set", "eval_split=dev"], "--set eval_split=dev: expected one of test, validation"),
    (["--set", "val_per_task=0"], "--set val_per_task=0: expected an integer >= 1"),
    (["--dataset", "gsm8k", "--set", "eval_split=validation"],
     "gsm8k has no validation items"),
])
def test_bad_validation_settings_are_one_line_usage_errors(tmp_path, capsys, monkeypatch,
                                                           argv, message):
    # offline, so a broken check fails on the online error's message instead of downloading
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    out = tmp_path / "results"
    code = main(["run", "--method", "cot-sft", "--suite", "gsm8k", *argv, "--out", str(out),
                 "--work-dir", str(tmp_path / "work")])
    assert message in _one_line_error(capsys, code)
    assert not list(out.rglob("*.json"))  # no record


def test_tiny_end_to_end_validation_record(tiny_chat_model_dir, tmp_path):
    """A validation run scores held-out items under ``<id>@validation`` with the very
    teacher (same cache key) a test run fine-tunes."""
    results = tmp_path / "results"
    common = ["--suite", "gsm8k", "--teacher", str(tiny_chat_model_dir), "--preset", "smoke",
              "--dataset", "offline/arith-2x2", "--work-dir", str(tmp_path / "work"),
              "--set", "n_train=6", "--set", "n_test=3", "--set", "teacher_train=6",
              "--set", "max_gen_toks=6", "--set", "rationales=gold", "--out", str(results)]
    assert main(["run", "--method", "teacher", *common]) == 0
    assert main(["run", "--method", "cot-sft", *common, "--set", "eval_split=validation",
                 "--set", "val_per_task=4"]) == 0
    records = {r["method"]: r for r in (json.loads(f.read_text())
                                        for f in (results / "gsm8k").rglob("*.json"))}
    test, val = records["teacher"], records["cot-sft"]
    assert (test["dataset"]["id"], test["dataset"]["split"]) == ("offline/arith-2x2", "test")
    assert val["dataset"]["id"] == "offline/arith-2x2@validation"
    assert val["dataset"]["split"] == "validation" and val["dataset"]["num_items"] == 3
    assert val["config"]["lm_eval_task"] == "arith_2x2_validation"
    stream = make_arith(2, 2, 10, ARITH_SEED, split="train")
    assert list(val["per_item"]["exact_match"]) == [p.id for p in stream[6:9]]
    assert val["config"]["teacher"]["key"] == test["config"]["teacher"]["key"]
    assert len(list((tmp_path / "work" / "gsm8k" / "teacher").iterdir())) == 1
    assert "the first 3 validation items" in val["config"]["eval_protocol"]["latency"]
