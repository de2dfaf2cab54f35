"""A suite's markdown page (``<out>/<suite>.md``), formatted from its
:class:`~bench.core.leaderboard.view.SuiteView`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.core.leaderboard.board import build_board
from bench.core.leaderboard.tables import HEADER, escape_md
from bench.core.leaderboard.view import MODELS_LEGEND, SuiteView, suite_view


def render_suite(suite: str, records: list[dict[str, Any]], *, baseline: str | None,
                 test: str = "auto", alpha: float = 0.05, title: str | None = None,
                 description: str | None = None, plots: Sequence[str] = (),
                 sections: Sequence[str] = (), correction: str = "holm") -> str:
    """Markdown leaderboard for one suite (records of other suites are ignored).

    ``plots`` are PNG file names relative to the markdown file, linked under "Plots";
    ``sections`` are markdown lines of suite-specific tables, placed after the main table.
    """
    view = suite_view(suite, build_board(suite, records, baseline, test, correction),
                      baseline=baseline, test=test, alpha=alpha, title=title,
                      description=description, correction=correction)
    return suite_markdown(view, plots=plots, sections=sections)


def suite_markdown(v: SuiteView, *, plots: Sequence[str] = (),
                   sections: Sequence[str] = ()) -> str:
    """The markdown page of :func:`suite_view`'s ``v``."""
    out = [HEADER, "", f"# {escape_md(v.title)}", ""]
    if v.description:
        out += [v.description.strip(), ""]
    out += [*v.legend, "", "## Main score", "", *v.main.markdown()]
    if sections:
        out += ["", *sections]
    out += ["", "## Datasets", "", *v.dataset_table.markdown()]
    out += ["", "## Models", "", MODELS_LEGEND, "", *v.models.markdown()]
    out += ["", "## All metrics per dataset", "", v.details_legend]
    for d, table in v.details:
        out += ["", f"### {escape_md(d.label)}", "", *table.markdown()]
    out += ["", "## Provenance", "", *v.provenance.markdown()]
    if v.notes:
        out += ["", "## Notes", "", *[f"{i}. {escape_md(n)}" for i, n in enumerate(v.notes, 1)]]
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{escape_md(Path(p).stem)}]({quote(Path(p).as_posix())})" for p in plots]
    return "\n".join(out) + "\n"
