"""Pairs/s and peak memory: the batched pointwise scorer vs a one-pair-at-a-time loop.

Both paths score the same (query, passage) pairs (BM25 candidates of offline/boolq test
queries) with the same model: the zero-shot yes/no SmolLM2 reranker. Each measurement runs
in a fresh subprocess, and peak RSS is sampled while scoring, so memory belongs to one path; repeats are
interleaved (A B A B ...) and medians reported, since this machine is noisy.

    python benchmarks/rerank_throughput.py [--pairs 64] [--repeats 3] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time


def _pairs(n: int) -> tuple[list[str], list[str]]:
    from bench.retrieval.collections import load_collection
    from bench.retrieval.pipeline import RetrievalSuite
    from bench.retrieval.rerank import top_k

    collection = load_collection("offline/boolq")
    queries = dict(sorted(collection.queries("test").items())[: max(1, n // 20) + 1])
    suite = RetrievalSuite.__new__(RetrievalSuite)
    from bench.core.assets import cache_dir

    run = suite._bm25(collection, queries, cache_dir() / "runs")
    docs = collection.docs()
    pairs = [(queries[q], docs[d]) for q in sorted(run) for d, _ in top_k(run[q], 20)]
    return [q for q, _ in pairs[:n]], [d for _, d in pairs[:n]]


def worker(mode: str, n: int, dtype: str, batch_size: int) -> dict[str, float]:
    import torch

    from bench.core.assets import load_causal_lm
    from bench.retrieval.rerankers import YesNoLLMReranker

    torch.manual_seed(0)
    qs, ds = _pairs(n)
    model, tok = load_causal_lm(dtype=getattr(torch, dtype))
    reranker = YesNoLLMReranker(model, tok, max_doc_tokens=128)
    with torch.inference_mode():
        reranker.score(qs[:2], ds[:2])  # warm-up outside the timed region
    sampler = _RssSampler()
    before = sampler.rss()
    sampler.start()
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "batched":
            order = sorted(range(n), key=lambda i: len(qs[i]) + len(ds[i]), reverse=True)
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size]
                reranker.score([qs[i] for i in idx], [ds[i] for i in idx])
        else:
            for q, d in zip(qs, ds, strict=True):
                reranker.score([q], [d])
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    return {"pairs_per_s": n / seconds, "peak_rss_mib": peak / 2**20,
            "extra_peak_mib": max(0, peak - before) / 2**20}


class _RssSampler(threading.Thread):
    """Peak resident memory while scoring (ru_maxrss would report the model-loading peak)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self._done = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, self.rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--worker", choices=("batched", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.pairs, args.dtype, args.batch_size)))
        return
    results: dict[str, list[dict[str, float]]] = {"batched": [], "naive": []}
    for _ in range(args.repeats):
        for mode in ("batched", "naive"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode, "--pairs", str(args.pairs),
                 "--dtype", args.dtype, "--batch-size", str(args.batch_size)],
                capture_output=True, text=True, check=True)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.pairs} pairs, SmolLM2-135M yes/no reranker, {args.dtype}, "
          f"batch {args.batch_size}, {args.repeats} interleaved repeats (medians)")
    print(f"{'path':<10}{'pairs/s':>10}{'peak RSS MiB':>15}{'peak over model MiB':>21}")
    med = {}
    for mode, rows in results.items():
        med[mode] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        m = med[mode]
        print(f"{mode:<10}{m['pairs_per_s']:>10.2f}{m['peak_rss_mib']:>15.0f}"
              f"{m['extra_peak_mib']:>21.0f}")
    print(f"speed-up batched/naive: {med['batched']['pairs_per_s'] / med['naive']['pairs_per_s']:.2f}x")


if __name__ == "__main__":
    main()
