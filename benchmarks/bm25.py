"""pyserini (Anserini/Lucene) BM25 vs ``bm25s`` on one BEIR-format collection.

Usage::

    python benchmarks/bm25.py --collection DIR [--k 100] [--repeats 3] [--threads 2]

``DIR`` holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` (header
``query-id  corpus-id  score``). Both systems run in the same process with the same
parameters (BEIR's ``k1=0.9, b=0.4``), the same 33 Lucene English stopwords and Porter-family
stemming (PyStemmer's English Snowball for bm25s, when installed), on the queries that have
judgments. Search speed is the median of ``--repeats`` timed passes over all queries (query
tokenization included for both); nDCG@10 and R@100 come from ``pytrec_eval`` directly, with
unanswered queries counted as 0. Why: the ``beir`` suite's first stage is pyserini for fidelity
to published BEIR numbers; this script shows what that fidelity costs against a pure-Python
alternative, and that the two agree on effectiveness.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.retrieval import bm25, java  # noqa: E402

Run = dict[str, dict[str, float]]


def load_collection(folder: Path, split: str) -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    """Corpus path, the judged queries of ``split`` and their qrels."""
    corpus = folder / "corpus.jsonl"
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    return corpus, queries, {q: r for q, r in qrels.items() if q in queries}


def evaluate(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and R@100 over all judged queries (missing answers count as 0)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    scores = evaluator.evaluate({q: docs for q, docs in run.items() if docs})
    n = len(qrels)
    return {"nDCG@10": sum(s["ndcg_cut_10"] for s in scores.values()) / n,
            "R@100": sum(s["recall_100"] for s in scores.values()) / n}


def timed(fn: Callable[[], Run], repeats: int) -> tuple[Run, float]:
    """The last result and the median wall time of ``repeats`` calls."""
    times, result = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def run_pyserini(corpus: Path, queries: dict[str, str], args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    index = bm25.build_index(corpus, cache_root=args.cache_root, threads=args.threads)
    call_s = time.perf_counter() - start
    build_s = json.loads((index / bm25.META_FILE).read_text())["build_seconds"]
    start = time.perf_counter()
    java.start_jvm()
    jvm_s = time.perf_counter() - start
    start = time.perf_counter()
    retriever = bm25.BM25Retriever(index, k1=args.k1, b=args.b)
    open_s = time.perf_counter() - start
    run, search_s = timed(lambda: retriever.batch_search(queries, k=args.k, threads=args.threads,
                                                         progress=False), args.repeats)
    _, single_s = timed(lambda: {q: dict(retriever.search(t, args.k)) for q, t in queries.items()},
                        args.repeats)
    retriever.close()
    return {"run": run, "index_s": build_s, "cached": call_s < build_s / 2, "jvm_s": jvm_s, "open_s": open_s,
            "search_s": search_s, "single_s": single_s}


def run_bm25s(corpus: Path, queries: dict[str, str], args: argparse.Namespace) -> dict:
    import bm25s

    try:
        import Stemmer

        stem = Stemmer.Stemmer("english").stemWords
    except ImportError:
        stem = None
        print("note: PyStemmer not installed, bm25s runs without stemming", file=sys.stderr)
    start = time.perf_counter()
    ids, texts = [], []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                ids.append(str(doc["_id"]))
                texts.append(f"{doc.get('title') or ''} {doc.get('text') or ''}".strip())
    tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False)
    model = bm25s.BM25(method="lucene", k1=args.k1, b=args.b)
    model.index(tokens, show_progress=False)
    index_s = time.perf_counter() - start
    qids, qtexts = list(queries), list(queries.values())
    k = min(args.k, len(ids))

    def search() -> Run:
        qtok = bm25s.tokenize(qtexts, stopwords="en", stemmer=stem, return_ids=False,
                              show_progress=False)
        docs, scores = model.retrieve(qtok, k=k, n_threads=args.threads if args.threads > 1 else 0,
                                      show_progress=False)
        return {qid: {ids[d]: float(s) for d, s in zip(row, srow, strict=True) if s > 0}
                for qid, row, srow in zip(qids, docs, scores, strict=True)}

    run, search_s = timed(search, args.repeats)
    return {"run": run, "index_s": index_s, "search_s": search_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", type=Path, required=True, help="BEIR-format folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=bm25.TOP_K, help="retrieval depth")
    parser.add_argument("--k1", type=float, default=bm25.K1)
    parser.add_argument("--b", type=float, default=bm25.B)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-root", type=Path, default=None,
                        help="index cache (default: the distillbench cache)")
    parser.add_argument("--systems", default="pyserini,bm25s")
    args = parser.parse_args(argv)

    corpus, queries, qrels = load_collection(args.collection, args.split)
    print(f"collection {args.collection}: {len(queries)} judged {args.split} queries, "
          f"k={args.k}, k1={args.k1}, b={args.b}, threads={args.threads}, "
          f"median of {args.repeats}")
    results = {}
    for name in args.systems.split(","):
        runner = {"pyserini": run_pyserini, "bm25s": run_bm25s}[name]
        results[name] = runner(corpus, queries, args)
        results[name].update(evaluate(results[name]["run"], qrels))

    print(f"\n{'system':<22}{'index s':>9}{'queries/s':>11}{'nDCG@10':>9}{'R@100':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['index_s']:>9.2f}{len(queries) / r['search_s']:>11.0f}"
              f"{r['nDCG@10']:>9.4f}{r['R@100']:>8.4f}")
        if name == "pyserini":
            print(f"{'  one query at a time':<22}{'':>9}{len(queries) / r['single_s']:>11.0f}")
            print(f"  JVM start {r['jvm_s']:.2f}s, searcher open {r['open_s']:.2f}s "
                  f"(index {'from the cache' if r['cached'] else 'built now'})")
    if {"pyserini", "bm25s"} <= results.keys():
        p, s = results["pyserini"], results["bm25s"]
        print(f"\npyserini/bm25s: speed x{s['search_s'] / p['search_s']:.2f}, "
              f"nDCG@10 {p['nDCG@10'] - s['nDCG@10']:+.4f}, "
              f"run overlap@10 {overlap(p['run'], s['run']):.3f}")
    return 0


def overlap(a: Run, b: Run, depth: int = 10) -> float:
    """Mean fraction of shared docids in the two runs' top-``depth`` lists."""
    fractions = []
    for qid in a.keys() & b.keys():
        top_a = set(list(a[qid])[:depth])
        top_b = set(list(b[qid])[:depth])
        if top_a or top_b:
            fractions.append(len(top_a & top_b) / max(len(top_a), len(top_b)))
    return statistics.mean(fractions) if fractions else 0.0


if __name__ == "__main__":
    sys.exit(main())
