"""``bench evaluate``: score TREC runs against qrels, with trec_eval ``-c`` semantics.

Metrics are computed by ranx (``ranx.evaluate`` / ``ranx.compare``), but the inputs are
prepared so that every per-query value equals pytrec_eval's (trec_eval's) to 1e-6; the tests
check this on randomised data. What had to be prepared, and why:

* **Tied scores.** ranx orders a query's documents with ``np.argsort`` (quicksort, not
  stable): tied documents keep file order on small inputs and an unspecified order in general
  (a run ``d10, d9`` with equal scores gives P@1 = 0 in ranx, 1 in trec_eval when ``d9`` is
  the relevant one); trec_eval breaks ties by docid, descending. We rank each query ourselves (:func:`bench.retrieval.trec.ranked`) and hand ranx the
  strictly decreasing scores ``n, n-1, ..., 1``, so both tools see the same ranking.
* **Judged queries missing from the run** score 0 and stay in the mean (trec_eval ``-c``).
  ranx's ``evaluate`` refuses mismatched query sets unless ``make_comparable=True``, which
  adds an empty ranking for each missing query (every metric 0) and drops run queries that
  have no judgments (trec_eval ignores those too). The number missing is reported.
* **Which queries are "judged".** Every query id in the qrels, including one whose judgments
  are all non-relevant (labels <= 0): trec_eval ``-c`` divides by the number of query ids in
  the qrels file and pytrec_eval returns 0 for such a query on every metric here, so we do the
  same (ranx agrees: with no relevant document each metric is 0).
* **Relevance.** Labels >= 1 are relevant (trec_eval's default level 1); labels <= 0,
  negative ones included, are non-relevant and give nDCG gain 0 (trec_eval ignores negative
  gains; checked against pytrec_eval). Unjudged documents are non-relevant.
* **nDCG gain** is the label itself (Järvelin & Kekäläinen; trec_eval's ``ndcg_cut``), which
  is ranx's ``ndcg``; ranx's ``ndcg_burges`` (2^rel - 1) is *not* used.

Metric names and their trec_eval equivalents (see :data:`TREC_EVAL_NAMES`): ``ndcg@k`` =
``ndcg_cut_k``, ``recall@k`` = ``recall_k``, ``map@k`` = ``map_cut_k`` (divides by all relevant
documents, not min(k, R)), ``precision@k`` = ``P_k`` (divides by k even when fewer documents
were retrieved), ``mrr@k`` = ``recip_rank`` on the run cut to its top k: trec_eval has no
cut-off version of ``recip_rank`` (its ``recip_rank`` looks at the whole ranking), so "MRR@10"
in the MS MARCO sense is trec_eval run on a truncated run; ranx's ``mrr@k`` is exactly that.

ranx JIT-compiles with numba (~50 s on first use); :func:`import_ranx` points
``NUMBA_CACHE_DIR`` at the distillbench cache so that cost is paid once per machine, and
ranx is only imported inside functions so ``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.retrieval.trec import Qrels, RunDict, ranked, read_qrels, read_run

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
#: metric family -> trec_eval measure (``{k}`` is the cut-off). ``mrr`` needs a cut run.
TREC_EVAL_NAMES = {"ndcg": "ndcg_cut_{k}", "mrr": "recip_rank", "recall": "recall_{k}",
                   "map": "map_cut_{k}", "precision": "P_{k}"}
STAT_TESTS = {"ttest": "student", "fisher": "fisher"}  # our flag -> ranx.compare stat_test
MAX_P = 0.05  # same significance level as the leaderboards (bench.core.leaderboard)


def import_ranx() -> Any:
    """Import ranx with numba's on-disk cache in ``$DISTILLBENCH_CACHE/numba``.

    A user-set ``NUMBA_CACHE_DIR`` wins. numba reads the variable when it is first imported;
    if something imported numba already, its config is updated directly.
    """
    if not os.environ.get("NUMBA_CACHE_DIR"):
        from bench.core.assets.specs import cache_dir

        cache = cache_dir() / "numba"
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # unwritable: numba falls back to its default (no persistent cache)
        else:
            os.environ["NUMBA_CACHE_DIR"] = str(cache)
            if "numba" in sys.modules:
                sys.modules["numba"].config.CACHE_DIR = str(cache)
    import ranx

    return ranx


def parse_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Normalise ``"ndcg@10,MRR@10"`` (or a list) to ``["ndcg@10", "mrr@10"]``; unknown
    families or cut-offs that are not positive integers raise :class:`UsageError`."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    known = ", ".join(f"{m}@k" for m in TREC_EVAL_NAMES)
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        family, sep, cut = name.partition("@")
        if family not in TREC_EVAL_NAMES:
            raise UsageError(f"unknown metric {raw.strip()!r}; choose from {known} "
                             "(e.g. --metrics ndcg@10,mrr@10)")
        if not sep or not (cut.isascii() and cut.isdigit()) or int(cut) < 1:
            raise UsageError(f"metric {raw.strip()!r} needs a positive integer cut-off, "
                             f"e.g. {family}@10")
        name = f"{family}@{int(cut)}"
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError(f"no metrics given; choose from {known}")
    return out


def trec_eval_name(metric: str) -> str:
    """The trec_eval/pytrec_eval measure for ``metric`` (``mrr@k`` -> ``recip_rank``, which
    must be computed on the run cut to its top k)."""
    family, _, cut = parse_metrics([metric])[0].partition("@")
    return TREC_EVAL_NAMES[family].format(k=cut)


def _judged(qrels: Mapping[str, Mapping[str, int]]) -> Qrels:
    judged = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()
              if docs}
    if not judged:
        raise UsageError("the qrels judge no query; pass a qrels file with judgments")
    return judged


def _ranx_run(ranx: Any, qrels: Qrels, run: Mapping[str, Mapping[str, float]],
              name: str | None = None) -> tuple[Any, int]:
    """A ranx ``Run`` with deterministic ranks, and the number of judged queries missing
    from the run. Run queries without judgments are dropped (trec_eval ignores them)."""
    ranks = {str(q): {str(d): float(len(docs) - i) for i, (d, _) in enumerate(ranked(docs))}
             for q, docs in run.items() if docs and str(q) in qrels}
    if not ranks:
        raise UsageError(f"the run{f' {name}' if name else ''} shares no query id with the "
                         "qrels; check that both files use the same query ids")
    return _build(ranx.Run, ranks, float, name=name), len(qrels) - len(ranks)


def _build(cls: Any, data: Mapping[str, Mapping[str, Any]], dtype: type, name: str | None = None
           ) -> Any:
    """``ranx.Qrels(data)`` / ``ranx.Run(data)``, minus a recompilation per docid length.

    ranx's constructors store docids as a numpy ``<U{longest docid}`` array, and numba
    compiles ``create_and_sort`` anew (seconds) for every distinct width. Rounding the width
    up to a power of two (>= 16) keeps it to one or two compiled versions; shorter ids are
    NUL-padded either way, exactly as in ranx. Falls back to the public constructor if
    ranx's internals move.
    """
    try:
        import numpy as np
        from numba.typed import List
        from ranx.data_structures.common import create_and_sort
    except ImportError:  # pragma: no cover - other ranx layout
        return cls(dict(data), name=name) if cls.__name__ == "Run" else cls(dict(data))
    width = 16
    while width < max(len(d) for docs in data.values() for d in docs):
        width *= 2
    table = create_and_sort(
        List(list(data)),
        List([np.array(list(docs), dtype=f"<U{width}") for docs in data.values()]),
        List([np.array(list(docs.values()), dtype=dtype) for docs in data.values()]))
    obj = cls()
    setattr(obj, "run" if cls.__name__ == "Run" else "qrels", table)
    obj.sorted = True
    obj.name = name
    return obj


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """numba warns about a uint64->int64 cast in ranx's docid hashing; it is harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: str | Iterable[str] = DEFAULT_METRICS,
) -> tuple[dict[str, float], dict[str, dict[str, float]], int]:
    """Score ``run`` against ``qrels`` with trec_eval ``-c`` semantics.

    Returns ``(means, per_query, missing)``: ``means[metric]`` is the mean over every judged
    query, ``per_query[metric][qid]`` covers exactly the judged queries (those missing from
    the run with 0.0, so paired significance tests line up), and ``missing`` counts the
    judged queries absent from the run. See the module docstring for the exact semantics.
    """
    names = parse_metrics(metrics)
    ranx = import_ranx()
    judged = _judged(qrels)
    rr, missing = _ranx_run(ranx, judged, run)
    with _quiet():
        ranx.evaluate(_build(ranx.Qrels, judged, int), rr, names, return_mean=False,
                      make_comparable=True)
    per_query = {m: {str(q): float(v) for q, v in rr.scores[m].items()} for m in names}
    means = {m: math.fsum(per_query[m].values()) / len(judged) for m in names}
    return means, per_query, missing


def compare_runs(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    test: str = "ttest",
    max_p: float = MAX_P,
) -> tuple[Any, dict[str, int]]:
    """``ranx.compare`` over named runs (same preparation as :func:`evaluate_run`).

    Returns the ranx ``Report`` (``str(report)`` is the table with significance superscripts:
    a letter marks a run this row beats at ``p < max_p``) and the missing-query count per run.
    ``test`` is ``"ttest"`` (two-sided paired Student t-test) or ``"fisher"`` (randomisation
    test, ranx's 1,000 permutations with its fixed seed, so reruns agree).
    """
    if test not in STAT_TESTS:
        raise UsageError(f"unknown test {test!r}; choose from {', '.join(STAT_TESTS)}")
    names = parse_metrics(metrics)
    ranx = import_ranx()
    judged = _judged(qrels)
    prepared, missing = [], {}
    for name, run in runs.items():
        rr, missing[name] = _ranx_run(ranx, judged, run, name=name)
        prepared.append(rr)
    with _quiet():
        report = ranx.compare(_build(ranx.Qrels, judged, int), prepared, names,
                              stat_test=STAT_TESTS[test], max_p=max_p, make_comparable=True,
                              rounding_digits=4)
    return report, missing


# --------------------------------------------------------------------------- CLI


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench evaluate`` on ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "evaluate", help="score TREC run files against qrels (trec_eval -c semantics)",
        description="Score a TREC run against qrels (TREC or BEIR TSV) with ranx, matching "
        "trec_eval -c: judged queries missing from the run count as 0. With --compare, a "
        "ranx comparison table with paired significance tests.",
        epilog="Example: bench evaluate --qrels test.tsv --run bm25.trec --compare student.trec")
    p.add_argument("--qrels", required=True, type=Path, metavar="Q",
                   help="qrels: 'qid iter docid rel' (TREC) or BEIR TSV with a header")
    p.add_argument("--run", required=True, type=Path, metavar="R",
                   help="run: 'qid Q0 docid rank score tag' (TREC)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help="comma-separated: ndcg@k, mrr@k, recall@k, map@k, precision@k "
                   f"(default {','.join(DEFAULT_METRICS)})")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--compare", nargs="+", type=Path, default=[], metavar="R2",
                   help="more runs: print ranx's comparison table with significance markers")
    p.add_argument("--test", choices=tuple(STAT_TESTS), default=None,
                   help=f"paired test for --compare, only with it (p < {MAX_P:g}; default "
                   "ttest)")
    return p


def _display_names(paths: Sequence[Path]) -> list[str]:
    """File names; the paths as given where two files share a name; numbered if still equal
    (ranx's table needs distinct names)."""
    for names in ([p.name for p in paths], [str(p) for p in paths]):
        if len(set(names)) == len(names):
            return names
    return [f"{p} ({i})" for i, p in enumerate(paths, start=1)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``bench evaluate``; bad input raises :class:`UsageError` (exit 2 in the CLI)."""
    _check_flag_combinations(args)
    metrics = parse_metrics(args.metrics)
    qrels = read_qrels(args.qrels)
    paths = [args.run, *args.compare]
    runs: dict[str, RunDict] = {}
    for path, name in zip(paths, _display_names(paths), strict=True):
        run = read_run(path)
        if not qrels.keys() & run.keys():
            raise UsageError(f"{path}: none of its {len(run)} query ids appears in {args.qrels}; "
                             "check that the run and the qrels are for the same queries")
        runs[name] = run
    unjudged = {n: len(r.keys() - qrels.keys()) for n, r in runs.items()}

    if args.compare:
        stat_test = args.test or "ttest"
        report, missing = compare_runs(qrels, runs, metrics, test=stat_test)
        if args.json:
            data = _jsonable(report.to_dict())
            data.update(max_p=MAX_P, judged_queries=len(qrels), missing_queries=missing)
            print(json.dumps(data, indent=2))
            return 0
        print(report)
        test = "paired t-test" if stat_test == "ttest" else "Fisher randomization test"
        print(f"\nsuperscript letters: the row is significantly better than those rows "
              f"(two-sided {test}, p < {MAX_P:g}) over {len(qrels)} judged queries")
        for name in runs:
            _print_notes(name, len(qrels), missing[name], unjudged[name])
        return 0

    name = next(iter(runs))
    means, _, missing_n = evaluate_run(qrels, runs[name], metrics)
    if args.json:
        print(json.dumps({**means, "missing_queries": missing_n}, indent=2))
        return 0
    width = max(len(m) for m in metrics)
    print(f"{name}: {len(qrels)} judged queries in {args.qrels}")
    for m in metrics:
        print(f"  {m:<{width}}  {means[m]:.4f}")
    _print_notes(name, len(qrels), missing_n, unjudged[name])
    return 0


#: flags that only mean something together with another one: flag -> (needs, what it does).
#: Given alone they would be silently ignored, so the combination is checked up front.
_NEEDS = {"test": ("compare", "picks the significance test between the runs of --compare")}


def _check_flag_combinations(args: argparse.Namespace) -> None:
    for flag, (needs, what) in _NEEDS.items():
        if getattr(args, flag, None) is not None and not getattr(args, needs, None):
            raise UsageError(f"--{flag} only applies with --{needs} (it {what}); add "
                             f"--{needs} R2 ... or drop --{flag}")


def _print_notes(name: str, judged: int, missing: int, unjudged: int) -> None:
    if missing:
        print(f"{name}: {missing} of {judged} judged queries are missing from the run and "
              "count as 0 (trec_eval -c)")
    if unjudged:
        print(f"{name}: {unjudged} run queries have no judgments and are ignored")
