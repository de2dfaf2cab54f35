"""The ``specbench`` leaderboard's own section (the suite's ``sections`` hook).

:func:`spec_bench_tables` writes Spec-Bench-shaped tables (Xia et al. 2024, Table 2:
speedup and tau per category, "#Mean Accepted Tokens", "Overall"), one for greedy decoding
and one for the sampling pass, then a table of what the protocol can resolve: per
category, each row's speedup against ``ar`` (plain against plain: the noise and order
floor) with the minimum detectable effect of the seed-aware paired test of
:func:`bench.core.stats.compare`. A Δ below its MDE is one the run could not tell from
timing noise; with 5 prompts per category the exact sign-flip test cannot reach
p < 0.05 at all (MDE ∞), which is why the protocol times 20.

Last, where records carry the tau curve (``config.tau_curve``, :mod:`bench.specdec.curve`),
:func:`curve_table`: ``fspad`` against ``eagle`` at each training step count both curves
have, run at the same preset, dataset, target and decoding (:func:`curve_setup`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BASELINE = "ar"  # the suite's baseline (SuiteMetadata.baseline of specbench)
# Presets that time exactly as another (only training differs): their rows may be tested
# against that preset's ar row when they have none of their own.
SAME_TIMING = {"cpu-long": "default"}


def _category(dataset_id: str) -> str:
    # "<name>/specbench-<category>", "@limitN" after it on a --limit run
    return dataset_id.split("@")[0].rsplit("/", 1)[-1].removeprefix("specbench-")


def _dtype(record: dict[str, Any]) -> str:
    return str(record["config"].get("dtype", "float32"))  # suite version 1: float32 only


def speedup_against_ar(records: Sequence[dict[str, Any]]
                       ) -> dict[tuple[str, str], dict[str, Any]]:
    """(row method, model) -> category -> :class:`bench.core.stats.Comparison` of the
    per-prompt greedy speedups against the ``ar`` row run at the same preset, dtype and
    target on the same dataset (seeds of each side as separate runs); categories without
    such an ``ar`` row are left out (a row may have none), ``ar`` rows are not compared.
    A preset without an ``ar`` run of its own whose timing is another's (``cpu-long``: a
    longer training recipe on the default's protocol, :data:`SAME_TIMING`) is compared
    with that preset's ``ar``, as the main table picks its baseline."""
    from bench.core.leaderboard import row_method
    from bench.core.stats import compare

    def setup(r: dict[str, Any]) -> tuple[str, str, str, Any]:
        return (r.get("preset", "default"), r["dataset"]["id"], _dtype(r),
                r["config"].get("target"))

    base: dict[tuple[str, str, str, Any], dict[str, list[dict[str, float]]]] = {}
    runs: dict[tuple[str, str], dict[tuple[str, str, str, Any], list[dict[str, float]]]] = {}
    for r in records:
        speedups = r["per_item"].get("speedup")
        if not speedups:
            continue
        if r["method"] == BASELINE:
            base.setdefault(setup(r), {}).setdefault(r["model"], []).append(speedups)
        else:
            runs.setdefault((row_method(r), r["model"]), {}).setdefault(setup(r), []).append(
                speedups)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row, cells in runs.items():
        out[row] = {}  # a row without any ar to compare with is shown, empty
        for key, a_runs in cells.items():
            models = base.get(key) or base.get((SAME_TIMING.get(key[0], key[0]), *key[1:]),
                                               {})
            if len(models) != 1:  # no ar row, or ambiguous: leave the cell empty
                continue
            (b_runs,) = models.values()
            out.setdefault(row, {})[_category(key[1])] = compare(a_runs, b_runs)
    return out


def spec_bench_tables(records: Sequence[dict[str, Any]]) -> list[str]:
    """The leaderboard's Spec-Bench-shaped tables (see the module docstring). Means over
    seeds. A header line states hardware, torch version, decoding dtype(s), batch size 1
    and torch threads, from the records."""
    from bench.core.leaderboard import escape_md, row_method
    from bench.specdec.data import CATEGORY_NAMES

    cells: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    setups, dtypes = set(), set()
    for r in records:
        row = cells.setdefault((row_method(r), r["model"]), {})
        for name, value in r["metrics"].items():
            row.setdefault(_category(r["dataset"]["id"]), {}).setdefault(name, []).append(value)
        prov = r["provenance"]
        setups.add((prov["hardware"]["cpu"], prov["hardware"]["accelerator"],
                    prov["package_versions"].get("torch", "?"),
                    r["config"].get("torch_threads", "?")))
        dtypes.add(_dtype(r))
    categories = [c for c in CATEGORY_NAMES if any(c in v for v in cells.values())]
    out = ["## Spec-Bench table", "",
           "Hardware and setup: " + "; ".join(
               f"{escape_md(cpu)} / accelerator {escape_md(acc)}, torch {escape_md(torch_v)}, "
               f"{threads} torch thread(s)" for cpu, acc, torch_v, threads in sorted(setups, key=str))
           + f". Target and draft decode in {escape_md(' / '.join(sorted(dtypes)))} (a "
             "row's model name ends in -bf16 when it decoded in bfloat16), batch size 1; "
             "speedup = plain / speculative wall time on the same prompts in the same run, "
             "in a seeded random order per prompt; tau = tokens per target forward pass, "
             "bonus token included (plain decoding: 1). Category cells: speedup (tau)."]

    def mean(row: dict[str, dict[str, list[float]]], cat: str, name: str) -> str:
        values = row.get(cat, {}).get(name)
        return "—" if not values else f"{sum(values) / len(values):.2f}"

    for title, suffix in (("Greedy (temperature 0)", ""),
                          ("Sampling (temperature 1, speculative sampling on a chain)",
                           "_sampling")):
        rows = []
        for (method, model), row in sorted(cells.items()):
            if f"speedup{suffix}" not in row.get("all", {}):
                continue
            rows.append(f"| {escape_md(method)} | {escape_md(model)} | "
                        + " | ".join(f"{mean(row, c, 'speedup' + suffix)}x "
                                     f"({mean(row, c, 'tau' + suffix)})" for c in categories)
                        + f" | {mean(row, 'all', 'tau' + suffix)} | "
                          f"{mean(row, 'all', 'speedup' + suffix)}x |")
        if not rows:
            continue
        out += ["", f"### {title}", "",
                "| Method | Model | " + " | ".join(map(escape_md, categories))
                + " | tau (all) | Overall speedup |",
                "| --- | --- | " + " | ".join("---:" for _ in categories) + " | ---: | ---: |",
                *rows]
    return out + _mde_table(records, categories) + curve_table(records)


def _mde_table(records: Sequence[dict[str, Any]], categories: list[str]) -> list[str]:
    from bench.core.leaderboard import escape_md

    comparisons = speedup_against_ar(records)
    if not comparisons:
        return []
    columns = [*categories, "all"]

    def cell(res: Any) -> str:
        if res is None:
            return "—"
        mde = "∞" if not math.isfinite(res.mde) else f"{res.mde:.2f}"
        flag = " ‡" if not res.detectable else ""
        return f"{res.delta:+.2f} / {mde}{flag}"

    rows = [f"| {escape_md(method)} | {escape_md(model)} | "
            + " | ".join(cell(by_cat.get(c)) for c in columns) + " |"
            for (method, model), by_cat in sorted(comparisons.items())]
    return ["", "### Greedy speedup against ar: Δ / MDE per category", "",
            "Δ: the row's mean per-prompt speedup minus that of the ar row (plain against "
            "plain) run at the same preset (cpu-long rows: the default preset's), dtype and "
            "target; MDE: the minimum detectable "
            "effect, the smallest |Δ| the test of bench.core.stats.compare (auto: exact "
            "sign-flip up to 16 prompts, paired t beyond, Welch t on seed means with "
            "several seeds) detects with power 0.8 at α = 0.05, uncorrected; ∞: no effect "
            "is detectable with this few prompts; ‡: |Δ| below the MDE; —: no ar row "
            "to compare with.", "",
            "| Method | Model | " + " | ".join(f"{escape_md(c)} Δ / MDE" for c in columns)
            + " |",
            "| --- | --- | " + " | ".join("---:" for _ in columns) + " |", *rows]


# -------------------------------------------------------------------- the tau curve

CURVE_PAIR = ("fspad", "eagle")  # A and B of the curve table: Δ = fspad − eagle


def curve_setup(record: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """What two curves must share to be compared point by point: preset, dataset id,
    target, decoding dtype and drafting (chain k / tree / FR-Spec vocabulary)."""
    c = record["config"]
    drafting = f"tree {c['tree']}" if c.get("tree") else f"chain k={c.get('k')}"
    if c.get("draft_vocab"):
        drafting += f", vocab {c['draft_vocab']}"
    return (record.get("preset", "default"), record["dataset"]["id"], str(c.get("target")),
            _dtype(record), drafting)


def curve_runs(records: Sequence[dict[str, Any]]
               ) -> dict[tuple[str, ...], dict[str, list[dict[int, dict[str, float]]]]]:
    """setup -> method -> one {steps: per-item tau} per record (seed) with a curve."""
    out: dict[tuple[str, ...], dict[str, list[dict[int, dict[str, float]]]]] = {}
    for r in sorted(records, key=lambda r: (r["method"], r.get("seed", 0))):
        curve = r["config"].get("tau_curve")
        if curve:
            out.setdefault(curve_setup(r), {}).setdefault(r["method"], []).append(
                {int(p["steps"]): p["per_item"] for p in curve})
    return out


def curve_comparisons(records: Sequence[dict[str, Any]]
                      ) -> list[tuple[tuple[str, ...], int, Any]]:
    """(setup, steps, :class:`bench.core.stats.Comparison` of fspad's per-item tau against
    eagle's) for each step count in both methods' curves of a setup; seed-aware (Welch t on
    seed means with several seeds, else paired on items). Empty when either is missing."""
    from bench.core.stats import compare

    out = []
    for setup, by_method in sorted(curve_runs(records).items()):
        a_runs, b_runs = (by_method.get(m, []) for m in CURVE_PAIR)
        steps = sorted({s for run in a_runs for s in run} & {s for run in b_runs for s in run})
        for n in steps:
            out.append((setup, n, compare([run[n] for run in a_runs if n in run],
                                          [run[n] for run in b_runs if n in run])))
    return out


def curve_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """The section's "fspad vs eagle at equal training steps" table (nothing without a
    pair of curves): per setup and step count, each method's mean tau, Δ, p, Holm-adjusted
    p over the table's rows, MDE and the test run."""
    from bench.core.leaderboard import escape_md, fmt_mde
    from bench.core.stats import adjust

    rows = curve_comparisons(records)
    if not rows:
        return []
    adjusted = adjust([res.p_value for _, _, res in rows], "holm")

    def p_text(p: float) -> str:
        return "—" if not math.isfinite(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")

    lines = []
    for ((preset, dataset, target, dtype, drafting), n, res), p_adj in zip(rows, adjusted,
                                                                            strict=True):
        flag = " ‡" if not res.detectable else ""
        short = target.rstrip("/").rsplit("/", 1)[-1]  # a local checkpoint: its folder
        lines.append(" | ".join(escape_md(x) for x in (preset, dataset, short,
                                                        f"{dtype}, {drafting}", str(n)))
                     + f" | {res.mean_b:.3f} | {res.mean_a:.3f} | {res.delta:+.3f}{flag} | "
                       f"{p_text(res.p_value)} | {p_text(p_adj)} | {fmt_mde(res.mde)} | "
                       f"{escape_md(res.test)} | {res.n_items} | "
                       f"{res.n_seeds[0]} / {res.n_seeds[1]}")
    return ["", "### fspad vs eagle at equal training steps (tau curve)", "",
            "Both heads after the same number of training steps (the run's snapshots; "
            "bench.specdec.curve), drafting greedily for the same test prompts: mean tau per "
            "item, Δ = fspad − eagle, p of bench.core.stats.compare (Welch t on seed means "
            "with several seeds, else paired on items: exact sign-flip up to 16 items, "
            "paired t beyond), p adj. Holm over this table's rows, MDE at power 0.8 and "
            "α = 0.05; ‡: |Δ| below the MDE. Only setups (preset, dataset, target, "
            "decoding) with both curves are shown.", "",
            "| Preset | Dataset | Target | Decoding | Steps | tau eagle | tau fspad | "
            "Δ tau | p | p adj. | MDE | Test | Items | Seeds (fspad / eagle) |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
            "| ---: | ---: |", *("| " + line + " |" for line in lines)]
