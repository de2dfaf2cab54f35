"""The ``cost`` of a reranking row (:mod:`bench.core.cost`): parameters, ms per query.

An item is a test query; its cost is the reranking on top of BM25's candidates (the first
stage is shared by every row and not counted):

- **BM25** (no reranker): no parameters, and no time (the suite caches its BM25 run and does
  not time retrieval), so both are ``null``.
- **pointwise rerankers** (MiniLM, cross-encoders, RankLLaMA, the LLM baseline, DeAR-P and
  the undistilled student): pair scores come from the score cache on a rerun, so after
  evaluation a probe rescores, uncached, the top ``depth`` candidates of the first
  ``ceil(64 / depth)`` test queries (sorted ids) through the pipeline's own
  :func:`bench.retrieval.rerank.rerank_pointwise` (length-sorted batches of ``batch_size``
  pairs, a bi-encoder's prefetch, whose memoised embeddings are dropped first), after a
  one-pair warm-up; the median of up to 3 passes, none started once 2 s are spent.
- **listwise rerankers** (DeAR-L): never cached, so the windows are timed as the
  evaluation generates them (the reranker's ``seconds`` when it keeps them, which leaves
  out its first stage; else the row's wall time), per test query; a first stage
  (``first_stage_reranker``: DeAR-P for DeAR-L) adds its own probed time and parameters.
  The probe of a reranker serves every row that uses it (DeAR-P and DeAR-L's first stage).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bench.core.cost import (
    PROBE_BUDGET_S,
    PROBE_REPEATS,
    cost_entry,
    parameter_count,
    time_per_item,
    weights_dtype,
)

PROBE_PAIRS = 64  # pairs a pointwise probe scores at least: seconds, even for an LLM on a CPU
T = TypeVar("T")


class RowCosts:
    """Times and probes the rows of one dataset's reranking run (see the module doc)."""

    def __init__(self, queries: dict[str, str], candidates: dict[str, dict[str, float]],
                 docs: Callable[[], dict[str, str]], settings: dict[str, Any]) -> None:
        # docs: read only when a probe needs them (a BM25-only run never loads the corpus)
        self.queries, self.candidates, self.docs = queries, candidates, docs
        self.settings = settings
        self._probed: dict[int, tuple[float | None, str]] = {}  # id(reranker) -> ms, how

    def measure(self, reranker: Any, evaluate: Callable[[], T]) -> tuple[T, float, dict]:
        """``(evaluate(), its wall seconds, the row's cost)``: ``evaluate`` reranks the test
        queries with ``reranker`` (``None``: BM25 as it is)."""
        from bench.retrieval import rerank

        windows_before = getattr(reranker, "seconds", None)
        start = time.perf_counter()
        result = evaluate()
        seconds = time.perf_counter() - start
        if reranker is None:
            return result, seconds, cost_entry(
                None, None, "query: BM25's candidates as they are (no reranker: no "
                "parameters; BM25 retrieval is cached and not timed)")
        if isinstance(reranker, rerank.ListwiseReranker) and not hasattr(reranker, "score"):
            windows = getattr(reranker, "seconds", None)  # generation only: no first stage
            timed = windows - windows_before if isinstance(windows, int | float) and \
                isinstance(windows_before, int | float) else seconds
            return result, seconds, self._listwise(reranker, timed)
        ms, how = self._probe(reranker)
        depth = int(self.settings["depth"])
        per = (f"query: top {depth} BM25 candidates reranked in batches of {self._batch()} "
               f"pairs, {weights_dtype(reranker)} weights (BM25 not counted; {how})")
        return result, seconds, cost_entry(parameter_count(reranker), ms, per)

    def _batch(self) -> int:
        return int(self.settings.get("batch_size", 32))

    def _listwise(self, reranker: Any, seconds: float) -> dict[str, Any]:
        """Windows timed during evaluation, plus a first stage's probed time."""
        depth = min(int(self.settings["depth"]), int(getattr(reranker, "max_depth", 10**9)))
        window, stride = self.settings.get("window", 20), self.settings.get("stride", 10)
        ms = seconds / max(1, len(self.queries)) * 1000.0
        per = (f"query: listwise windows of {window} (stride {stride}) over the top {depth}, "
               f"{weights_dtype(reranker)} weights (windows timed during evaluation")
        first = getattr(reranker, "first_stage_reranker", None)
        if first is not None:
            first_ms, how = self._probe(first)
            ms = None if first_ms is None else ms + first_ms
            per += (f"; plus its first stage rescoring the top {self.settings['depth']} BM25 "
                    f"candidates, {how}")
        return cost_entry(parameter_count(reranker), ms, per + "; BM25 not counted)")

    def _probe(self, reranker: Any) -> tuple[float | None, str]:
        """(ms per query, how it was measured) of a pointwise reranker, uncached."""
        if id(reranker) not in self._probed:
            self._probed[id(reranker)] = self._probe_once(reranker)
        return self._probed[id(reranker)]

    def _probe_once(self, reranker: Any) -> tuple[float | None, str]:
        from bench.retrieval import rerank

        depth = int(self.settings["depth"])
        wanted = max(1, math.ceil(PROBE_PAIRS / depth))
        qids = [q for q in sorted(self.queries) if self.candidates.get(q)][:wanted]
        if not qids:
            return None, "not timed: no candidates"
        queries = {q: self.queries[q] for q in qids}
        candidates = {q: self.candidates[q] for q in qids}
        first = qids[0]
        top = dict(rerank.top_k(candidates[first], 1))
        docs = self.docs()

        def score(qs: dict[str, str], cands: dict[str, dict[str, float]], k: int) -> None:
            forget = getattr(reranker, "forget", None)
            if forget is not None:  # a bi-encoder would look its embeddings up
                forget()
            rerank.rerank_pointwise(reranker, qs, cands, docs, depth=k,
                                    batch_size=self._batch(), progress=False)

        ms = time_per_item(lambda: score(queries, candidates, depth), len(qids),
                           repeats=PROBE_REPEATS, budget_s=PROBE_BUDGET_S,
                           warmup=lambda: score({first: queries[first]}, {first: top}, 1))
        return ms, f"probe: {len(qids)} test queries rescored uncached after evaluation"
