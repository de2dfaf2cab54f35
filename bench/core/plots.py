"""Deterministic PNG plots for the leaderboards (matplotlib, imported lazily).

Leaderboards are committed and diffed, so a plot must not change bytes between runs on the
same inputs. We draw on a bare ``Figure`` with the Agg canvas (no pyplot, no global backend
switch), under matplotlib's default style (a user's matplotlibrc cannot leak in), drop the
PNG "Software" text chunk (matplotlib writes no timestamp for PNG), and write the file only
when its bytes differ. Same matplotlib and FreeType versions give byte-identical files;
other versions may differ by antialiasing, which is why the file is only rewritten on change.

A suite opts in with ``plot="bench.core.plots:main_score_bars"`` in its metadata; any callable
``(records, out_dir) -> list[Path]`` works.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.core.io import write_if_changed
from bench.core.leaderboard import group_rows, main_metrics, mean_std
from bench.core.results import slug

DPI = 100


def render_png(draw: Callable[[Any], None], *, size: tuple[float, float] = (8.0, 4.5)) -> bytes:
    """PNG bytes of a figure that ``draw(fig)`` fills, with no run-dependent metadata."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=size, dpi=DPI)
        FigureCanvasAgg(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def save_png(draw: Callable[[Any], None], path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Render with :func:`render_png` and write it only if the bytes changed."""
    write_if_changed(path, render_png(draw, **kwargs))
    return Path(path)


def _plain(text: str) -> str:
    return text.replace("$", r"\$")  # '$' would switch matplotlib to mathtext


def _grouped_bars(ax: Any, rows: Sequence[tuple[str, str]], categories: Sequence[str],
                  values: Callable[[tuple[str, str], str], list[float] | None]) -> float:
    """One bar per row within each category (mean over seeds, std error bars); max height."""
    width = 0.8 / max(len(rows), 1)
    top = 0.0
    for i, row in enumerate(rows):
        xs, ys, multi = [], [], []
        for j, category in enumerate(categories):
            vals = values(row, category)
            if vals:
                mean, std = mean_std(vals)
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(mean)
                if std is not None:  # error bars only where there are several seeds
                    multi.append((xs[-1], mean, std))
                top = max(top, mean + (std or 0.0))
        ax.bar(xs, ys, width, label=_plain(f"{row[0]} / {row[1]}"))
        if multi:
            ex, ey, ee = zip(*multi, strict=True)
            ax.errorbar(ex, ey, yerr=ee, fmt="none", ecolor="black", capsize=3)
    legend_rows = -(-len(rows) // 2)  # two legend columns; leave room above the bars
    ax.set_ylim(0, top * (1.15 + 0.08 * legend_rows) or 1.0)
    ax.set_xticks(range(len(categories)))
    ax.legend(fontsize="small", loc="upper left", ncol=min(2, max(len(rows), 1)))
    return top


def main_score_bars(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                    ) -> list[Path]:
    """Grouped bars: main score (mean over seeds, sample-std error bars) per row and dataset.

    Writes ``<suite>_main_score.png`` (one per suite present in ``records``) into ``out_dir``.
    """
    paths = []
    for suite in sorted({r["suite"] for r in records}):
        recs = [r for r in records if r["suite"] == suite]
        groups, mains = group_rows(recs), main_metrics(recs)
        datasets = list(mains)
        rows = sorted({k[:2] for k in groups})
        stand_in = {r["dataset"]["id"] for r in recs if r["dataset"]["offline_stand_in"]}

        def draw(fig: Any, groups: Any = groups, datasets: Any = datasets, rows: Any = rows,
                 stand_in: Any = stand_in, mains: Any = mains, suite: str = suite) -> None:
            ax = fig.add_subplot()
            _grouped_bars(ax, rows, datasets, lambda row, ds: [
                r["metrics"][mains[ds]] for r in groups.get((*row, ds), [])])
            ax.set_xticklabels([_plain(ds + ("\n(offline stand-in)" if ds in stand_in else ""))
                                for ds in datasets])
            ax.set_ylabel(_plain(", ".join(sorted(set(mains.values())))))
            ax.set_title(_plain(f"{suite}: main score per dataset"))
            fig.tight_layout()

        paths.append(save_png(draw, Path(out_dir) / f"{slug(suite)}_main_score.png"))
    return paths


SHOT_METRICS = ("top1", "top1_many", "top1_medium", "top1_few")


def shot_group_bars(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                    ) -> list[Path]:
    """Per dataset: top-1 overall / many / medium / few bars per method (mean over seeds).

    Writes ``<suite>_<dataset>_shots.png`` per dataset into ``out_dir``.
    """
    paths = []
    for (suite, dataset), recs in sorted(_by_suite_dataset(records).items()):
        groups = group_rows(recs)
        rows = sorted({k[:2] for k in groups})
        present = [m for m in SHOT_METRICS if any(m in r["metrics"] for r in recs)]
        stand_in = recs[0]["dataset"]["offline_stand_in"]

        def draw(fig: Any, groups: Any = groups, rows: Any = rows, present: Any = present,
                 title: str = f"{suite}: {dataset}" + (" (offline stand-in)" if stand_in
                                                       else "")) -> None:
            ax = fig.add_subplot()
            _grouped_bars(ax, rows, present, lambda row, metric: [
                r["metrics"][metric] for key, rs in groups.items() if key[:2] == row
                for r in rs if metric in r["metrics"]])
            ax.set_xticklabels([m.replace("top1_", "") if m != "top1" else "overall"
                                for m in present])
            ax.set_ylabel("top-1 accuracy")
            ax.set_title(_plain(title))
            fig.tight_layout()

        paths.append(save_png(draw, Path(out_dir) / f"{slug(suite)}_{slug(dataset)}_shots.png",
                              size=(9.0, 4.8)))
    return paths


def _by_suite_dataset(records: Sequence[dict[str, Any]]
                      ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["suite"], r["dataset"]["id"]), []).append(r)
    return out


def _point_labels(rows: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A label per (method, model, ...) row: the method, plus what sets the model apart when
    the method has several (DPO's sweep: ``dpo lr0.001`` beside ``dpo``), so that points of
    one method stay distinguishable on a plot."""
    models: dict[str, list[str]] = {}
    for row in rows:
        models.setdefault(row[0], []).append(row[1])
    labels = {}
    for row in rows:
        names = models[row[0]]
        common = os.path.commonprefix(names) if len(set(names)) > 1 else row[1]
        rest = row[1][len(common):].strip("-_ ")
        labels[row] = f"{row[0]} {rest}" if rest else row[0]
    return labels


def _tradeoff_scatter(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str], *,
                      x: str, y: str, x_label: str, y_label: str, suffix: str,
                      y_floor_one: bool = False) -> list[Path]:
    """Quality ``y`` against cost ``x``, one labelled point per row and dataset.

    Means over seeds with sample-std error bars when there are several seeds; the rows no
    other row beats on both axes (less ``x`` and more ``y``) are joined by a dashed line,
    the empirical frontier. Writes ``<suite>_<dataset>_<suffix>.png`` per dataset whose
    records have both metrics.
    """
    paths = []
    for (suite, dataset), recs in sorted(_by_suite_dataset(records).items()):
        recs = [r for r in recs if {x, y} <= set(r["metrics"])]
        if not recs:
            continue
        points = []
        groups = sorted(group_rows(recs).items())
        labels = _point_labels([row for row, _ in groups])
        for row, rs in groups:
            xm, xs = mean_std([r["metrics"][x] for r in rs])
            ym, ys = mean_std([r["metrics"][y] for r in rs])
            points.append((labels[row], xm, ym, xs, ys))
        frontier = sorted((p for p in points if not any(
            q[1] <= p[1] and q[2] >= p[2] and (q[1], q[2]) != (p[1], p[2]) for q in points)),
            key=lambda p: (p[1], -p[2], p[0]))
        stand_in = recs[0]["dataset"]["offline_stand_in"]

        def draw(fig: Any, points: Any = points, frontier: Any = frontier,
                 title: str = f"{suite}: {dataset}" + (" (offline stand-in)" if stand_in
                                                       else "")) -> None:
            import matplotlib

            ax = fig.add_subplot()
            # Past ten rows the default cycle repeats colours: tab20 keeps them distinct;
            # a preset row ("m [cpu-long]") is a square, so presets read apart at a glance.
            palette = matplotlib.colormaps["tab20"] if len(points) > 10 else None
            crowded = len(points) > 8  # then only the frontier is labelled on the plot
            for i, (method, xm, ym, xs, ys) in enumerate(points):
                color = palette(i % 20) if palette else f"C{i}"
                ax.errorbar([xm], [ym], xerr=None if xs is None else [xs],
                            yerr=None if ys is None else [ys],
                            fmt="s" if method.endswith("]") else "o",
                            color=color, capsize=3, label=_plain(method))
                if not crowded or any(p[0] == method for p in frontier):
                    ax.annotate(_plain(method), (xm, ym), textcoords="offset points",
                                xytext=(5, 4), fontsize="small", color=color)
            if len(frontier) > 1:
                ax.plot([p[1] for p in frontier], [p[2] for p in frontier], "--",
                        color="gray", linewidth=1, label="frontier")
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            if y_floor_one:
                ax.set_ylim(-0.02, max(1.0, max(p[2] for p in points) + 0.05))
            ax.set_title(_plain(title))
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()

        paths.append(save_png(draw, Path(out_dir)
                              / f"{slug(suite)}_{slug(dataset)}_{suffix}.png", size=(10.0, 5.0)))
    return paths


def reward_kl_frontier(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                       ) -> list[Path]:
    """``align``: gold reward against KL to the reference policy (nats per token), with the
    reward/KL frontier; ``<suite>_<dataset>_reward_kl.png`` per dataset."""
    return _tradeoff_scatter(records, out_dir, x="kl_to_ref", y="gold_reward",
                             x_label="KL to the reference policy (nats per token)",
                             y_label="gold reward", suffix="reward_kl")


def speedup_vs_tau(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                   ) -> list[Path]:
    """Speculative decoding: wall-time speedup against tau (tokens per target pass).

    One point per (method, dataset) with both metrics (means over seeds), coloured by
    method, one marker per dataset; points of the overall dataset (id ending in ``all``)
    are larger and labelled with their method; where the records have the sampling pass
    (``speedup_sampling``, ``tau_sampling``), its overall point is a hollow star of the same
    colour. A dashed line marks speedup 1 (plain decoding). Writes ``<suite>_speedup_vs_tau.png`` per suite into ``out_dir``.
    """
    paths = []
    for suite in sorted({r["suite"] for r in records}):
        recs = [r for r in records if r["suite"] == suite
                and {"speedup", "tau"} <= set(r["metrics"])]
        if not recs:
            continue
        groups = group_rows(recs)
        methods = sorted({k[0] for k in groups})
        datasets = sorted({k[2] for k in groups})
        stand_in = any(r["dataset"]["offline_stand_in"] for r in recs)

        def draw(fig: Any, groups: Any = groups, methods: Any = methods,
                 datasets: Any = datasets, title: str = f"{suite}: speedup vs tau"
                 + (" (offline stand-ins)" if stand_in else "")) -> None:
            ax = fig.add_subplot()
            markers = "osD^v<>phX"
            ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
            for (method, _model, dataset), rs in groups.items():
                color = f"C{methods.index(method) % 10}"
                tau = mean_std([r["metrics"]["tau"] for r in rs])[0]
                speed = mean_std([r["metrics"]["speedup"] for r in rs])[0]
                overall = dataset.endswith("all")
                ax.scatter([tau], [speed], color=color, s=90 if overall else 30,
                           marker="*" if overall else markers[datasets.index(dataset)
                                                              % len(markers)],
                           edgecolors="black" if overall else "none", zorder=3)
                if overall:
                    ax.annotate(_plain(method), (tau, speed), textcoords="offset points",
                                xytext=(6, 4), fontsize="small", color=color)
                    sampled = [r for r in rs if {"speedup_sampling", "tau_sampling"}
                               <= set(r["metrics"])]
                    if sampled:  # the sampling pass: a hollow star, same colour
                        tau_s = mean_std([r["metrics"]["tau_sampling"] for r in sampled])[0]
                        speed_s = mean_std([r["metrics"]["speedup_sampling"]
                                             for r in sampled])[0]
                        ax.scatter([tau_s], [speed_s], s=90, marker="*", facecolors="none",
                                   edgecolors=color, zorder=3)
            for i, method in enumerate(methods):
                ax.scatter([], [], color=f"C{i % 10}", label=_plain(method))
            ax.scatter([], [], color="gray", marker="*", s=90, edgecolors="black",
                       label="all prompts")
            if any("speedup_sampling" in r["metrics"] for rs in groups.values() for r in rs):
                ax.scatter([], [], marker="*", s=90, facecolors="none", edgecolors="gray",
                           label="all prompts, sampling (T>0)")
            for j, dataset in enumerate(datasets):
                if not dataset.endswith("all"):
                    ax.scatter([], [], color="gray", marker=markers[j % len(markers)],
                               label=_plain(dataset.rsplit("/", 1)[-1]))
            ax.set_xlabel("tau: tokens per target forward pass")
            ax.set_ylabel("speedup over plain decoding (wall time)")
            ax.set_title(_plain(title))
            ax.legend(fontsize="x-small", loc="best", ncol=2)
            fig.tight_layout()

        paths.append(save_png(draw, Path(out_dir) / f"{slug(suite)}_speedup_vs_tau.png",
                              size=(8.0, 5.0)))
    return paths


def accuracy_vs_latency(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]
                        ) -> list[Path]:
    """``gsm8k``: exact match against wall latency per answer (batch 1), with the
    accuracy/latency frontier; ``<suite>_<dataset>_accuracy_latency.png`` per dataset."""
    return _tradeoff_scatter(records, out_dir, x="latency_s", y="exact_match",
                             x_label="wall latency per answer (s, batch 1)",
                             y_label="exact match", suffix="accuracy_latency",
                             y_floor_one=True)
