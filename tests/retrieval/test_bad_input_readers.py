"""Bad input to the retrieval readers and ``bench evaluate``: a UTF-8 byte-order mark never
changes a score, and a flag that needs another one is a one-line error, not ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cli
from bench.errors import UsageError
from bench.retrieval.collections import load_collection
from bench.retrieval.trec import read_qrels, read_run, text_lines

BOM = b"\xef\xbb\xbf"
FIX = Path(__file__).parent.parent / "fixtures" / "trec"

# The reproduction of the issue: with the BOM the first qrels line became query "\ufeffq1",
# so q1 lost its best judgment and "\ufeffq1" counted as a judged query missing from the run.
QRELS = b"q1 0 d1 2\nq1 0 d2 1\n"
RUN = b"q1 Q0 d2 1 3 t\nq1 Q0 d9 2 2 t\nq1 Q0 d1 3 1 t\n"
NDCG10 = 0.7602  # ndcg@10 of RUN against QRELS

CORPUS = (b'{"_id": "d1", "title": "", "text": "first passage"}\n'
          b'{"_id": "d2", "title": "Title", "text": "second passage"}\n')
QUERIES = b'{"_id": "q1", "text": "which passage"}\n{"_id": "q2", "text": "another"}\n'
BEIR_QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- TREC readers


@pytest.mark.parametrize("data", [QRELS, (FIX / "qrels.txt").read_bytes(),
                                  (FIX / "qrels.tsv").read_bytes()],
                         ids=["trec", "trec-fixture", "beir-tsv-fixture"])
def test_qrels_with_bom_reads_like_without(data, tmp_path):
    plain = read_qrels(write(tmp_path / "plain", data))
    assert read_qrels(write(tmp_path / "bom", BOM + data)) == plain
    assert not any(q.startswith("\ufeff") for q in plain)


@pytest.mark.parametrize("data", [RUN, (FIX / "run_a.trec").read_bytes()],
                         ids=["issue", "fixture"])
def test_run_with_bom_reads_like_without(data, tmp_path):
    plain = read_run(write(tmp_path / "plain", data))
    assert read_run(write(tmp_path / "bom", BOM + data)) == plain


def test_bom_on_a_later_line_is_one_line_error(tmp_path):
    # what `cat a.trec b.trec` gives when b.trec starts with a BOM: a silent new query id
    path = write(tmp_path / "run.trec", RUN + BOM + b"q2 Q0 d1 1 1 t\n")
    with pytest.raises(UsageError, match=rf"^{path}:4: byte-order mark") as info:
        read_run(path)
    assert "\n" not in str(info.value)


def test_malformed_line_messages_unchanged_with_bom(tmp_path):
    qrels = write(tmp_path / "qrels.txt", BOM + b"q1 0 d1 1\nq1 0 d2\n")
    with pytest.raises(UsageError, match=rf"^{qrels}:2: expected 4 columns"):
        read_qrels(qrels)
    run = write(tmp_path / "run.trec", BOM + b"q1 Q0 d1 1 x t\n")
    with pytest.raises(UsageError, match=rf"^{run}:1: score 'x' is not a number"):
        read_run(run)
    bad = write(tmp_path / "bad.trec", BOM + b"q1 Q0 d1 1 1 t\n\xff\n")
    with pytest.raises(UsageError, match=rf"^{bad}:2: not valid UTF-8"):
        read_run(bad)


def test_text_lines_keeps_splitlines_semantics(tmp_path):
    path = write(tmp_path / "f", BOM + b"a\r\nb\n\nc")
    assert list(text_lines(path, "test")) == ["a\r\n", "b\n", "\n", "c"]
    assert read_qrels(write(tmp_path / "crlf", QRELS.replace(b"\n", b"\r\n"))) == \
        read_qrels(write(tmp_path / "lf", QRELS))


# ---------------------------------------------------------------- bench evaluate


def evaluate(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["evaluate", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("bom_in", ["qrels", "run"])
def test_cli_score_is_the_same_with_a_bom(bom_in, tmp_path, capsys):
    qrels = write(tmp_path / "q", (BOM if bom_in == "qrels" else b"") + QRELS)
    run = write(tmp_path / "r", (BOM if bom_in == "run" else b"") + RUN)
    rc, out, err = evaluate(capsys, "--qrels", str(qrels), "--run", str(run),
                            "--metrics", "ndcg@10", "--json")
    data = json.loads(out)
    assert rc == 0 and err == ""
    assert data["ndcg@10"] == pytest.approx(NDCG10, abs=5e-5)  # was 0.5 / 0.4796
    assert data["missing_queries"] == 0  # was 1 with the BOM qrels


@pytest.mark.parametrize("test", ["fisher", "ttest"])
def test_cli_test_without_compare_is_usage_error(test, capsys):
    rc, out, err = evaluate(capsys, "--qrels", str(FIX / "qrels.txt"), "--run",
                            str(FIX / "run_a.trec"), "--test", test)
    err = err.strip()
    assert rc == 2 and out == ""
    assert "\n" not in err and "Traceback" not in err, err
    assert "--test" in err and "--compare" in err, err


def test_cli_test_with_compare_still_works(capsys):
    rc, out, _ = evaluate(capsys, "--qrels", str(FIX / "qrels.txt"), "--run",
                          str(FIX / "run_a.trec"), "--compare", str(FIX / "run_b.trec"),
                          "--test", "fisher", "--metrics", "ndcg@10")
    assert rc == 0 and "Fisher randomization test" in out
    rc, out, _ = evaluate(capsys, "--qrels", str(FIX / "qrels.txt"), "--run",
                          str(FIX / "run_a.trec"), "--compare", str(FIX / "run_b.trec"),
                          "--metrics", "ndcg@10")
    assert rc == 0 and "paired t-test" in out  # the default test


# ---------------------------------------------------------------- BEIR folders


@pytest.fixture
def beir_home(tmp_path, monkeypatch):
    """Keep ir-datasets' docstores for these folders under tmp_path."""
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets"))
    return tmp_path


def beir_folder(root: Path, bom: str | None = None,
                qrels: bytes = BEIR_QRELS) -> Path:
    files = {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": qrels}
    for name, data in files.items():
        write(root / name, (BOM if name == bom else b"") + data)
    return root


def contents(folder: Path) -> tuple[dict, dict, dict]:
    collection = load_collection(str(folder))
    return collection.docs(), collection.queries("test"), collection.qrels("test")


@pytest.mark.parametrize("bom", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_beir_file_with_bom_reads_like_without(bom, beir_home):
    plain = contents(beir_folder(beir_home / "plain"))
    assert plain == ({"d1": "first passage", "d2": "Title second passage"},
                     {"q1": "which passage", "q2": "another"},
                     {"q1": {"d1": 1}, "q2": {"d2": 2}})
    assert contents(beir_folder(beir_home / "bom", bom=bom)) == plain


def test_beir_folders_sharing_a_corpus_keep_their_own_qrels(beir_home):
    # the registration used to be keyed by the corpus alone: the second folder read the
    # first folder's judgments
    first = contents(beir_folder(beir_home / "a"))
    other = b"query-id\tcorpus-id\tscore\nq1\td2\t1\n"
    second = contents(beir_folder(beir_home / "b", qrels=other))
    assert first[2] == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert second[2] == {"q1": {"d2": 1}} and second[1] == {"q1": "which passage"}


def test_malformed_beir_qrels_is_one_line_error(beir_home):
    folder = beir_folder(beir_home / "bad", qrels=BOM + b"query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(UsageError, match=r"test\.tsv:2: expected 3 columns") as info:
        load_collection(str(folder)).qrels("test")
    assert "\n" not in str(info.value)


def test_beir_folder_without_queries_is_usage_error(beir_home):
    folder = beir_folder(beir_home / "noq")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(UsageError, match="not a BEIR folder"):
        load_collection(str(folder))
