"""Offline collections, the reranking harness, and end-to-end runs of the beir suite."""

import json

import pytest

from bench.cli import main
from bench.core.results import ResultStore
from bench.retrieval import rerank
from bench.retrieval.collections import load_collection, split_of


@pytest.fixture(scope="module")
def boolq():
    return load_collection("offline/boolq")


def test_fiqa_collection_shape():
    fiqa = load_collection("offline/fiqa")
    assert fiqa.splits() == ["test"]
    assert len(fiqa.docs()) == 648
    qrels = fiqa.qrels("test")
    assert len(qrels) == 648 and all(len(v) == 1 for v in qrels.values())
    assert fiqa.offline_stand_in and "FiQA" in fiqa.stands_in_for


def test_boolq_splits_are_disjoint_and_share_passages(boolq):
    assert len(boolq.docs()) == 2938
    splits = {s: set(boolq.qrels(s)) for s in ("train", "dev", "test")}
    assert sum(len(v) for v in splits.values()) == 3270
    assert not splits["train"] & splits["test"] and not splits["dev"] & splits["test"]
    assert all(split_of(q) == "test" for q in splits["test"])
    docs = set(boolq.docs())
    for split in splits:
        assert {d for rel in boolq.qrels(split).values() for d in rel} <= docs


def test_checksum_is_stable(boolq):
    again = load_collection("offline/boolq")
    assert boolq.checksum("test") == again.checksum("test")
    assert boolq.checksum("test") != boolq.checksum("train")


def test_unknown_collection_is_usage_error():
    from bench.errors import UsageError

    with pytest.raises(UsageError, match="unknown collection 'no/such/thing'"):
        load_collection("no/such/thing")


def test_sliding_window_covers_everything_back_to_front():
    relevance = {f"d{i}": i for i in range(25)}  # best documents start at the back
    calls = []

    def permute(ids):
        calls.append(list(ids))
        return sorted(range(len(ids)), key=lambda i: -relevance[ids[i]])

    out = rerank.sliding_window([f"d{i}" for i in range(25)], permute, window=10, stride=5)
    # Windows [15, 25), [10, 20), [5, 15), [0, 10): the last window first.
    assert [len(c) for c in calls] == [10, 10, 10, 10]
    assert calls[0] == [f"d{i}" for i in range(15, 25)]
    # A window carries its best (window - stride) forward, so the true top 5 reach the top.
    assert out[:5] == [f"d{i}" for i in range(24, 19, -1)]
    assert sorted(out) == sorted(relevance)


def test_sliding_window_short_list_and_bad_permutation():
    assert rerank.sliding_window(["a", "b"], lambda ids: [1, 0], window=20, stride=10) == [
        "b", "a"]
    with pytest.raises(ValueError, match="not a permutation"):
        rerank.sliding_window(["a", "b", "c"], lambda ids: [0, 0, 1], window=3, stride=1)


class LengthReranker:
    """Scores a pair by document length; can be told to fail after some calls."""

    def __init__(self, fail_after=None):
        self.calls = 0
        self.pairs = 0
        self.fail_after = fail_after

    def fingerprint(self):
        return "length"

    def score(self, queries, docs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.pairs += len(docs)
        return [float(len(d)) for d in docs]


def toy_problem():
    docs = {f"d{i}": "x" * (i + 1) for i in range(8)}
    queries = {"q1": "first", "q2": "second"}
    candidates = {q: {f"d{i}": 10.0 - i for i in range(8)} for q in queries}
    return queries, candidates, docs


def test_pointwise_rerank_orders_head_and_keeps_tail():
    queries, candidates, docs = toy_problem()
    run = rerank.rerank_pointwise(LengthReranker(), queries, candidates, docs, depth=4,
                                  batch_size=3, progress=False)
    ranked = [d for d, _ in rerank.top_k(run["q1"], 8)]
    assert ranked == ["d3", "d2", "d1", "d0", "d4", "d5", "d6", "d7"]


def test_pointwise_rerank_resumes_from_cache(tmp_path):
    queries, candidates, docs = toy_problem()
    cache = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        rerank.rerank_pointwise(LengthReranker(fail_after=2), queries, candidates, docs,
                                depth=8, batch_size=4, cache_path=cache, progress=False)
    assert len(cache.read_text().splitlines()) == 8  # two batches survived
    with cache.open("a") as handle:
        handle.write('{"q": "q1", "d": "d')  # a torn line from the crash is ignored
    second = LengthReranker()
    resumed = rerank.rerank_pointwise(second, queries, candidates, docs, depth=8,
                                      batch_size=4, cache_path=cache, progress=False)
    assert second.pairs == 8  # only what was missing
    fresh = rerank.rerank_pointwise(LengthReranker(), queries, candidates, docs, depth=8,
                                    batch_size=4, progress=False)
    assert resumed == fresh


def test_beir_bm25_and_minilm_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    for method in ("bm25", "minilm"):
        code = main(["run", "--method", method, "--suite", "beir", "--dataset", "offline/fiqa",
                     "--limit", "8", "--out", str(out), "--work-dir", str(tmp_path / "work")])
        assert code == 0
    records = {r["method"]: r for r in ResultStore(out).load("beir")}
    assert set(records) == {"bm25", "minilm"}
    for record in records.values():
        assert record["dataset"]["offline_stand_in"] is True
        assert record["dataset"]["num_items"] == 8
        assert set(record["per_item"]["ndcg@10"]) == set(records["bm25"]["per_item"]["ndcg@10"])
        assert 0.0 <= record["metrics"]["ndcg@10"] <= 1.0
        assert record["config"]["n_queries"] == 8
    # Size and speed beside the score: BM25 has neither; MiniLM-L6 is ~22.7M parameters.
    assert records["bm25"]["cost"] == {
        "parameters": None, "ms_per_item": None, "per": records["bm25"]["cost"]["per"]}
    minilm = records["minilm"]["cost"]
    assert 22_000_000 < minilm["parameters"] < 23_000_000 and minilm["ms_per_item"] > 0
    assert minilm["per"].startswith("query: top 20 BM25 candidates reranked in batches of 32")
    assert "probe: 4 test queries" in minilm["per"]
    # Same candidates below the reranked head: recall@100 cannot change.
    assert records["minilm"]["metrics"]["recall@100"] == records["bm25"]["metrics"]["recall@100"]
    # Never overwritten silently.
    code = main(["run", "--method", "bm25", "--suite", "beir", "--dataset", "offline/fiqa",
                 "--limit", "8", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err.strip().splitlines()
    assert not [line for line in err if "[INFO]" in line]  # ir_datasets kept quiet
    err = err[-1:]  # earlier lines: the minilm run's progress bars
    assert code == 2 and "--overwrite" in err[0]
    # ... and the finished run's record is kept beside, not lost
    kept = list((tmp_path / "work" / "kept-results").rglob("bm25__*.json"))
    assert len(kept) == 1 and str(kept[0].parents[2]) in err[0]
    assert json.loads(kept[0].read_text())["metrics"] == records["bm25"]["metrics"]


def test_method_not_offered_by_suite(capsys):
    code = main(["run", "--method", "dear", "--suite", "trec-dl"])
    err = capsys.readouterr().err
    assert code == 2 and "does not run on suite 'trec-dl'" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_llm_zeroshot_scores_are_batch_invariant():
    import torch

    from bench.core.assets import load_causal_lm
    from bench.retrieval.rerankers import YesNoLLMReranker

    model, tok = load_causal_lm()
    reranker = YesNoLLMReranker(model, tok, max_doc_tokens=32)
    queries = ["who wrote hamlet"] * 3
    docs = ["Hamlet is a tragedy by William Shakespeare.", "Paris is in France.",
            "A long passage about bananas. " * 30]
    with torch.inference_mode():
        batched = reranker.score(queries, docs)
        single = [reranker.score([q], [d])[0] for q, d in zip(queries, docs, strict=True)]
    assert batched == pytest.approx(single, abs=1e-4)
    assert json.dumps(batched)  # plain floats
