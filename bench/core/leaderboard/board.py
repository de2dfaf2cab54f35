"""The statistics of one suite's table: records grouped into rows and cells, each cell
tested against its baseline row, the p-values corrected together (see the conventions in
:mod:`bench.core.leaderboard`).

:func:`build_board` computes a suite's :class:`Board` once; :mod:`~bench.core.leaderboard.view`
and :mod:`~bench.core.leaderboard.index` only format it. :func:`group_rows`,
:func:`cell_stat` and the rest are shared with ``bench compare`` (:mod:`bench.core.compare`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.core.stats import TESTS, adjust, compare
from bench.errors import UsageError

TEST_NAMES = {
    "auto": "test chosen per cell (Welch t on seed means when a side has several training "
            "seeds; else item-paired: exact sign-flip up to 16 items, paired t beyond)",
    "ttest": "paired t-test on items, seeds averaged (scipy.stats.ttest_rel)",
    "permutation": "sign-flip permutation test on items (exact up to 16 items, else 10,000 "
                   "resamples, seed 0)",
    "randomization": "sign-flip permutation test on items (exact up to 16 items, else "
                     "10,000 resamples, seed 0)",
    "bootstrap": "paired bootstrap test on items (10,000 resamples, seed 0; sign-flip "
                 "permutation below 30 items)",
}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}
Key = tuple[str, str, str]  # (method, model, dataset id)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def row_method(record: dict[str, Any]) -> str:
    """The method as a leaderboard row names it: a non-default preset is part of the name, so
    a ``cpu-long`` run sits beside the default one instead of colliding with it."""
    preset = record.get("preset", "default")
    return record["method"] if preset == "default" else f"{record['method']} [{preset}]"


def group_rows(records: Iterable[dict[str, Any]],
           name: Callable[[dict[str, Any]], str] = row_method
           ) -> dict[Key, list[dict[str, Any]]]:
    groups: dict[Key, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((name(r), r["model"], r["dataset"]["id"]), []).append(r)
    for key, recs in groups.items():
        recs.sort(key=lambda r: r["seed"])
        seeds = [r["seed"] for r in recs]
        dup = next((a for a, b in zip(seeds, seeds[1:], strict=False) if a == b), None)
        if dup is not None:
            raise UsageError(f"two results for method {key[0]!r}, model {key[1]!r}, dataset "
                             f"{key[2]!r} share seed {dup}; delete one of the files")
    return dict(sorted(groups.items()))


def main_metrics(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    mains: dict[str, set[str]] = {}
    for r in records:
        mains.setdefault(r["dataset"]["id"], set()).add(r["main_score"])
    for ds, names in mains.items():
        if len(names) > 1:
            raise UsageError(f"results for dataset {ds!r} disagree on main_score "
                             f"({', '.join(sorted(names))}); re-run them with one suite version")
    return {ds: next(iter(names)) for ds, names in sorted(mains.items())}


def seed_mean_items(recs: Sequence[dict[str, Any]], metric: str) -> dict[str, float]:
    """Per-item scores of ``metric``, each averaged over the seeds that have the item."""
    acc: dict[str, list[float]] = {}
    for r in recs:
        for item, v in r["per_item"].get(metric, {}).items():
            acc.setdefault(item, []).append(v)
    return {i: math.fsum(v) / len(v) for i, v in sorted(acc.items())}


PairedModel = Callable[[str], str]


def baseline_row(rows: Iterable[tuple[str, str]], baseline: str | None, row: str,
                 model: str, paired_model: PairedModel | None = None
                 ) -> tuple[str, str] | None:
    """The (method, model) row that ``row`` with ``model`` is measured against, among
    ``rows``: the baseline run at the row's own preset where there is one (``cot-sft
    [cpu-long]`` for ``skip-thinking [cpu-long]``), else the default baseline; within it the
    same model if the baseline ran with it, else the model the suite pairs ``model`` with
    (``paired_model``, its metadata's ``baseline_model``: specbench's plain decoding of the
    same target in the same dtype), else the baseline's only model, else None (several
    models and none matches: no test rather than pick one, e.g. DPO's sweep)."""
    if baseline is None:
        return None
    rows = list(rows)
    preset = re.fullmatch(r".+ (\[[^\]]+\])", row)
    wanted = [model] + ([paired_model(model)] if paired_model is not None else [])
    for name in ([f"{baseline} {preset.group(1)}"] if preset else []) + [baseline]:
        cands = [r for r in rows if r[0] == name]
        for m in wanted:
            if (name, m) in cands:
                return (name, m)
        if cands:
            return cands[0] if len(cands) == 1 else None
    return None


def baseline_rows(rows: Iterable[tuple[str, str]], baseline: str | None,
                  paired_model: PairedModel | None = None) -> set[tuple[str, str]]:
    """The rows some other method's row is measured against (:func:`baseline_row`): the
    rows marked "(baseline)". A baseline-method row that no other row refers to (one point
    of DPO's sweep) is not marked; with no other method, every baseline row is."""
    if baseline is None:
        return set()
    rows = list(rows)

    def of_baseline(method: str) -> bool:
        return re.fullmatch(rf"{re.escape(baseline)}( \[[^\]]+\])?", method) is not None

    found = {baseline_row(rows, baseline, m, model, paired_model) for m, model in rows
             if not of_baseline(m)} - {None}
    return found or {r for r in rows if of_baseline(r[0])}  # type: ignore[return-value]


def _pick_baseline(groups: dict[Key, Any], baseline: str | None, row: str, model: str,
                   dataset: str, paired_model: PairedModel | None = None) -> Key | None:
    """:func:`baseline_row` among the rows with results on ``dataset``."""
    found = baseline_row([k[:2] for k in groups if k[2] == dataset], baseline, row, model,
                         paired_model)
    return None if found is None else (*found, dataset)


@dataclass(frozen=True)
class CellStat:
    """One (method, model, dataset) over seeds, compared with its baseline row."""

    key: Key
    metric: str
    mean: float
    std: float | None
    seeds: tuple[int, ...]
    base: Key | None
    delta: float | None
    p_value: float | None
    n_items: int
    test: str = ""  # the test actually run
    mde: float | None = None  # minimum detectable |delta| of that test (inf: none)
    p_adjusted: float | None = None  # corrected within the table

    @property
    def p_shown(self) -> float | None:
        """The p-value the tables show: corrected within its table when it was."""
        return self.p_adjusted if self.p_adjusted is not None else self.p_value

    def significant(self, alpha: float) -> bool:
        return self.p_shown is not None and self.p_shown < alpha

    @property
    def below_mde(self) -> bool:
        return self.delta is not None and self.mde is not None and abs(self.delta) < self.mde


def cell_stat(groups: dict[Key, list[dict[str, Any]]], key: Key, metric: str, baseline: str | None,
          test: str, paired_model: PairedModel | None = None) -> CellStat | None:
    recs = [r for r in groups[key] if metric in r["metrics"]]
    if not recs:
        return None
    mean, std = mean_std([r["metrics"][metric] for r in recs])
    base = _pick_baseline(groups, baseline, key[0], key[1], key[2], paired_model)
    delta = p = mde = None
    n_items, name = 0, ""
    if base is not None:
        brecs = [r for r in groups[base] if metric in r["metrics"]]
        if brecs:
            delta = mean - mean_std([r["metrics"][metric] for r in brecs])[0]
        if base != key and key[0] != baseline:
            a = [r["per_item"].get(metric, {}) for r in recs]
            b = [r["per_item"].get(metric, {}) for r in brecs]
            if all(a) and all(b):
                res = compare(a, b, test=test)
                n_items, name = res.n_items, res.test
                p = res.p_value if math.isfinite(res.p_value) else None
                mde = res.mde
    return CellStat(key, metric, mean, std, tuple(r["seed"] for r in recs), base, delta, p,
                    n_items, name, mde)


def check_test(test: str) -> None:
    if test not in TESTS:
        raise UsageError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")


def strip_limit(dataset_id: str) -> str:
    """The declared dataset a ``--limit`` run's id stands for (``x@limit10`` -> ``x``)."""
    return re.sub(r"@limit\d+$", "", dataset_id)


@dataclass
class Board:
    """Everything computed for one suite; formatted by
    :func:`~bench.core.leaderboard.view.suite_view` and the index."""

    records: list[dict[str, Any]]
    groups: dict[Key, list[dict[str, Any]]]
    mains: dict[str, str]
    stats: dict[Key, CellStat]
    rows: list[tuple[str, str]]
    row_mean: dict[tuple[str, str], float | None]
    row_recs: dict[tuple[str, str], list[dict[str, Any]]]
    ds_info: dict[str, dict[str, Any]]  # id -> the dataset block of its first record
    higher_is_better: bool = True  # the main score's direction (rows rank best first)
    paired_model: PairedModel | None = None  # see baseline_row


def build_board(suite: str, records: Sequence[dict[str, Any]], baseline: str | None,
                test: str, correction: str = "holm", higher_is_better: bool = True,
                paired_model: PairedModel | None = None) -> Board:
    """The :class:`Board` of ``suite`` (records of other suites are ignored): cells tested
    with ``test`` against ``baseline``, p-values corrected together with ``correction``,
    rows ranked (the baseline first, then best mean first: highest, or lowest when not
    ``higher_is_better``; rows without one last)."""
    check_test(test)
    recs = [r for r in records if r["suite"] == suite]
    if not recs:
        raise UsageError(f"no results for suite {suite!r}; run `bench run --suite {suite}` first")
    groups, mains = group_rows(recs), main_metrics(recs)
    stats = {k: s for k in groups
             if (s := cell_stat(groups, k, mains[k[2]], baseline, test, paired_model))}
    tested = [k for k in sorted(stats) if stats[k].p_value is not None]
    for k, p in zip(tested, adjust([stats[k].p_value for k in tested], correction),
                    strict=True):
        stats[k] = replace(stats[k], p_adjusted=p)
    rows = sorted({(k[0], k[1]) for k in groups})
    row_mean: dict[tuple[str, str], float | None] = {}
    for row in rows:
        cells = [stats.get((*row, ds)) for ds in mains]
        row_mean[row] = (math.fsum(c.mean for c in cells if c) / len(cells)
                         if all(cells) else None)
    sign = -1.0 if higher_is_better else 1.0
    rows.sort(key=lambda r: (r[0] != baseline, row_mean[r] is None,
                             sign * (row_mean[r] or 0.0), r))
    row_recs = {row: [r for k, v in groups.items() if k[:2] == row for r in v] for row in rows}
    ds_info = {ds: next(r["dataset"] for r in recs if r["dataset"]["id"] == ds) for ds in mains}
    return Board(recs, groups, mains, stats, rows, row_mean, row_recs, ds_info,
                 higher_is_better, paired_model)
