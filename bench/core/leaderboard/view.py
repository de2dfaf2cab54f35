"""A suite's page as plain data: :func:`suite_view` turns the suite's
:class:`~bench.core.leaderboard.board.Board` into a :class:`SuiteView` (the main table,
datasets, models, all metrics per dataset, provenance, notes, legends), which the markdown
page (:mod:`bench.core.leaderboard.markdown`) and the site (:mod:`bench.core.site`) only
format, so both show the same cells, marks, p values, MDEs and notes. Dataset licences come
from the suites' ``DatasetSpec.licence``, model licences from :mod:`bench.core.assets.specs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.core.leaderboard.board import (
    CORRECTION_NAMES,
    TEST_NAMES,
    Board,
    baseline_rows,
    cell_stat,
    strip_limit,
)
from bench.core.leaderboard.tables import (
    MARK,
    Table,
    cell_text,
    commit_label,
    cost_cells,
    cost_pers,
    distinct,
    escape_md,
    fmt,
    fmt_mde,
    fmt_p,
    hardware_label,
)


@dataclass(frozen=True)
class RowInfo:
    """One (method, model) row: its label as every table shows it, and its records (sorted
    by dataset, then seed)."""

    method: str
    model: str
    label: str  # the method, then " (baseline)" and/or " (partial, note N)"
    baseline: bool
    note: int | None  # number of its partial-implementation note, if partial
    records: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    label: str  # the id, with "(offline stand-in for ...)" where it is one
    stand_in: bool
    metric: str  # its main score
    licence: str  # of the data it derives from (DatasetSpec.licence); "—" where not stated


@dataclass(frozen=True)
class SuiteView:
    """Everything a suite's page shows, computed once for the markdown and the site.

    Tables are plain text. ``legend`` and ``details_legend`` are markdown (values from records
    escaped), ``description`` is the suite's own trusted markdown."""

    suite: str
    title: str
    description: str | None
    legend: tuple[str, ...]
    rows: tuple[RowInfo, ...]
    datasets: tuple[DatasetInfo, ...]
    main: Table
    dataset_table: Table
    models: Table
    details_legend: str
    details: tuple[tuple[DatasetInfo, Table], ...]  # "All metrics" per dataset
    provenance: Table
    notes: tuple[str, ...]


COST_HEADER = ("Params", "ms/item")  # after Model in the main and "All metrics" tables
MODELS_LEGEND = ("The packaged model each row's model derives from, and its licences (—: none "
                 "packaged, a model trained from scratch here or no model at all).")


def _dataset_label(info: dict[str, Any]) -> str:
    """Dataset id, plus what it substitutes for when it is an offline stand-in (plain text)."""
    if not info["offline_stand_in"]:
        return str(info["id"])
    target = info.get("stands_in_for")
    return f"{info['id']} (offline stand-in" + (f" for {target})" if target else ")")


def _join(values: Iterable[object]) -> str:
    """:func:`distinct`, escaped for markdown."""
    return escape_md(distinct(values))


def _short_checksum(c: str) -> str:
    return c if c == "unknown" else c[:19]  # "sha256:" + 12 hex digits


def _dates(recs: Iterable[dict[str, Any]]) -> str:
    days = sorted({r["provenance"]["date"][:10] for r in recs})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _legend(suite: str, b: Board, *, baseline: str | None, test: str, alpha: float,
            correction: str) -> list[str]:
    versions = sorted({r["suite_version"] for r in b.records})
    direction = "" if b.higher_is_better else " (lower is better)"
    out = [f"Suite {escape_md(suite)}, version {_join(versions)}; main score "
           f"{_join(b.mains.values())}{direction}. Cells: mean over seeds ± sample standard "
           "deviation (when more than one seed). Mean: over all datasets, only for rows "
           "with results on every dataset."]
    if len(versions) > 1:
        out.append("**Warning:** these results span several suite versions; scores from "
                   "different versions are not comparable.")
    out.extend(teacher_warnings(b.records))
    if any(k[0] == baseline for k in b.groups):
        tested = sum(1 for s in b.stats.values() if s.p_value is not None)
        out.append(f"{MARK} p < {alpha:g} after {CORRECTION_NAMES[correction]} correction over "
                   f"the {tested} tests of this table: two-sided {TEST_NAMES[test]}, main score "
                   f"against baseline {escape_md(baseline)} on the same dataset (at the row's "
                   "preset where the baseline ran with it; same model where it ran, else the "
                   "model the suite pairs it with, else the baseline's only model). MDE: the smallest |Δ| that test detects with "
                   "power 0.8 at this level (∞: none, too few items or seeds); ‡ marks a Δ "
                   "below it: an effect that small is detected less than 80% of the time, so "
                   "where it is not significant the test could not tell it from none.")
    else:
        why = "no baseline is named" if baseline is None else \
            f"baseline {escape_md(baseline)} has no results in this suite"
        out.append(f"No significance tests: {why}.")
    out.append(cost_legend(b.records))
    return out


def teacher_warnings(records: Iterable[dict[str, Any]]) -> list[str]:
    """A warning per dataset whose rows were trained or scored with different teachers, by
    the weight fingerprint records keep in ``config.teacher`` (a teacher fine-tuned under
    one cache key on another machine, or after a cold cache, can differ bitwise)."""
    seen: dict[str, dict[str, set[str]]] = {}
    for r in records:
        teacher = (r.get("config") or {}).get("teacher")
        if not isinstance(teacher, dict):
            continue
        prints = seen.setdefault(r["dataset"]["id"], {"known": set(), "unknown": set()})
        fingerprint = teacher.get("weights_fingerprint")
        prints["known" if fingerprint else "unknown"].add(fingerprint or r["method"])
    out = []
    for dataset, prints in sorted(seen.items()):
        known, unknown = sorted(prints["known"]), sorted(prints["unknown"])
        if len(known) > 1:
            out.append(f"**Warning:** the rows on {escape_md(dataset)} come from "
                       f"{len(known)} different teachers (weights {', '.join(known)}): "
                       "their scores are not comparable.")
        if known and unknown:
            out.append(f"Rows on {escape_md(dataset)} from {', '.join(unknown)} do not "
                       "record their teacher's weights (older results), so whether they "
                       f"share the teacher {', '.join(known)} of the others is not shown.")
    return out


def cost_legend(records: Iterable[dict[str, Any]]) -> str:
    """The line saying what Params and ms/item are, with what one item is in this suite (the
    records' distinct ``per`` texts, escaped)."""
    pers = cost_pers(records)
    items = ("One item, as the results define and time it: "
             + "; ".join(f"“{escape_md(p)}”" for p in pers) + "." if pers
             else "No result of this suite records its cost yet.")
    return ("Params: parameters of the model that produced the row (a range where its results "
            "differ); ms/item: milliseconds per item on the hardware its results record (see "
            "Provenance), the mean over its datasets of each dataset's mean over seeds; —: not "
            f"recorded. {items}")


def _row_infos(b: Board, baseline: str | None) -> tuple[list[RowInfo], list[str]]:
    rows: list[RowInfo] = []
    notes: list[str] = []
    marked = baseline_rows(b.row_recs, baseline, b.paired_model)
    for (method, model), rrecs in b.row_recs.items():
        is_base = (method, model) in marked
        label, note = method + (" (baseline)" if is_base else ""), None
        if any(r["implementation"] == "partial" for r in rrecs):
            notes.append(f"{method} / {model} is a partial implementation: "
                         f"{distinct(n for r in rrecs for n in r['notes'])}")
            note = len(notes)
            label += f" (partial, note {note})"
        rows.append(RowInfo(method, model, label, is_base, note, tuple(rrecs)))
    return rows, notes


def _models_table(rows: Sequence[RowInfo]) -> Table:
    from bench.core.assets.specs import model_licence_row

    return Table(("Model", "Packaged asset", "Licence (weights)", "Package: licence"),
                 tuple(model_licence_row(m) for m in sorted({r.model for r in rows})), 9)


def suite_view(suite: str, b: Board, *, baseline: str | None, test: str, alpha: float,
               title: str | None = None, description: str | None = None,
               correction: str = "holm", licences: dict[str, str] | None = None) -> SuiteView:
    """The page of one suite as plain data (see :class:`SuiteView`); ``licences`` maps a
    declared dataset id to its licence (a ``--limit`` run's id finds its dataset's)."""
    rows, notes = _row_infos(b, baseline)
    datasets = tuple(DatasetInfo(ds, _dataset_label(b.ds_info[ds]),
                                 bool(b.ds_info[ds]["offline_stand_in"]), metric,
                                 (licences or {}).get(strip_limit(ds)) or "—")
                     for ds, metric in b.mains.items())
    keys = tuple((r.method, r.model) for r in rows)
    body = []
    for r in rows:
        cells = []
        for d in datasets:
            s = b.stats.get((r.method, r.model, d.id))
            cells.append("—" if s is None else cell_text(s.mean, s.std)
                         + (f" {MARK}" if s.significant(alpha) else ""))
        body.append((r.label, r.model, *cost_cells(r.records), *cells,
                     fmt(b.row_mean[(r.method, r.model)])))
    main = Table(("Method", "Model", *COST_HEADER, *(d.label for d in datasets), "Mean"),
                 tuple(body), 2, keys)
    drows = []
    for d in datasets:
        infos = [r["dataset"] for r in b.records if r["dataset"]["id"] == d.id]
        kind = (f"offline stand-in for {b.ds_info[d.id].get('stands_in_for') or '?'} (not the "
                "real benchmark)") if d.stand_in else "as published"
        drows.append((d.id, d.metric, distinct(i["split"] for i in infos),
                      distinct(i.get("num_items", "?") for i in infos),
                      distinct(_short_checksum(i["checksum"]) for i in infos), kind, d.licence))
    dataset_table = Table(("Dataset", "Main score", "Split", "Items", "Checksum", "Data",
                           "Licence"), tuple(drows), 9)
    details = []
    for d in datasets:
        names = sorted({m for k, recs in b.groups.items() if k[2] == d.id for r in recs
                        for m in r["metrics"]}, key=lambda m: (m != d.metric, m))
        lines, lkeys = [], []
        for r in rows:
            if (key := (r.method, r.model, d.id)) not in b.groups:
                continue
            s = b.stats[key]
            vals = [cell_stat(b.groups, key, m, None, test) for m in names]
            lines.append((r.label, r.model, *cost_cells(b.groups[key]),
                          ", ".join(map(str, s.seeds)),
                          *[cell_text(v.mean, v.std) if v else "—" for v in vals],
                          fmt(s.delta, signed=True) + (" ‡" if s.below_mde else ""),
                          fmt_p(s.p_value), fmt_p(s.p_adjusted), fmt_mde(s.mde), s.test or "—"))
            lkeys.append(key[:2])
        hdr = ("Method", "Model", *COST_HEADER, "Seeds", *names, f"Δ {d.metric}", "p",
               "p adj.", "MDE", "Test")
        details.append((d, Table(hdr, tuple(lines), 2, tuple(lkeys))))
    prov = tuple((r.label, r.model, distinct(x["seed"] for x in r.records),
                  distinct(x["preset"] for x in r.records),
                  distinct(x["suite_version"] for x in r.records),
                  distinct(commit_label(x["provenance"]) for x in r.records), _dates(r.records),
                  distinct(hardware_label(x["provenance"]) for x in r.records)) for r in rows)
    return SuiteView(
        suite=suite, title=title or suite, description=description,
        legend=tuple(_legend(suite, b, baseline=baseline, test=test, alpha=alpha,
                             correction=correction)),
        rows=tuple(rows), datasets=datasets, main=main, dataset_table=dataset_table,
        models=_models_table(rows),
        details_legend=(f"Δ: difference of the main score to the baseline row (‡: |Δ| below "
                        f"the MDE); p: the test named in the last column; p adj.: "
                        f"{CORRECTION_NAMES[correction]}-corrected over the main table."),
        details=tuple(details),
        provenance=Table(("Method", "Model", "Seeds", "Preset", "Suite version", "Commit",
                          "Date", "Hardware (cpu / accelerator)"), prov, 9, keys),
        notes=tuple(notes))
