"""The ``specbench`` leaderboard's plots (the suite's ``plot`` hook).

:func:`spec_bench_plots` returns the paths of both: the shared speedup-vs-tau scatter
(:func:`bench.core.plots.speedup_vs_tau`) and, where records carry the tau curve
(``config.tau_curve``, :mod:`bench.specdec.curve`), :func:`tau_vs_steps`: tau against
training steps, one line per (method, model), the seed mean with sample-std error bars
where there are several seeds. Both are deterministic PNGs (:func:`bench.core.plots.save_png`:
no run-dependent metadata, rewritten only when the bytes change).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def spec_bench_plots(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                     ) -> list[Path]:
    """Speedup vs tau, then tau vs training steps (none without a curve)."""
    from bench.core.plots import speedup_vs_tau

    return [*speedup_vs_tau(records, out_dir), *tau_vs_steps(records, out_dir)]


def curve_lines(records: Sequence[dict[str, Any]]
                ) -> dict[tuple[str, str, str], list[tuple[int, float, float | None]]]:
    """(row method, model, dataset id) -> [(steps, seed-mean tau, sample std or None)],
    by steps, from the records' ``tau_curve`` (a point's ``tau``: the mean over items)."""
    from bench.core.leaderboard import mean_std, row_method

    taus: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for r in records:
        for point in r["config"].get("tau_curve") or ():
            key = (row_method(r), r["model"], r["dataset"]["id"])
            taus.setdefault(key, {}).setdefault(int(point["steps"]), []).append(
                float(point["tau"]))
    return {key: [(n, *mean_std(values)) for n, values in sorted(by_step.items())]
            for key, by_step in sorted(taus.items())}


def tau_vs_steps(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                 ) -> list[Path]:
    """``<suite>_tau_vs_steps.png`` per suite whose records have a tau curve (nothing
    written otherwise): x training steps (log scale: the default points are ~2.5x apart),
    y tau; the dataset is named in a line's label only when curves of several datasets
    are shown."""
    from bench.core.plots import save_png
    from bench.core.results import slug

    paths = []
    for suite in sorted({r["suite"] for r in records}):
        lines = curve_lines([r for r in records if r["suite"] == suite])
        if not lines:
            continue
        several = len({key[2] for key in lines}) > 1

        def draw(fig: Any, lines: Any = lines, several: bool = several,
                 suite: str = suite) -> None:
            ax = fig.add_subplot()
            for i, ((method, model, dataset), points) in enumerate(lines.items()):
                label = f"{method} / {model}" + (f" / {dataset}" if several else "")
                xs = [p[0] for p in points]
                ys = [p[1] for p in points]
                errors = [p[2] or 0.0 for p in points]
                ax.errorbar(xs, ys, yerr=errors if any(errors) else None, fmt="-o",
                            color=f"C{i % 10}", capsize=3, markersize=4,
                            label=label.replace("$", r"\$"))
            ax.set_xscale("log")
            ax.set_xlabel("training steps (optimizer steps of the head)")
            ax.set_ylabel("tau: tokens per target forward pass")
            ax.set_title(f"{suite}: tau against training steps (mean over seeds, bars: "
                         "sample std)".replace("$", r"\$"))
            ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
            ax.legend(fontsize="small", loc="lower right")
            fig.tight_layout()

        paths.append(save_png(draw, Path(out_dir) / f"{slug(suite)}_tau_vs_steps.png",
                              size=(8.0, 5.0)))
    return paths
