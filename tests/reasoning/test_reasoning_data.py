"""Offline reasoning data for the gsm8k suite: arith generator, ASDiv conversion, lm-eval tasks."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.reasoning.arith import (
    arith_splits,
    make_arith,
    make_problem,
    pair_split,
    rationale_errors,
    to_icot_line,
    verify_rationale,
)
from bench.reasoning.asdiv import asdiv_items, asdiv_splits, parse_numeric_answer
from bench.reasoning.problem import answers_match, extract_answer

# --- arith -------------------------------------------------------------------------------


@pytest.mark.parametrize("da,db", [(3, 3), (4, 4), (5, 3), (2, 1)])
def test_arith_deterministic_and_prefix_stable(da, db):
    a = make_arith(da, db, 50, seed=3, split="train")
    assert a == make_arith(da, db, 50, seed=3, split="train")
    assert make_arith(da, db, 20, seed=3, split="train") == a[:20]
    assert a != make_arith(da, db, 50, seed=4, split="train")
    assert all(len(str(p.a)) == da and len(str(p.b)) == db for p in a)
    assert len({(p.a, p.b) for p in a}) == len(a)


def test_arith_splits_disjoint_across_seeds():
    train = {(p.a, p.b) for s in (0, 1) for p in make_arith(3, 3, 1500, seed=s, split="train")}
    test = {(p.a, p.b) for s in (0, 1) for p in make_arith(3, 3, 600, seed=s, split="test")}
    assert not train & test
    # the swapped pair of a test item is a test pair too (the split is by unordered pair)
    assert not {(b, a) for a, b in test} & train
    assert all(pair_split(a, b) == "test" for a, b in test)
    tr, te = arith_splits(4, 4, 100, 40)
    assert {p.split for p in tr} == {"train"} and {p.split for p in te} == {"test"}


def test_every_rationale_verifies_arithmetically():
    train, test = arith_splits(4, 4, 300, 200)
    problems = train + test + make_arith(3, 3, 200) + make_arith(5, 5, 100) + \
        make_arith(6, 2, 50) + make_arith(1, 1, 30)
    bad = {p.id: rationale_errors(p) for p in problems if rationale_errors(p)}
    assert not bad
    for p in problems:
        assert p.target.endswith(f"\n#### {p.a * p.b}")
        assert p.question == f"What is {p.a} * {p.b}?"


def test_rationale_shape():
    p = make_problem(5431, 3918)
    assert p.rationale.splitlines() == [
        "Multiply 5431 by each digit of 3918, starting from the ones digit.",
        "5431 * 8 = 43448",
        "5431 * 1 * 10 = 54310",
        "5431 * 9 * 100 = 4887900",
        "5431 * 3 * 1000 = 16293000",
        "Add the partial products.",
        "43448 + 54310 = 97758",
        "97758 + 4887900 = 4985658",
        "4985658 + 16293000 = 21278658",
    ]
    assert p.answer == "21278658"
    assert p.to_gsm8k()["answer"].endswith("#### 21278658")


@pytest.mark.parametrize("corrupt", [
    lambda r: r.replace("5431 * 9 * 100 = 4887900", "5431 * 9 * 100 = 4887800"),  # wrong product
    lambda r: r.replace("97758 + 4887900 = 4985658", "97758 + 4887900 = 4985668"),  # wrong sum
    lambda r: r.replace("5431 * 1 * 10 = 54310", "5431 * 2 * 10 = 108620"),  # wrong digit
    lambda r: r.replace("5431 * 1 * 10 = 54310\n", ""),  # a step missing
    lambda r: r.replace("5431 * 9 * 100", "5431 * 9 * 1000").replace("4887900", "48879000"),
    lambda r: r + "\nSo the answer is big.",  # an unexpected line
])
def test_corrupted_rationale_fails(corrupt):
    p = make_problem(5431, 3918)
    bad = dataclasses.replace(p, rationale=corrupt(p.rationale))
    assert bad.rationale != p.rationale
    assert not verify_rationale(bad) and rationale_errors(bad)


def test_digits_style_shape_and_same_pairs():
    p = make_problem(872, 48, style="digits")
    assert p.rationale.splitlines() == [
        "Multiply 872 by each digit of 48, starting from the ones digit.",
        "872 * 8 = 6400 + 560 + 16 = 6960 + 16 = 6976",
        "872 * 4 * 10 = 32000 + 2800 + 80 = 34800 + 80 = 34880",
        "Add the partial products.",
        "6976 + 34880 = 41856",
    ]
    assert p.answer == "41856" and p.id == "arith-3x2-digits-872x48"
    assert make_problem(7, 305, style="digits").rationale == make_problem(7, 305).rationale
    assert "\n305 * 0 = 0 + 0 + 0 = 0 + 0 = 0\n" in make_problem(305, 10, style="digits").rationale
    partial, digits = arith_splits(3, 3, 40, 20), arith_splits(3, 3, 40, 20, style="digits")
    for a, b in zip(partial[0] + partial[1], digits[0] + digits[1], strict=True):
        assert (a.a, a.b, a.answer, a.split) == (b.a, b.b, b.answer, b.split)
    with pytest.raises(ValueError, match="style"):
        make_problem(3, 4, style="reversed")


def test_every_digits_rationale_verifies():
    problems = [p for da, db, n in ((3, 3, 200), (4, 4, 100), (2, 5, 50), (1, 3, 20), (5, 1, 20))
                for p in make_arith(da, db, n, style="digits")]
    assert not {p.id: rationale_errors(p) for p in problems if rationale_errors(p)}


@pytest.mark.parametrize("corrupt", [
    lambda r: r.replace("6400 + 560 + 16 = 6960", "6400 + 560 + 16 = 6970"),  # wrong step
    lambda r: r.replace("6400 + 560 + 16 =", "6400 + 570 + 16 =").replace(
        "6960 + 16", "6970 + 16"),  # a wrong one-digit product
    lambda r: r.replace("= 6960 + 16 = 6976", "= 6976"),  # a pairwise step skipped
    lambda r: r.replace("34800 + 80 = 34880", "34800 + 80 = 34890"),  # wrong final value
    lambda r: r.replace("32000 + 2800 + 80 = 34800 + 80", "32000 + 2880 = 34880 + 0"),
])
def test_corrupted_digits_rationale_fails(corrupt):
    p = make_problem(872, 48, style="digits")
    bad = dataclasses.replace(p, rationale=corrupt(p.rationale))
    assert bad.rationale != p.rationale
    assert rationale_errors(bad)


def test_wrong_answer_fails():
    p = make_problem(5431, 3918)
    assert not verify_rationale(dataclasses.replace(p, answer="21278659"))


def test_icot_line_matches_deng_et_al_data():
    # Lines of data/4_by_4_mult/test_bigbench.txt, github.com/da03/implicit_chain_of_thought
    assert to_icot_line(make_problem(5431, 3918)) == (
        "1 3 4 5 * 8 1 9 3||8 4 4 3 4 + 0 1 3 4 5 0 ( 8 5 7 7 9 0 ) + 0 0 9 7 8 8 4 "
        "( 8 5 6 5 8 9 4 ) + 0 0 0 3 9 2 6 1 #### 8 5 6 8 7 2 1 2")
    assert to_icot_line(make_problem(1540, 2344)) == (
        "0 4 5 1 * 4 4 3 2||0 6 1 6 0 + 0 0 6 1 6 0 ( 0 6 7 7 6 0 ) + 0 0 0 2 6 4 0 "
        "( 0 6 7 9 2 5 0 ) + 0 0 0 0 8 0 3 0 #### 0 6 7 9 0 6 3 0")


# --- answers -------------------------------------------------------------------------------


def test_answer_extraction():
    assert extract_answer("blah\n#### 1,234") == "1234"
    assert extract_answer("It costs $12.50.") == "12.5"
    assert extract_answer("no number") is None
    assert answers_match("... #### 72", "Natalia sold 72 clips.\n#### 72")
    assert not answers_match("#### 71", "#### 72")


# --- ASDiv ---------------------------------------------------------------------------------


def test_parse_numeric_answer():
    assert parse_numeric_answer("9 apples") == "9"
    assert parse_numeric_answer("12.50 dollars") == "12.5"
    assert parse_numeric_answer("1,200 people") == "1200"
    assert parse_numeric_answer("40") == "40"
    for not_one_number in ("Mrs. Hilt", "3:30 p.m.", "7:4", "4/7", "17 years old; 12 years old",
                           "8 ft; 128 sq. ft", "They are equal"):
        assert parse_numeric_answer(not_one_number) is None


def test_asdiv_conversion_packaged():
    items = asdiv_items()
    assert len(items) == 2084  # 2,305 packaged, 221 without a single-number answer
    assert len({p.id for p in items}) == len(items)
    for p in items:
        record = p.to_gsm8k()
        assert record["answer"] == f"#### {p.answer}"
        float(p.answer)
        assert "," not in p.answer and p.question.strip() == p.question
    train, test = asdiv_splits()
    assert len(train) + len(test) == len(items)
    assert 0.25 < len(test) / len(items) < 0.35
    assert not {p.question.lower() for p in train} & {p.question.lower() for p in test}
    first = next(p for p in items if p.id == "asdiv-1")
    assert first.question == ("Seven red apples and two green apples are in the basket. "
                              "How many apples are in the basket?")
    assert first.answer == "9"


def test_asdiv_conversion_from_file(tmp_path):
    path = tmp_path / "asdiv.jsonl"
    rows = [{"passage": "A has 3.", "question": "How many? ", "answer": "3 pens"},
            {"passage": "B.", "question": "Who?", "answer": "Bryan"},
            {"passage": "C has 1,500.", "question": "Total?", "answer": "1,500.0 dollars"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = asdiv_items(path)
    assert [(p.id, p.question, p.answer) for p in items] == [
        ("asdiv-1", "A has 3. How many?", "3"), ("asdiv-3", "C has 1,500. Total?", "1500")]


# --- lm-eval local tasks --------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory):
    from bench.reasoning.lm_eval_tasks import load_tasks, write_lm_eval_tasks

    include = write_lm_eval_tasks(tmp_path_factory.mktemp("lm_eval"), arith_sizes=[(3, 3)])
    return include, load_tasks(include, ["asdiv_offline", "arith_3x3"])


def test_task_files_are_local_and_stable(lm_eval_tasks, tmp_path_factory):
    import yaml

    include, _ = lm_eval_tasks
    config = yaml.safe_load((include / "asdiv_offline.yaml").read_text())
    assert config["dataset_path"] == "json"
    # lm-eval ignores simple_evaluate(num_fewshot=k) when the YAML says num_fewshot: 0
    assert "num_fewshot" not in config
    for path in config["dataset_kwargs"]["data_files"].values():
        assert path.startswith("/") and json.loads(open(path).readline())["answer"].startswith("####")
    mtime = (include / "asdiv_offline.yaml").stat().st_mtime_ns
    from bench.reasoning.lm_eval_tasks import write_lm_eval_tasks

    write_lm_eval_tasks(include.parent, arith_sizes=[(3, 3)])  # unchanged: not rewritten
    assert (include / "asdiv_offline.yaml").stat().st_mtime_ns == mtime
    assert not list(include.parent.rglob("*.tmp"))


def test_lm_eval_task_scores_correct_and_wrong_outputs(lm_eval_tasks):
    from bench.reasoning.lm_eval_tasks import score_outputs

    _, tasks = lm_eval_tasks
    asdiv = tasks["asdiv_offline"]
    docs = list(asdiv.test_docs())[:3]
    gold = [d["answer"].removeprefix("#### ") for d in docs]
    outputs = [
        f"Let me think. The total is {gold[0]}.\n#### {gold[0]}",  # correct, strict format
        f"So the answer is {int(float(gold[1])) + 1}.\n#### {int(float(gold[1])) + 1}",  # wrong
        f"The answer is {gold[2]}.",  # correct number, but no '####': flexible only
    ]
    scores = score_outputs(asdiv, outputs)
    assert [s["strict-match"]["exact_match"] for s in scores] == [1.0, 0.0, 0.0]
    assert [s["flexible-extract"]["exact_match"] for s in scores] == [1.0, 0.0, 1.0]
    assert asdiv.doc_to_text(docs[0]) == f"Question: {docs[0]['question']}\nAnswer:"

    arith = tasks["arith_3x3"]
    doc = next(iter(arith.test_docs()))
    right = doc["answer"]  # the worked rationale itself ends in '#### <product>'
    wrong = right.rsplit("#### ", 1)[0] + "#### 12"
    scores = score_outputs(arith, [right, wrong])
    assert [s["strict-match"]["exact_match"] for s in scores] == [1.0, 0.0]
    assert [s["flexible-extract"]["exact_match"] for s in scores] == [1.0, 0.0]


def test_building_the_local_tasks_prints_no_progress_bars(tmp_path, capfd):
    # datasets draws a "Generating test split" bar per split it builds from our JSON files:
    # noise in a run's log, which shows its phases with bench's own bars
    import datasets

    from bench.reasoning.lm_eval_tasks import load_tasks, write_lm_eval_tasks

    include = write_lm_eval_tasks(tmp_path / "lm_eval", arith_sizes=[(3, 3)])
    capfd.readouterr()
    load_tasks(include, ["arith_3x3"])
    captured = capfd.readouterr()
    assert "Generating" not in captured.err + captured.out
    assert not datasets.are_progress_bars_disabled()  # restored for the caller
