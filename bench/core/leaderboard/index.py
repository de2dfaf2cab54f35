"""The index page (``<out>/README.md``): one line per suite, the "Where things stand" status
table (each method's mean against its suite's baseline) and the "Packaged assets" table.
:func:`index_view` computes it as plain data for both the markdown and the site."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bench.core.leaderboard.board import Board, CellStat, baseline_row, baseline_rows
from bench.core.leaderboard.tables import HEADER, Table, distinct, escape_md, fmt, markdown_table
from bench.core.results import slug


def _summary(meta: dict[str, Any], b: Board) -> str:
    """The index's one-line description of a suite's board (plain text)."""
    n_stand_in = sum(info["offline_stand_in"] for info in b.ds_info.values())
    line = (f"main score {distinct(b.mains.values())} on {len(b.mains)} dataset(s) "
            f"({n_stand_in} offline stand-in), {len(b.rows)} method/model row(s)")
    ranked = [r for r in b.rows if b.row_mean[r] is not None]
    if ranked:
        sign = -1.0 if b.higher_is_better else 1.0
        best = min(ranked, key=lambda r: (sign * (b.row_mean[r] or 0.0), r))
        line += f"; best mean {best[0]} / {best[1]} {fmt(b.row_mean[best])}"
    return line


def _status_rows(suite: str, meta: dict[str, Any], b: Board) -> list[tuple[str, ...]]:
    """The index's status rows of one suite, plain text (see :data:`STATUS_LEGEND`)."""
    baseline, alpha = meta.get("baseline"), float(meta.get("alpha", 0.05))
    rows = []
    marked = baseline_rows(b.rows, baseline, b.paired_model)
    for row in b.rows:
        base_row = baseline_row(b.rows, baseline, row[0], row[1], b.paired_model)
        base_mean = b.row_mean.get(base_row) if base_row else None
        is_base = row in marked
        cells = [b.stats[(*row, ds)] for ds in b.mains if (*row, ds) in b.stats]
        tested = [c for c in cells if c.p_value is not None]
        mean = b.row_mean[row]
        delta = (mean - base_mean) if mean is not None and base_mean is not None else None
        partial = any(r["implementation"] == "partial" for r in b.row_recs[row])
        unpaired = is_base or base_row == row  # a sweep point of the baseline: no Δ
        rows.append((suite, row[0], row[1], fmt(mean),
                     "(baseline)" if is_base else "—" if base_row == row
                     else (base_row[0] if base_row else baseline or "—"),
                     "—" if unpaired else fmt(delta, signed=True),
                     " · ".join(_p_text(c) for c in tested) or "—",
                     f"{sum(c.significant(alpha) for c in tested)} of {len(tested)}"
                     if tested else "—", "partial" if partial else "full"))
    return rows


def _p_text(cell: CellStat) -> str:
    """A cell's p-value as the status table shows it: corrected within its suite's table."""
    p = cell.p_adjusted if cell.p_adjusted is not None else cell.p_value
    return "—" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


STATUS_LEGEND = ("One row per method and suite: its mean main score over the suite's "
                 "datasets (— where it lacks one), the difference to the suite's baseline, "
                 "the p-value of that difference on each dataset in the suite page's order "
                 "(corrected with the rest of its table), and on how many datasets it is "
                 "significant (of those where a test could be run); partial rows "
                 "implement their method only in part (see the suite page's notes).")
ASSETS_LEGEND = ("The offline models and data the suites run on (`bench assets check` "
                 "checks them): the licence of the weights or data each carries, and of the "
                 "package itself. Each dataset's own licence is in its suite's Datasets table.")


def assets_table() -> Table:
    """Every packaged asset with the licence of what it carries and of its package."""
    from bench.core.assets.specs import asset_licence_rows

    return Table(("Asset", "Kind", "Package", "Licence (weights / data)", "Package licence"),
                 tuple(asset_licence_rows()), 9)


@dataclass(frozen=True)
class IndexView:
    """The index page: one (suite, title, summary) per suite, the status table, the assets."""

    entries: tuple[tuple[str, str, str], ...]
    status: Table
    assets: Table


def index_view(suites: Iterable[tuple[str, str, dict[str, Any], Board]]) -> IndexView:
    """The index of ``suites``, each ``(suite, title, metadata, board)``, in their order."""
    suites = list(suites)
    entries = tuple((suite, title, _summary(meta, b)) for suite, title, meta, b in suites)
    status = tuple(row for suite, _, meta, b in suites for row in _status_rows(suite, meta, b))
    return IndexView(entries, Table(
        ("Suite", "Method", "Model", "Mean", "Baseline", "Δ mean", "p", "Significant",
         "Implementation"), status, 3), assets_table())


README_START = "<!-- status: generated by `bench leaderboard` from the result files -->"
README_END = "<!-- end of the generated status -->"


def status_markdown(index: IndexView, link_prefix: str = "") -> list[str]:
    """The status table's markdown lines, each suite linked to ``link_prefix`` + its page."""
    status = [[f"[{escape_md(r[0])}]({quote(link_prefix + slug(r[0]) + '.md')})",
               *(escape_md(c) if i in (1, 2, 4) else c for i, c in enumerate(r) if i)]
              for r in index.status.rows]
    return [STATUS_LEGEND, "", *markdown_table(list(index.status.header), status, 3)]


def with_status_block(text: str, index: IndexView, link_prefix: str) -> str | None:
    """``text`` (a README) with the part between :data:`README_START` and
    :data:`README_END` replaced by the status table; None when it has no such markers."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    block = "\n".join([README_START, "", *status_markdown(index, link_prefix), ""])
    return text[:start] + block + "\n" + text[end:]


def index_markdown(index: IndexView, site: bool = False) -> str:
    """The markdown index page (``README.md``); ``site`` adds the link to the web site."""
    lines = [HEADER, "", "# distillbench leaderboards", "",
             "Generated by `bench leaderboard` from the result files; do not edit by hand.", ""]
    if site:
        lines += ["Also as a web site with sortable, filterable tables: "
                  "[site/index.html](site/index.html) (`bench leaderboard --serve` serves it).",
                  ""]
    lines += [f"- [{escape_md(title)}]({quote(slug(suite) + '.md')}): {escape_md(summary)}"
              for suite, title, summary in index.entries]
    if not index.entries:
        lines.append("No results yet: run `bench run --method <m> --suite <s>` first.")
    else:
        lines += ["", "## Where things stand", "", *status_markdown(index)]
    lines += ["", "## Packaged assets", "", ASSETS_LEGEND, "", *index.assets.markdown()]
    return "\n".join(lines) + "\n"
