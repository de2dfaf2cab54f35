"""The reranking protocol shared by the ``beir`` and ``trec-dl`` suites.

Per dataset: load the collection (offline stand-in, local BEIR folder or ir-datasets id),
take the test queries (a fixed subset at the smaller presets: the first N query ids in
sorted order, and ids are content hashes, so the subset is a stable pseudo-random sample),
retrieve BM25 top-100 candidates (k1=0.9, b=0.4, cached as a TREC run file), rerank the
top ``depth`` candidates with the method, and evaluate with trec_eval ``-c`` semantics.
Candidates below ``depth`` keep BM25's order, so recall@100 is the same for every
reranker and the comparison isolates the reranker.

Presets (recorded in every result):

=========  ============  =====  ====================================================
preset     test queries  depth  datasets
=========  ============  =====  ====================================================
smoke      25            10     the offline stand-ins
default    200           20     the offline stand-ins
cpu-long   200           20     the offline stand-ins; the method's longer CPU recipe
full       all           100    the real benchmarks (needs DISTILLBENCH_ONLINE=1)
=========  ============  =====  ====================================================

Choosing a recipe (``--set eval_split=validation``): the collection's dev queries (10% of
the offline stand-ins' queries by id hash; FiQA and most real sets have none, which is a
usage error) are scored instead of the test queries, under the dataset id
``<id>@validation``; DeAR trains on the train split, disjoint from both.

Method hook (:class:`bench.contracts.RerankerRecipe`): ``build_rerankers(context:
RetrievalContext) -> [(row name, reranker | None, model name), ...]``, one row per
leaderboard row the run yields (DeAR: the undistilled student, DeAR-P, DeAR-L); a reranker
is pointwise or listwise (``bench.retrieval.rerank``), ``None`` keeps the BM25 candidates.
It may list extra ``--set`` keys in ``settings_keys``. Each row records its reranking seconds per
query, and its ``cost``: the reranker's parameters and milliseconds per query, probed
uncached after evaluation for pointwise rerankers (their scores are cached), timed as they
run for listwise ones (:mod:`bench.retrieval.costs` says exactly how). The baselines live
in ``methods/retrieval/baselines.py``: ``bm25``, ``minilm``,
``rerank-teacher`` (the teacher row: whatever ``--teacher`` names, resolved by
``bench.retrieval.teachers.load_teacher_reranker`` exactly as DeAR resolves its teacher)
and ``llm-zeroshot``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.contracts import RetrievalContext, resolve_recipe
from bench.errors import UsageError
from bench.retrieval.collections import Collection, load_collection
from bench.retrieval.costs import RowCosts
from bench.suite import RunOptions, Suite

METRICS = ("ndcg@10", "mrr@10", "recall@100")
K1, B, CANDIDATES = 0.9, 0.4, 100


def _sample(queries: dict[str, str], n: int | None) -> dict[str, str]:
    ids = sorted(queries)
    return {q: queries[q] for q in (ids if n is None else ids[:n])}


class RetrievalSuite(Suite):
    """A reranking suite; subclasses set the metadata and the dataset lists."""

    def dataset_ids(self, options: RunOptions) -> list[str]:
        if options.dataset:
            return [options.dataset]
        offline = options.preset != "full"  # the real benchmarks at full scale
        return [d.id for d in self.datasets if (d.stands_in_for is not None) == offline]

    def truncated_model(self, options: RunOptions, settings: dict[str, Any]) -> str:
        """DeAR's student LM, whose first layers make the reranker."""
        from methods.retrieval.dear import DeARConfig

        return options.student or DeARConfig.student

    def settings(self, options: RunOptions) -> dict[str, Any]:
        recipe = resolve_recipe(options.method, self.name)
        # The recipe overlays its own preset recipe (DeAR: recipe_settings); the record's
        # settings are the protocol's and the user's.
        own = {s.name for s in self.metadata.settings} | set(options.overrides)
        settings = {k: v for k, v in self.resolve_settings(options, recipe).items() if k in own}
        if options.limit is not None:
            settings["n_queries"] = options.limit
        return settings

    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        dataset_ids = self.dataset_ids(options)
        if self.settings(options)["eval_split"] == "validation":  # checked before any work
            for dataset_id in dataset_ids:
                collection = load_collection(dataset_id)
                if "dev" not in collection.splits():
                    raise UsageError(
                        f"--set eval_split=validation: {collection.id} has no dev split (it "
                        f"has: {', '.join(collection.splits())}); pass --dataset with a "
                        "collection that has one, e.g. --dataset offline/boolq")
        records: list[dict[str, Any]] = []
        for dataset_id in dataset_ids:
            records.extend(self._run_dataset(dataset_id, options))
        return records

    def _run_dataset(self, dataset_id: str, options: RunOptions) -> list[dict[str, Any]]:
        from bench.core.assets import cache_dir
        from bench.core.results import new_record
        from bench.retrieval.evaluate import evaluate_run

        start = time.perf_counter()
        settings = self.settings(options)
        collection = load_collection(dataset_id)
        # validation = the collection's dev queries: recipes are chosen on them, so the
        # test queries stay unseen (DeAR trains on the train split, disjoint from both)
        split = "dev" if settings["eval_split"] == "validation" else "test"
        qrels_all = collection.qrels(split)
        queries = _sample(collection.queries(split), settings["n_queries"])
        qrels = {q: qrels_all[q] for q in queries}
        work_dir = Path(options.work_dir or cache_dir() / "runs")
        candidates = self._bm25(collection, queries, work_dir)
        context = RetrievalContext(collection=collection, options=options, settings=settings,
                                   work_dir=work_dir,
                                   bm25=lambda c, qs: self._bm25(c, qs, work_dir))
        rows = resolve_recipe(options.method, self.name).build_rerankers(context)
        setup_seconds = time.perf_counter() - start
        suffix = "@validation" if split == "dev" else ""
        dataset = {"id": collection.id + suffix, "checksum": collection.checksum(split),
                   "split": "validation" if split == "dev" else "test",
                   "offline_stand_in": collection.offline_stand_in,
                   "stands_in_for": collection.stands_in_for, "num_items": len(qrels)}
        records = []
        costs = RowCosts(queries, candidates, collection.docs, context.settings)
        for label, reranker, model in rows:
            (run, notes, extra), seconds, cost = costs.measure(
                reranker, lambda r=reranker: self._rerank(r, context, queries, candidates))
            means, per_query, missing = evaluate_run(qrels, run, METRICS)
            notes = [*context.notes, *notes]
            if missing:
                notes.append(f"{missing} judged queries had no ranking and count as 0")
            config = {"preset": options.preset, **settings, "candidates": CANDIDATES,
                      "bm25": {"k1": K1, "b": B}, **context.config, **extra,
                      "rerank_seconds_per_query": round(seconds / max(1, len(queries)), 4)}
            records.append(new_record(
                suite=self.name, suite_version=self.version, dataset=dataset, method=label,
                model=model, seed=options.seed, preset=options.preset,
                main_score=self.main_score, metrics=means, per_item=per_query, config=config,
                implementation=context.config.get("implementation", "full"), notes=notes,
                wall_time_s=setup_seconds + seconds, cost=cost,
            ))
        return records

    def _bm25(self, collection: Collection, queries: dict[str, str], work_dir: Path
              ) -> dict[str, dict[str, float]]:
        """BM25 top-100 for ``queries``, cached per (collection, query set) as a TREC run."""
        import hashlib

        from bench.retrieval.bm25 import BM25Retriever, build_index, prebuilt_index_name
        from bench.retrieval.trec import read_run, write_run

        qhash = hashlib.sha256("\n".join(sorted(queries)).encode()).hexdigest()[:12]
        key = collection.checksum("test")[7:23]
        path = work_dir / "bm25" / f"{key}-{qhash}-k1={K1}-b={B}-top{CANDIDATES}.trec"
        if path.exists():
            return read_run(path)
        if collection.folder is not None:
            index: Path | str = build_index(collection.folder / "corpus.jsonl")
        else:
            parts = collection.id.split("/")
            index = prebuilt_index_name(parts[0] if parts[0] == "msmarco-passage" else parts[1])
        with BM25Retriever(index, k1=K1, b=B) as retriever:
            run = retriever.batch_search(queries, k=CANDIDATES)
        write_run(run, path, tag="bm25")
        return run

    def _rerank(self, reranker: Any, context: RetrievalContext, queries: dict[str, str],
                candidates: dict[str, dict[str, float]]) -> tuple[dict, list[str], dict]:
        """(run, notes, config) of one reranker; ``None`` keeps the BM25 candidates."""
        from bench.retrieval import rerank

        settings = context.settings
        if reranker is None:
            return candidates, [], {}
        docs = context.collection.docs()
        if isinstance(reranker, rerank.ListwiseReranker) and not hasattr(reranker, "score"):
            return rerank.rerank_listwise(reranker, queries, candidates, docs,
                                          depth=settings["depth"],
                                          window=settings.get("window", 20),
                                          stride=settings.get("stride", 10)), [], {}
        key = "-".join([reranker.fingerprint(), context.collection.checksum("test")[7:19],
                        rerank.run_hash(candidates, settings["depth"])])
        cache_path = context.work_dir / "scores" / f"{key}.jsonl"
        cached = len(rerank.ScoreCache(cache_path).scores)
        run = rerank.rerank_pointwise(
            reranker, queries, candidates, docs, depth=settings["depth"],
            batch_size=settings.get("batch_size", 32), cache_path=cache_path)
        notes = []
        if cached:
            notes.append(f"{cached} pair scores came from the score cache "
                         f"({cache_path.name}); the wall time excludes scoring them")
        return run, notes, {"score_cache": {"file": cache_path.name, "cached_pairs": cached}}
