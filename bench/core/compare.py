"""``bench compare``: several methods (and seeds) on one suite against a baseline.

Uses the leaderboard's conventions (rows, seeds, baseline row, paired test on per-item
scores averaged over seeds); see :mod:`bench.core.leaderboard` for them.
"""

from __future__ import annotations

import difflib
from typing import Any

from bench.core.leaderboard import (
    MARK,
    TEST_NAMES,
    cell_stat,
    cell_text,
    check_test,
    escape_md,
    fmt,
    fmt_p,
    group_rows,
    main_metrics,
    markdown_table,
    row_method,
)
from bench.errors import UsageError


def compare_data(records: list[dict[str, Any]], *, methods: list[str], baseline: str,
                 metric: str | None = None, dataset: str | None = None, test: str = "ttest",
                 alpha: float = 0.05) -> list[dict[str, Any]]:
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
        s = cell_stat(groups, key, name, baseline, test)
        assert s is not None  # the metric is present in every record (checked above)
        info = groups[key][0]["dataset"]
        rows.append({"suite": suites[0], "dataset": key[2], "offline_stand_in":
                     info["offline_stand_in"], "method": key[0], "model": key[1],
                     "metric": name, "mean": s.mean, "std": s.std, "n_seeds": len(s.seeds),
                     "seeds": list(s.seeds), "baseline": s.base[0] if s.base else baseline,
                     "baseline_model": s.base[1] if s.base else None, "delta": s.delta,
                     "test": test, "n_items": s.n_items, "p_value": s.p_value,
                     "significant": s.significant(alpha)})
    return rows


def compare(records: list[dict[str, Any]], *, methods: list[str], baseline: str,
            metric: str | None = None, dataset: str | None = None, test: str = "ttest",
            alpha: float = 0.05) -> str:
    """Markdown table for ``bench compare``: each method against ``baseline`` per dataset."""
    data = compare_data(records, methods=methods, baseline=baseline, metric=metric,
                        dataset=dataset, test=test, alpha=alpha)
    body = []
    for d in data:
        ds = escape_md(d["dataset"]) + (" (offline stand-in)" if d["offline_stand_in"] else "")
        body.append([ds, escape_md(d["method"]), escape_md(d["model"]), escape_md(d["metric"]),
                     cell_text(d["mean"], d["std"]), str(d["n_seeds"]),
                     fmt(d["delta"], signed=True), fmt_p(d["p_value"]),
                     MARK if d["significant"] else ""])
    hdr = ["Dataset", "Method", "Model", "Metric", "Mean ± std", "Seeds",
           f"Δ vs {escape_md(baseline)}", "p", ""]
    legend = (f"{MARK} p < {alpha:g}, two-sided {TEST_NAMES[test]} on per-item scores (averaged "
              "over seeds) against the baseline row of the same dataset (same model where it "
              "ran, else its only model); p n/a: no per-item scores or no unique baseline row.")
    return "\n".join([*markdown_table(hdr, body, 4), "", legend]) + "\n"
