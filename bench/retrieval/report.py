"""Retrieval leaderboard section: each distilled DeAR row against its undistilled student.

The main table tests every row against BM25; DeAR's issue also asks whether distillation
beat the student it started from. :func:`undistilled_tables` (the retrieval suites'
``sections`` hook) pairs ``dear-p`` and ``dear-l`` with the ``dear-student-init`` row of
the same preset, model and dataset, and reports the nDCG@10 difference with the suite's
paired test on per-query scores (means over seeds, as in the main table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DISTILLED = ("dear-p", "dear-l")
UNDISTILLED = "dear-student-init"


def undistilled_tables(records: Sequence[dict[str, Any]], *, test: str = "ttest",
                       alpha: float = 0.05) -> list[str]:
    """Markdown lines: one row per (distilled row, dataset) with a matching undistilled row."""
    from bench.core.leaderboard import TEST_NAMES, escape_md, row_method, seed_mean_items
    from bench.core.stats import paired_test

    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["method"] in (*DISTILLED, UNDISTILLED):
            key = (r["method"], r["preset"], r["model"], r["dataset"]["id"])
            groups.setdefault(key, []).append(r)
    rows = []
    def order(key: tuple[str, str, str, str]) -> tuple[Any, ...]:
        method, preset, model, dataset = key
        return (preset != "default", preset, model, dataset, method not in DISTILLED,
                DISTILLED.index(method) if method in DISTILLED else 0)

    for (method, preset, model, dataset) in sorted(groups, key=order):
        mine = groups[(method, preset, model, dataset)]
        base = groups.get((UNDISTILLED, preset, model, dataset))
        if method == UNDISTILLED or not base:
            continue
        metric = mine[0]["main_score"]
        res = paired_test(seed_mean_items(mine, metric), seed_mean_items(base, metric), test=test)
        mark = " †" if res.p_value < alpha else ""
        p = "<0.0001" if res.p_value < 1e-4 else f"{res.p_value:.4f}"
        rows.append(f"| {escape_md(row_method(mine[0]))} | {escape_md(model)} | "
                    f"{escape_md(dataset)} | {res.mean_a:.4f}{mark} | {res.mean_b:.4f} | "
                    f"{res.delta:+.4f} | {p} | {res.n_items} |")
    if not rows:
        return []
    return ["## DeAR against its undistilled student", "",
            f"Each distilled row against `{UNDISTILLED}` of the same preset, model and "
            f"dataset: two-sided {TEST_NAMES.get(test, test)} on per-query main-score values "
            f"(means over seeds); † p < {alpha}.",
            "", "| Method | Model | Dataset | distilled | undistilled | Δ | p | queries |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |", *rows]
