"""Reranking harness: pointwise and listwise interfaces, batching, score cache, windows.

- A :class:`PointwiseReranker` scores (query, document) pairs. :func:`rerank_pointwise`
  collects the pairs of a candidate run, sorts them by length so batches carry little
  padding, scores them batch by batch under ``torch.inference_mode`` with a progress bar,
  and appends each batch's scores to a cache file keyed by (model fingerprint, collection
  checksum, candidate run hash). An interrupted run loses at most one batch: the rerun
  reads the cache and scores only what is missing.
- A :class:`ListwiseReranker` orders a window of documents. :func:`sliding_window` drives
  it over a long candidate list back to front (RankGPT, Sun et al. 2023: window 20, stride
  10 at real scale), so strong documents bubble up to the top window. A listwise
  reranker with its own ``rerank_run`` (same arguments as :func:`rerank_listwise`) drives
  the windows itself, e.g. batched across queries or over a first stage of its own.
- A SIGTERM while reranking (or BM25 indexing) raises :class:`Terminated` in the main
  thread (:func:`sigterm_raises`), so the run unwinds like Ctrl-C: progress bars close,
  child processes are killed, the CLI prints one line and exits 143. A score-cache append
  in progress finishes first, so the cache holds whole lines only. (Python can own SIGTERM
  only because the in-process JVM runs with ``-Xrs``, see :mod:`bench.retrieval.java`;
  before that, the JVM's own handler shut the process down under Python's feet.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from bench.core.distributed import barrier, is_main, map_sharded
from bench.core.io import append_jsonl, read_jsonl
from bench.core.progress import progress_bar
from bench.core.signals import deferred, sigterm_raises
from bench.retrieval.trec import ranked

Run = dict[str, dict[str, float]]


@runtime_checkable
class PointwiseReranker(Protocol):
    def fingerprint(self) -> str:
        """Stable identity of the model and its scoring settings (for the score cache)."""

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        """Relevance score of each (queries[i], docs[i]) pair; higher is more relevant."""


@runtime_checkable
class ListwiseReranker(Protocol):
    def fingerprint(self) -> str: ...

    def permute(self, query: str, docs: Sequence[str]) -> list[int]:
        """A permutation of ``range(len(docs))``, most relevant first."""


def run_hash(run: Run, depth: int) -> str:
    digest = hashlib.sha256()
    for qid in sorted(run):
        for did, score in sorted(top_k(run[qid], depth)):
            digest.update(f"{qid}\t{did}\t{score!r}\n".encode())
    return digest.hexdigest()[:16]


def top_k(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
    """Highest scores first, ties in trec_eval's order (the order evaluation will see)."""
    return ranked(scores)[:k]


class ScoreCache:
    """Append-only JSONL of pair scores; a torn last line (crash mid-write) is ignored."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.scores: dict[tuple[str, str], float] = {
            (row["q"], row["d"]): float(row["s"]) for row in read_jsonl(path)} if path else {}

    def add(self, pairs: Sequence[tuple[str, str]], scores: Sequence[float]) -> None:
        for pair, score in zip(pairs, scores, strict=True):
            self.scores[pair] = float(score)
        if self.path is None or not is_main():  # every process adds the same gathered scores
            return
        rows = [{"q": qid, "d": did, "s": float(score)}
                for (qid, did), score in zip(pairs, scores, strict=True)]
        with deferred():  # a SIGTERM waits for the whole lines to be written
            append_jsonl(self.path, rows)


def rerank_pointwise(
    reranker: PointwiseReranker,
    queries: dict[str, str],
    candidates: Run,
    docs: dict[str, str],
    *,
    depth: int = 100,
    batch_size: int = 32,
    cache_path: Path | None = None,
    progress: bool = True,
) -> Run:
    """Rescore the top ``depth`` candidates of each query; deeper candidates keep their
    first-stage order below the reranked ones (so recall@depth' is unchanged)."""
    import torch

    pairs = [(qid, did) for qid in sorted(candidates) if qid in queries
             for did, _ in top_k(candidates[qid], depth)]
    cache = ScoreCache(cache_path)
    todo = [p for p in pairs if p not in cache.scores]
    todo.sort(key=lambda p: len(queries[p[0]]) + len(docs[p[1]]), reverse=True)
    with sigterm_raises():
        if todo and hasattr(reranker, "prefetch"):  # e.g. a bi-encoder embeds each text once
            reranker.prefetch(sorted({queries[q] for q, _ in todo}
                                     | {docs[d] for _, d in todo}), progress=progress)
        with progress_bar(len(pairs), "rerank", enabled=progress,
                          done=len(pairs) - len(todo)) as advance, torch.inference_mode():
            batches = [todo[start:start + batch_size] for start in range(0, len(todo),
                                                                          batch_size)]
            for batch, scores in map_sharded(batches, lambda batch: reranker.score(
                    [queries[q] for q, _ in batch], [docs[d] for _, d in batch])):
                cache.add(batch, scores)
                advance(len(batch))
    barrier()  # the main process's cache lines are written before anyone reads them
    return _merge(candidates, {p: cache.scores[p] for p in pairs}, depth)


def _merge(candidates: Run, rescored: dict[tuple[str, str], float], depth: int) -> Run:
    out: Run = {}
    for qid, by_doc in candidates.items():
        ranked = top_k(by_doc, len(by_doc))
        head = [(did, rescored[(qid, did)]) for did, _ in ranked[:depth]
                if (qid, did) in rescored]
        if not head:
            continue
        floor = min(s for _, s in head)
        row = {did: s for did, s in head}
        # Below the reranked head: first-stage order, with scores strictly under the head.
        for i, (did, _) in enumerate(ranked[len(head):]):
            row[did] = floor - 1.0 - i
        out[qid] = row
    return out


def sliding_window(
    order: Sequence[str],
    permute: Callable[[Sequence[str]], Sequence[int]],
    *,
    window: int = 20,
    stride: int = 10,
) -> list[str]:
    """Reorder ``order`` with a listwise ``permute`` over windows from the back to the front.

    Windows are [n-w, n), [n-w-s, n-s), ... and the last one always starts at 0, so every
    position is covered even when n is not a multiple of the stride (RankGPT's loop skips
    the list entirely when n < w).
    """
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got {window}/{stride}")
    result = list(order)
    end = len(result)
    while end > 0:
        start = max(0, end - window)
        chunk = result[start:end]
        perm = list(permute(chunk))
        if sorted(perm) != list(range(len(chunk))):
            raise ValueError(f"permute returned {perm}, not a permutation of {len(chunk)} items")
        result[start:end] = [chunk[i] for i in perm]
        if start == 0:
            break
        end -= stride
    return result


def rerank_listwise(
    reranker: ListwiseReranker,
    queries: dict[str, str],
    candidates: Run,
    docs: dict[str, str],
    *,
    depth: int = 100,
    window: int = 20,
    stride: int = 10,
    progress: bool = True,
) -> Run:
    """Sliding-window listwise reranking of each query's top ``depth`` candidates."""
    if hasattr(reranker, "rerank_run"):  # the reranker's own driver (see the module doc)
        with sigterm_raises():
            return reranker.rerank_run(queries, candidates, docs, depth=depth, window=window,
                                       stride=stride, progress=progress)
    out: Run = {}
    with sigterm_raises(), progress_bar(len(candidates), "listwise",
                                         enabled=progress) as advance:
        for qid in sorted(candidates):
            if qid not in queries:
                continue
            ranked = [did for did, _ in top_k(candidates[qid], len(candidates[qid]))]
            head = sliding_window(
                ranked[:depth],
                lambda ids, q=queries[qid]: reranker.permute(q, [docs[d] for d in ids]),
                window=window, stride=stride,
            )
            final = head + ranked[depth:]
            out[qid] = {did: float(len(final) - i) for i, did in enumerate(final)}
            advance(1)
    return out

