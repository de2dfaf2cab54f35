"""`bench evaluate`: equality with pytrec_eval (trec_eval), -c semantics, formats, errors."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import pytrec_eval  # the reference implementation (test extra): never skipped

from bench import cli
from bench.errors import UsageError
from bench.retrieval.evaluate import (
    add_evaluate_parser,
    cmd_evaluate,
    compare_runs,
    evaluate_run,
    import_ranx,
    parse_metrics,
    trec_eval_name,
)
from bench.retrieval.trec import ranked, read_qrels, read_run, write_run

FIX = Path(__file__).parent.parent / "fixtures" / "trec"
CUTS = (1, 3, 10, 100)
FAMILIES = ("ndcg", "mrr", "recall", "map", "precision")


def run_cli(argv: list[str]) -> int:
    """``bench evaluate ...`` through bench.cli.main once it is wired, else the same steps."""
    if "evaluate" in getattr(cli, "COMMANDS", {}):
        return cli.main(argv)
    from bench.cli_parser import _Parser

    parser = _Parser(prog="bench")
    add_evaluate_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    try:
        return cmd_evaluate(parser.parse_args(argv))
    except UsageError as exc:
        print(f"bench: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return exc.exit_code


def pytrec_per_query(qrels, run, metrics):
    """Reference values: pytrec_eval per judged query (0 where the run lacks the query)."""
    cuts = sorted({int(m.split("@")[1]) for m in metrics})
    cut = ",".join(map(str, cuts))
    ev = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cut}", f"recall.{cut}",
                                                f"map_cut.{cut}", f"P.{cut}"})
    full = ev.evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    out = {}
    for m in metrics:
        family, k = m.split("@")
        if family == "mrr":  # trec_eval has no recip_rank cut-off: evaluate the top-k run
            top = {q: dict(sorted(d.items(), key=lambda x: (x[1], x[0]), reverse=True)[: int(k)])
                   for q, d in run.items()}
            got = rr.evaluate(top)
        else:
            got = full
        name = trec_eval_name(m)
        out[m] = {q: got[q][name] if q in got else 0.0 for q in qrels}
    return out


def random_case(rng: random.Random):
    # d10 < d9 as strings (tie order); long ids exercise ranx's padded docid arrays
    prefix = rng.choice(("d", "d", "doc-with-a-rather-long-identifier-"))
    pool = [f"{prefix}{i}" for i in range(rng.randint(5, 40))]
    qrels, run = {}, {}
    for q in range(rng.randint(1, 25)):
        qid = f"q{q}"
        judged = rng.sample(pool, rng.randint(1, len(pool)))
        qrels[qid] = {d: rng.choice((-1, 0, 0, 1, 1, 2, 3)) for d in judged}
        if rng.random() < 0.8:  # some judged queries are missing from the run
            docs = rng.sample(pool, rng.randint(1, len(pool)))  # includes unjudged docs
            run[qid] = {d: round(rng.uniform(0, 3), rng.choice((0, 1, 3))) for d in docs}
    run.setdefault("q0", {pool[0]: 1.0})
    run["unjudged-query"] = {pool[0]: 2.0}
    return qrels, run


@pytest.mark.parametrize("seed", range(6))
def test_equals_pytrec_eval_on_random_data(seed, tmp_path):
    rng = random.Random(seed)
    qrels, run = random_case(rng)
    metrics = [f"{f}@{k}" for f in FAMILIES for k in CUTS]
    # through the files too: write_run + read_run must not change a value
    (tmp_path / "q.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, ds in qrels.items()
                                            for d, r in ds.items()))
    write_run(run, tmp_path / "r.trec", tag="rnd")
    assert read_run(tmp_path / "r.trec") == run
    assert read_qrels(tmp_path / "q.txt") == qrels
    means, per_query, missing = evaluate_run(read_qrels(tmp_path / "q.txt"),
                                             read_run(tmp_path / "r.trec"), metrics)
    expected = pytrec_per_query(qrels, run, metrics)
    assert missing == len(set(qrels) - set(run))
    for m in metrics:
        assert set(per_query[m]) == set(qrels), m
        for q in qrels:
            assert per_query[m][q] == pytest.approx(expected[m][q], abs=1e-6), (m, q)
        # trec_eval -c: the mean over every judged query, missing ones as 0
        assert means[m] == pytest.approx(sum(expected[m].values()) / len(qrels), abs=1e-6)


def test_ties_are_broken_like_trec_eval():
    """All scores tie: trec_eval ranks by docid descending ('d9' > 'd10' as strings)."""
    qrels = {"q": {"d9": 1, "d10": 2}}
    run = {"q": {"d10": 1.0, "d9": 1.0, "d1": 1.0}}
    assert [d for d, _ in ranked(run["q"])] == ["d9", "d10", "d1"]
    means, _, _ = evaluate_run(qrels, run, ["precision@1", "mrr@1", "ndcg@1"])
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"P.1", "ndcg_cut.1"}).evaluate(run)["q"]
    assert means["precision@1"] == ref["P_1"] == 1.0
    assert means["ndcg@1"] == pytest.approx(ref["ndcg_cut_1"]) == pytest.approx(0.5)


def test_missing_and_nonrelevant_only_queries_match_trec_eval_c():
    qrels, run = read_qrels(FIX / "qrels.txt"), read_run(FIX / "run_a.trec")
    means, per_query, missing = evaluate_run(qrels, run, ["ndcg@10", "map@100"])
    assert missing == 1  # q5 is judged but not in the run
    assert set(per_query["ndcg@10"]) == {"q1", "q2", "q3", "q4", "q5", "q6"}  # not q7
    assert per_query["ndcg@10"]["q5"] == 0.0
    assert per_query["ndcg@10"]["q6"] == 0.0  # judged, but only non-relevant labels
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert "q6" in ref and ref["q6"]["ndcg_cut_10"] == 0.0  # pytrec_eval keeps it, as 0
    total = sum(v["ndcg_cut_10"] for v in ref.values())
    assert means["ndcg@10"] == pytest.approx(total / 6)  # denominator: all 6 judged queries


def test_beir_tsv_and_trec_qrels_are_equivalent(tmp_path):
    trec, beir = read_qrels(FIX / "qrels.txt"), read_qrels(FIX / "qrels.tsv")
    assert trec == beir
    headerless = tmp_path / "nohead.tsv"
    headerless.write_text("".join(FIX.joinpath("qrels.tsv").read_text().splitlines(True)[1:]))
    assert read_qrels(headerless) == trec
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("query-id\tcorpus-id\tscore\nq 1\tdoc 1\t1\n")
    assert read_qrels(spaced) == {"q 1": {"doc 1": 1}}
    run = read_run(FIX / "run_a.trec")
    assert evaluate_run(trec, run) == evaluate_run(beir, run)


def test_json_output_is_exactly_json(capsys):
    rc = run_cli(["evaluate", "--qrels", str(FIX / "qrels.tsv"), "--run",
                  str(FIX / "run_a.trec"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    assert list(data) == ["ndcg@10", "mrr@10", "recall@100", "map@100", "missing_queries"]
    assert data["missing_queries"] == 1
    means, _, _ = evaluate_run(read_qrels(FIX / "qrels.tsv"), read_run(FIX / "run_a.trec"))
    assert all(data[m] == pytest.approx(v) for m, v in means.items())


def test_text_output_and_metric_names(capsys):
    rc = run_cli(["evaluate", "--qrels", str(FIX / "qrels.txt"), "--run",
                  str(FIX / "run_b.trec"), "--metrics", "nDCG@10, precision@5"])
    out = capsys.readouterr().out
    assert rc == 0 and "ndcg@10" in out and "precision@5" in out and "missing" not in out


@pytest.mark.parametrize("test", ["ttest", "fisher"])
def test_compare_prints_ranx_table_with_markers(test, capsys):
    rc = run_cli(["evaluate", "--qrels", str(FIX / "qrels.txt"), "--run",
                  str(FIX / "run_a.trec"), "--compare", str(FIX / "run_b.trec"),
                  "--test", test, "--metrics", "ndcg@10"])
    out = capsys.readouterr().out
    assert rc == 0 and "run_a.trec" in out and "run_b.trec" in out
    if test == "ttest":
        assert "ᵃ" in out  # run_b is significantly better than run_a (row a)
    report, missing = compare_runs(read_qrels(FIX / "qrels.txt"),
                                   {"a": read_run(FIX / "run_a.trec"),
                                    "b": read_run(FIX / "run_b.trec")}, ["ndcg@10"], test=test)
    means, _, _ = evaluate_run(read_qrels(FIX / "qrels.txt"), read_run(FIX / "run_a.trec"),
                               ["ndcg@10"])
    assert report.results["a"]["ndcg@10"] == pytest.approx(means["ndcg@10"])
    assert missing == {"a": 1, "b": 0}


def test_compare_json(capsys):
    rc = run_cli(["evaluate", "--qrels", str(FIX / "qrels.txt"), "--run",
                  str(FIX / "run_a.trec"), "--compare", str(FIX / "run_b.trec"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["missing_queries"] == {"run_a.trec": 1, "run_b.trec": 0}
    assert data["run_a.trec"]["comparisons"]["run_b.trec"]["ndcg@10"] < 0.05


GOOD_QRELS = "q1 0 d1 1\nq2 0 d2 2\n"
GOOD_RUN = "q1 Q0 d1 1 2.0 t\nq2 Q0 d2 1 1.0 t\n"
BAD = [  # (which file is bad, its text, line number or None, words in the message)
    ("qrels", "q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 columns"),
    ("qrels", "q1 0 d1 1\nq1 0 d2 high\n", 2, "not an integer"),
    ("qrels", "q1 0 d1 1\nq1 0 d2 0.5\n", 2, "not an integer"),
    ("qrels", "q1 0 d1 1\nq1 0 d1 2\n", 2, "twice with different labels"),
    ("qrels", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "expected 3 columns"),
    ("qrels", "q1 d1\n", 1, "found 2"),
    ("qrels", "\n\n", None, "empty qrels file"),
    ("qrels", "query-id\tcorpus-id\tscore\n", None, "header but no judgments"),
    ("run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 t\n", 2, "expected 6 columns"),
    ("run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 abc t\n", 2, "not a number"),
    ("run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 nan t\n", 2, "not finite"),
    ("run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 x 1.0 t\n", 2, "rank 'x' is not an integer"),
    ("run", "q1 Q0 d1 1 2.0 t\nq2 Q0 d2 1 1.0 t\nq1 Q0 d1 3 0.5 t\n", 3, "appears twice"),
    ("run", "", None, "empty run file"),
    ("run", "x9 Q0 d1 1 2.0 t\n", None, "none of its 1 query ids appears"),
]


@pytest.mark.parametrize("which, text, line, words", BAD)
def test_malformed_input_is_one_line_exit_2(which, text, line, words, tmp_path, capsys):
    qrels, run = tmp_path / "qrels.txt", tmp_path / "run.trec"
    qrels.write_text(text if which == "qrels" else GOOD_QRELS)
    run.write_text(text if which == "run" else GOOD_RUN)
    rc = run_cli(["evaluate", "--qrels", str(qrels), "--run", str(run)])
    captured = capsys.readouterr()
    bad = qrels if which == "qrels" else run
    assert rc == 2 and captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err and words in err, err
    assert (f"{bad}:{line}:" if line else str(bad)) in err, err


@pytest.mark.parametrize("argv, words", [
    (["--metrics", "ndcg@10,bleu@4"], "unknown metric 'bleu@4'"),
    (["--metrics", "ndcg"], "needs a positive integer cut-off"),
    (["--metrics", "mrr@0"], "needs a positive integer cut-off"),
    (["--test", "wilcoxon"], "invalid choice"),
])
def test_bad_flags_exit_2(argv, words, capsys):
    rc = run_cli(["evaluate", "--qrels", str(FIX / "qrels.txt"), "--run",
                  str(FIX / "run_a.trec"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and words in err and "\n" not in err, err


def test_missing_file_names_it(tmp_path, capsys):
    rc = run_cli(["evaluate", "--qrels", str(tmp_path / "nope.txt"), "--run",
                  str(FIX / "run_a.trec")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{tmp_path / 'nope.txt'}: no such qrels file" in err


def test_write_run_ranks_deterministically(tmp_path):
    path = write_run({"q2": {"b": 1.0, "a": 1.0, "c": 3.0}, "q1": {"x": 0.1}},
                     tmp_path / "out" / "run.trec", tag="mine")
    assert path.read_text().splitlines() == [
        "q1 Q0 x 1 0.1 mine", "q2 Q0 c 1 3.0 mine", "q2 Q0 b 2 1.0 mine", "q2 Q0 a 3 1.0 mine"]
    with pytest.raises(UsageError, match="whitespace"):
        write_run({"q": {"a": 1.0}}, tmp_path / "r", tag="two words")
    with pytest.raises(UsageError, match="empty run"):
        write_run({}, tmp_path / "r", tag="t")
    with pytest.raises(UsageError, match="not finite"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": float("nan")}})


def test_parse_metrics_and_names():
    assert parse_metrics(" NDCG@10,mrr@10,ndcg@10 ") == ["ndcg@10", "mrr@10"]
    assert [trec_eval_name(m) for m in ("ndcg@10", "mrr@10", "recall@100", "map@100",
                                        "precision@5")] == [
        "ndcg_cut_10", "recip_rank", "recall_100", "map_cut_100", "P_5"]


def test_numba_cache_dir_defaults_under_cache(tmp_path, monkeypatch):
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", "")  # restored afterwards; empty = unset
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path))
    before = numba.config.CACHE_DIR
    try:
        import_ranx()
        assert numba.config.CACHE_DIR == str(tmp_path / "numba")
        assert (tmp_path / "numba").is_dir()
    finally:
        numba.config.CACHE_DIR = before
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/else")
    import_ranx()  # a user's setting wins
    assert numba.config.CACHE_DIR == before


def test_importing_the_command_does_not_import_ranx():
    code = ("import sys, bench.retrieval.evaluate; "
            "sys.exit(any(m in sys.modules for m in ('ranx', 'numba', 'numpy')))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_means_are_finite_on_fixture():
    means, _, _ = evaluate_run(read_qrels(FIX / "qrels.txt"), read_run(FIX / "run_b.trec"))
    assert all(math.isfinite(v) for v in means.values())
