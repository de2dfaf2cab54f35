"""``bench compare``: several methods (and seeds) on one suite against a baseline.

Uses the leaderboard's conventions (rows, seeds, baseline row, paired test on per-item
scores averaged over seeds); see :mod:`bench.core.leaderboard` for them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.core.leaderboard import (
    CORRECTION_NAMES,
    MARK,
    TEST_NAMES,
    cell_stat,
    cell_text,
    check_test,
    escape_md,
    fmt,
    fmt_mde,
    fmt_p,
    group_rows,
    main_metrics,
    markdown_table,
    row_method,
    seed_mean_items,
)
from bench.core.stats import adjust
from bench.errors import UsageError


def compare_data(records: list[dict[str, Any]], *, methods: list[str], baseline: str,
                 metric: str | None = None, dataset: str | None = None,
                 models: list[str] | None = None, test: str = "auto",
                 alpha: float = 0.05, correction: str = "holm",
                 power_delta: float | None = None,
                 paired_model: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Rows behind :func:`compare` as JSON-safe dicts (NaN/absent values are ``None``)."""
    check_test(test)
    if not records:
        raise UsageError("no results to compare; run `bench run` first or point at the results "
                         "directory")
    suites = sorted({r["suite"] for r in records})
    if len(suites) > 1:
        raise UsageError(f"results span suites {', '.join(suites)}; compare one suite at a time")
    if dataset is not None:
        known = sorted({r["dataset"]["id"] for r in records})
        if dataset not in known:
            raise UsageError(f"no results on dataset {dataset!r}; available: {', '.join(known)}")
        records = [r for r in records if r["dataset"]["id"] == dataset]
    if models:
        records = _only_models(records, models)
    # Within one preset (``bench compare`` picks one) methods go by their plain names; across
    # presets by the leaderboard's row names, e.g. "dear-p [cpu-long]".
    name = row_method if len({r.get("preset", "default") for r in records}) > 1 \
        else (lambda r: r["method"])
    available = sorted({name(r) for r in records})
    wanted = [baseline] + [m for m in dict.fromkeys(methods) if m != baseline]
    for m in wanted:
        if m not in available:
            close = difflib.get_close_matches(m, available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"no results for method {m!r}; {hint}run `bench run --method {m} "
                             f"--suite {suites[0]}` first (methods with results: "
                             f"{', '.join(available)})")
    records = [r for r in records if name(r) in wanted]
    if metric is not None:
        for r in records:
            if metric not in r["metrics"]:
                raise UsageError(f"metric {metric!r} is missing from results of method "
                                 f"{r['method']!r} on {r['dataset']['id']!r}; available: "
                                 f"{', '.join(sorted(r['metrics']))}")
    groups, mains = group_rows(records, name), main_metrics(records)
    order = {m: i for i, m in enumerate(wanted)}
    rows = []
    for key in sorted(groups, key=lambda k: (k[2], order[k[0]], k[1])):
        name = metric or mains[key[2]]
        s = cell_stat(groups, key, name, baseline, test, paired_model)
        assert s is not None  # the metric is present in every record (checked above)
        info = groups[key][0]["dataset"]
        rows.append({"suite": suites[0], "dataset": key[2], "offline_stand_in":
                     info["offline_stand_in"], "method": key[0], "model": key[1],
                     "metric": name, "mean": s.mean, "std": s.std, "n_seeds": len(s.seeds),
                     "seeds": list(s.seeds), "baseline": s.base[0] if s.base else baseline,
                     "baseline_model": s.base[1] if s.base else None, "delta": s.delta,
                     "test": s.test or test, "n_items": s.n_items, "p_value": s.p_value,
                     "mde": s.mde if s.mde is None or math.isfinite(s.mde) else None,
                     "detectable": bool(s.mde is not None and math.isfinite(s.mde)
                                        and s.delta is not None and abs(s.delta) >= s.mde),
                     "_stat": s, "_groups": groups})
    tested = [i for i, r in enumerate(rows) if r["p_value"] is not None]
    adjusted = adjust([rows[i]["p_value"] for i in tested], correction)
    for r in rows:
        r["p_adjusted"], r["correction"] = None, correction
    for i, p in zip(tested, adjusted, strict=True):
        rows[i]["p_adjusted"] = p
    for r in rows:
        p = r["p_adjusted"]
        r["significant"] = p is not None and p < alpha
        s, groups_ = r.pop("_stat"), r.pop("_groups")
        if power_delta is not None:
            r["power"] = _power_plan(groups_, s, power_delta, alpha)
    return rows


def _only_models(records: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """The records of ``models`` (exact names); a name without results is a usage error."""
    known = sorted({r["model"] for r in records})
    for m in models:
        if m not in known:
            close = difflib.get_close_matches(m, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"--models: no results for model {m!r}; {hint}models with "
                             f"results: {', '.join(known)}")
    return [r for r in records if r["model"] in models]


def _power_plan(groups: dict[Any, list[dict[str, Any]]], s: Any, delta: float,
                alpha: float) -> dict[str, Any]:
    """How many items (paired, one run each) and how many seeds per system (Welch on seed
    means) would detect ``delta`` with power 0.8, from this comparison's observed spread."""
    from bench.core.stats import items_needed, paired_arrays, seeds_needed

    if s.base is None or s.base == s.key:
        return {"delta": delta, "items": None, "seeds": None, "why": "the baseline row itself"}
    recs, brecs = groups[s.key], groups[s.base]
    x, y = paired_arrays(seed_mean_items(recs, s.metric), seed_mean_items(brecs, s.metric))
    sd_items = float((x - y).std(ddof=1)) if len(x) > 1 else 0.0
    sds = [float(np.std([r["metrics"][s.metric] for r in rr], ddof=1)) if len(rr) > 1 else None
           for rr in (recs, brecs)]
    out: dict[str, Any] = {"delta": delta,
                           "items": items_needed(delta, sd_items, alpha=alpha) if sd_items > 0
                           else None}
    if any(sd is not None for sd in sds):
        known = [sd for sd in sds if sd is not None]
        sd_a, sd_b = (sds[0] if sds[0] is not None else max(known),
                      sds[1] if sds[1] is not None else max(known))
        out["seeds"] = seeds_needed(delta, sd_a, sd_b, alpha=alpha)
        out["why"] = ("seed spread of the side with one run taken as the other's"
                      if None in sds else "")
    else:
        out["seeds"] = None
        out["why"] = "one seed per system: the seed-to-seed spread is unknown; run >= 2 seeds"
    return out


def compare(records: list[dict[str, Any]], *, methods: list[str], baseline: str,
            metric: str | None = None, dataset: str | None = None,
            models: list[str] | None = None, test: str = "auto",
            alpha: float = 0.05, correction: str = "holm",
            power_delta: float | None = None,
            paired_model: Callable[[str], str] | None = None) -> str:
    """Markdown table for ``bench compare``: each method against ``baseline`` per dataset."""
    data = compare_data(records, methods=methods, baseline=baseline, metric=metric,
                        dataset=dataset, models=models, test=test, alpha=alpha, correction=correction,
                        power_delta=power_delta, paired_model=paired_model)
    body = []
    for d in data:
        ds = escape_md(d["dataset"]) + (" (offline stand-in)" if d["offline_stand_in"] else "")
        below = d["delta"] is not None and d["p_value"] is not None and not d["detectable"]
        row = [ds, escape_md(d["method"]), escape_md(d["model"]), escape_md(d["metric"]),
               cell_text(d["mean"], d["std"]), str(d["n_seeds"]),
               fmt(d["delta"], signed=True) + (" ‡" if below else ""), fmt_p(d["p_value"]),
               fmt_p(d["p_adjusted"]), fmt_mde(d["mde"] if d["mde"] is not None else
                                               (float("inf") if d["p_value"] is not None
                                                else None)),
               MARK if d["significant"] else "", escape_md(d["test"])]
        if power_delta is not None:
            plan = d["power"]
            row.append("—" if plan["items"] is None else str(plan["items"]))
            row.append("—" if plan["seeds"] is None else str(plan["seeds"]))
        body.append(row)
    hdr = ["Dataset", "Method", "Model", "Metric", "Mean ± std", "Seeds",
           f"Δ vs {escape_md(baseline)}", "p", "p adj.", "MDE", "Sig.", "Test"]
    if power_delta is not None:
        hdr += [f"items for Δ={power_delta:g}", f"seeds for Δ={power_delta:g}"]
    legend = (f"{MARK} p < {alpha:g} after {CORRECTION_NAMES[correction]} correction over the "
              f"{sum(d['p_value'] is not None for d in data)} tests: two-sided "
              f"{TEST_NAMES[test]}, against the baseline row of the same dataset (same model "
              "where it ran, else the model the suite pairs it with, else its only model). "
              "MDE: smallest |Δ| the test detects with power 0.8 (∞: too few items or seeds); ‡: |Δ| below it (detected less than 80% "
              "of the time). p n/a: no per-item scores or no unique baseline row.")
    if power_delta is not None:
        legend += (f" Items / seeds for Δ={power_delta:g}: paired t on that many items (one "
                   "run each), or Welch t on that many seeds per system, from the observed "
                   "spread, at power 0.8; —: not estimable from these results.")
    return "\n".join([*markdown_table(hdr, body, 4), "", legend]) + "\n"
