"""Retrieval leaderboard section: each distilled DeAR row against its undistilled student.

The main table tests every row against BM25; DeAR's issue also asks whether distillation
beat the student it started from. :func:`undistilled_tables` (the retrieval suites'
``sections`` hook) pairs ``dear-p`` and ``dear-l`` with the ``dear-student-init`` row of
the same preset, model and dataset, and reports the nDCG@10 difference with the same
seed-aware test as the main table (:func:`bench.core.stats.compare`: Welch's t on seed
means when a side has several training seeds, else item-paired), Holm-corrected over the
section's tests, with each test's minimum detectable effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DISTILLED = ("dear-p", "dear-l")
UNDISTILLED = "dear-student-init"


def undistilled_tables(records: Sequence[dict[str, Any]], *, test: str = "auto",
                       alpha: float = 0.05, correction: str = "holm") -> list[str]:
    """Markdown lines: one row per (distilled row, dataset) with a matching undistilled row."""
    from bench.core.leaderboard import CORRECTION_NAMES, escape_md, row_method
    from bench.core.leaderboard.tables import fmt_mde, fmt_p
    from bench.core.stats import adjust, compare

    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["method"] in (*DISTILLED, UNDISTILLED):
            key = (r["method"], r["preset"], r["model"], r["dataset"]["id"])
            groups.setdefault(key, []).append(r)

    def order(key: tuple[str, str, str, str]) -> tuple[Any, ...]:
        method, preset, model, dataset = key
        return (preset != "default", preset, model, dataset, method not in DISTILLED,
                DISTILLED.index(method) if method in DISTILLED else 0)

    found = []
    for (method, preset, model, dataset) in sorted(groups, key=order):
        mine = groups[(method, preset, model, dataset)]
        base = groups.get((UNDISTILLED, preset, model, dataset))
        if method == UNDISTILLED or not base:
            continue
        metric = mine[0]["main_score"]
        res = compare([r["per_item"][metric] for r in mine],
                      [r["per_item"][metric] for r in base], test=test, alpha=alpha)
        found.append((mine[0], model, dataset, res))
    if not found:
        return []
    tested = [i for i, (*_, res) in enumerate(found) if math.isfinite(res.p_value)]
    adjusted = dict(zip(tested, adjust([found[i][3].p_value for i in tested], correction),
                        strict=True))
    rows = []
    for i, (first, model, dataset, res) in enumerate(found):
        p_adj = adjusted.get(i)
        mark = " †" if p_adj is not None and p_adj < alpha else ""
        rows.append(f"| {escape_md(row_method(first))} | {escape_md(model)} | "
                    f"{escape_md(dataset)} | {res.mean_a:.4f}{mark} | {res.mean_b:.4f} | "
                    f"{res.delta:+.4f} | {fmt_p(res.p_value if i in adjusted else None)} | "
                    f"{fmt_p(p_adj)} | {fmt_mde(res.mde)} | {res.test} | "
                    f"{res.n_seeds[0]} / {res.n_seeds[1]} | {res.n_items} |")
    return ["## DeAR against its undistilled student", "",
            f"Each distilled row against `{UNDISTILLED}` of the same preset, model and "
            "dataset (the untrained student's score head is seeded too): two-sided test "
            "chosen as in the main table (Welch t on seed means when a side has several "
            "training seeds; else item-paired), p-values corrected together "
            f"({CORRECTION_NAMES[correction]}); † p < {alpha} after correction; MDE: the "
            "smallest |Δ| the test detects with power 0.8 (∞: none).",
            "", "| Method | Model | Dataset | distilled | undistilled | Δ | p | p adj. | MDE | "
            "Test | seeds | queries |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
            *rows]
