"""Align leaderboard sections: methods against DPO at matched KL, and at equal length.

The main table tests gold reward against ``dpo`` at its default β. Two confounds remain,
and :func:`alignment_tables` (the suite's ``sections`` hook) reports each:

- **KL.** A policy further from the reference can buy gold reward with KL. The ``dpo``
  rows of a sweep over β, learning rate or epochs (``--set beta=B`` / ``lr=L`` /
  ``epochs=E``; their model is named ``…-betaB``, ``…-lrL``, ``…-epE``) trace DPO's
  gold-reward-vs-KL curve. Each other row is read against it: DPO's gold reward
  interpolated linearly (between the two swept points around the row's KL, means over
  seeds) at the row's KL, and the tested difference to the swept DPO row nearest in KL
  (:func:`bench.core.stats.compare`, the main table's rule). Outside the swept KL range
  nothing is interpolated (no extrapolation), and the table says so.
- **Length.** The gold reward is a similarity to short reference answers, so length moves
  it. Per test prompt, the row's gold reward minus default ``dpo``'s is regressed on the
  difference in response tokens (ordinary least squares, ``scipy.stats.linregress``, on
  per-item means over seeds); the intercept is the difference at equal length, with its
  two-sided t-test (n − 2 degrees of freedom). Item-level only: seeds are averaged first,
  so training randomness is not in this p (the main table's seed-level test has it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

BASELINE = "dpo"
# The model-name suffix of a swept DPO row (methods.align.dpo.sweep_suffix writes it).
SWEEP_SUFFIX = re.compile(r"(?:-(?:beta|lr|ep)[0-9.e+-]+)+$")


def sweep_point(model: str) -> str:
    """The swept settings in a DPO row's model name (``beta0.01``, ``lr0.001-ep4``), or ""
    for the default recipe."""
    found = SWEEP_SUFFIX.search(model)
    return found.group(0)[1:] if found else ""


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear y at ``x`` through ``points`` (x, y) sorted or not; None outside
    their x range (no extrapolation). Equal x values are averaged first."""
    merged: dict[float, list[float]] = {}
    for px, py in points:
        merged.setdefault(px, []).append(py)
    xs = sorted(merged)
    ys = [math.fsum(merged[v]) / len(merged[v]) for v in xs]
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[0]  # a single swept point equal to x


def length_controlled(reward: dict[str, float], tokens: dict[str, float],
                      base_reward: dict[str, float], base_tokens: dict[str, float]
                      ) -> tuple[float, float, float, int]:
    """(Δ gold reward at equal length, its p, the slope per token, items): OLS of the
    per-item reward difference on the per-item length difference; nan p below 3 items or
    when the length differences do not vary (then the intercept is the mean Δ at that
    constant length difference, which is only "equal length" if that difference is 0)."""
    import numpy as np
    from scipy import stats

    ids = sorted(set(reward) & set(tokens) & set(base_reward) & set(base_tokens))
    d_r = np.array([reward[i] - base_reward[i] for i in ids], dtype=float)
    d_len = np.array([tokens[i] - base_tokens[i] for i in ids], dtype=float)
    n = len(ids)
    if n < 3 or float(np.ptp(d_len)) == 0.0:
        return (float(d_r.mean()) if n else math.nan), math.nan, math.nan, n
    fit = stats.linregress(d_len, d_r)
    se = float(fit.intercept_stderr)
    if se == 0.0:
        p = 0.0 if fit.intercept != 0 else 1.0
    else:
        p = float(2 * stats.t.sf(abs(fit.intercept) / se, n - 2))
    return float(fit.intercept), p, float(fit.slope), n


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _fmt_p(p: float) -> str:
    return "—" if not math.isfinite(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def alignment_tables(records: Sequence[dict[str, Any]], *, alpha: float = 0.05) -> list[str]:
    """Markdown lines: the matched-KL table and the length-controlled table, per dataset."""
    from bench.core.leaderboard import escape_md, group_rows, mean_std, seed_mean_items
    from bench.core.stats import compare

    usable = [r for r in records
              if {"gold_reward", "kl_to_ref", "response_tokens"} <= set(r["metrics"])]
    out: list[str] = []
    for preset, dataset in sorted({(r["preset"], r["dataset"]["id"]) for r in usable},
                                  key=lambda pd: (pd[0] != "default", pd)):
        rows = group_rows([r for r in usable if r["preset"] == preset
                           and r["dataset"]["id"] == dataset], name=lambda r: r["method"])
        title = escape_md(dataset) + ("" if preset == "default" else f" [{escape_md(preset)}]")
        sweep = {k: v for k, v in rows.items() if k[0] == BASELINE}
        default = [k for k in sweep if not sweep_point(k[1])]
        if not sweep or len(default) != 1:
            continue
        base = sweep[default[0]]

        def means(recs: list[dict[str, Any]]) -> tuple[float, float, float]:
            return tuple(mean_std([r["metrics"][m] for r in recs])[0]  # type: ignore[return-value]
                         for m in ("kl_to_ref", "gold_reward", "response_tokens"))

        curve = {k: means(v) for k, v in sweep.items()}
        points = sorted(sweep_point(k[1]) for k in sweep if sweep_point(k[1]))
        lo, hi = min(c[0] for c in curve.values()), max(c[0] for c in curve.values())
        kl_rows, len_rows = [], []
        for key in sorted(rows, key=lambda k: -means(rows[k])[1]):
            if key[0] == BASELINE:
                continue
            kl, gold, tokens = means(rows[key])
            near = min(curve, key=lambda k: (abs(curve[k][0] - kl), k))
            res = compare([r["per_item"]["gold_reward"] for r in rows[key]],
                          [r["per_item"]["gold_reward"] for r in sweep[near]])
            at_kl = interpolate([(c[0], c[1]) for c in curve.values()], kl)
            mark = " †" if math.isfinite(res.p_value) and res.p_value < alpha else ""
            name = f"{escape_md(key[0])} ({escape_md(key[1])})"
            kl_rows.append(
                f"| {name} | {kl:.4f} | {gold:.4f} | "
                f"{_fmt(at_kl) if at_kl is not None else 'outside'} | "
                f"{_fmt(None if at_kl is None else gold - at_kl, signed=True)} | "
                f"{escape_md(near[1])} ({curve[near][0]:.4f}) | {res.delta:+.4f}{mark} | "
                f"{_fmt_p(res.p_value)} | {_fmt(res.mde)} | {escape_md(res.test)} |")
            delta, p, slope, n = length_controlled(
                seed_mean_items(rows[key], "gold_reward"),
                seed_mean_items(rows[key], "response_tokens"),
                seed_mean_items(base, "gold_reward"), seed_mean_items(base, "response_tokens"))
            raw = gold - means(base)[1]
            len_rows.append(
                f"| {name} | {tokens:.1f} | {tokens - means(base)[2]:+.1f} | {raw:+.4f} | "
                f"{_fmt(delta, signed=True)}{' †' if math.isfinite(p) and p < alpha else ''}"
                f" | {_fmt_p(p)} | {_fmt(slope, signed=True)} | {n} |")
        if not kl_rows:
            continue
        out += [f"## {title}: against DPO at matched KL", "",
                f"DPO's gold-reward-vs-KL curve: its default recipe and the swept rows "
                f"({', '.join(f'`{p}`' for p in points) or 'none'}; KL {lo:.4f} to {hi:.4f} "
                "nats per token, means over seeds). *DPO at this KL*: DPO's gold reward interpolated "
                "linearly at the row's KL (*outside*: the row's KL is outside the swept "
                "range, nothing extrapolated). *Nearest DPO*: the swept DPO row closest in "
                f"KL, tested with the main table's rule (no correction); † p < {alpha}.", "",
                "| Row | KL | gold reward | DPO at this KL | Δ at matched KL | nearest DPO "
                "(KL) | Δ vs nearest | p | MDE | test |",
                "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
                *kl_rows, "",
                f"## {title}: against DPO at equal length", "",
                f"Per test prompt, the row's gold reward minus `{BASELINE}`'s (default β) "
                "regressed on the difference in response tokens (OLS on per-item means over "
                "seeds): the intercept is the difference at equal length, with a two-sided "
                f"t-test (n − 2 df; item-level, seeds averaged; no correction); † p < {alpha}.",
                "", "| Row | tokens | Δ tokens | Δ gold reward | Δ at equal length | p | "
                "slope per token | prompts |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *len_rows, ""]
    return out[:-1] if out else out
