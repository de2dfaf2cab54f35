"""The site's pages as HTML strings, from the views the markdown is written from.

A suite page shows what its markdown page shows, cell for cell (the same formatted numbers,
† and ‡ marks, p, p adj., MDE, Params, ms/item and notes), plus what a browser adds:
sortable headers (each number cell's ``data-v``, from :func:`sort_value`: ``22.7M`` sorts as
22700000), filters over the main table (dataset, offline stand-in, preset, model,
implementation), per row a ``<details>`` with each result's seed, preset, commit, date,
hardware, exact command (with a copy button) and a link to its result JSON, and the
licences as links.

Every string that comes from a record or a suite goes through :func:`esc` (or the markdown
converter, which escapes too); nothing here reads a clock, so the pages are byte-identical
for the same inputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.core.leaderboard import (
    ASSETS_LEGEND,
    COST_HEADER,
    MARK,
    MODELS_LEGEND,
    SITE_HEADER,
    STATUS_LEGEND,
    DatasetInfo,
    IndexView,
    RowInfo,
    SuiteView,
    Table,
    commit_label,
    hardware_label,
)
from bench.core.results import slug
from bench.core.site.markdown import inline, to_html

NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
URL = re.compile(r"https?://[^\s<>\"'()]+")
SCALE = {"K": 3, "M": 6, "B": 9, "T": 12}  # a parameter count's unit (fmt_params)


def esc(text: object) -> str:
    """``text`` as inert HTML (text and attribute values alike)."""
    return escape(str(text), quote=True)


def sort_value(text: str) -> str:
    """The number a formatted cell sorts by: ``"0.8588 ± 0.0031 †"`` -> ``"0.8588"``,
    ``"<0.0001"`` -> ``"0"`` (below it), ``"∞"`` -> ``"Infinity"``, ``"—"`` -> ``""``, a
    parameter count ``"22.7M"`` -> ``"22700000"`` (a range ``"22.7M–135M"`` by its low end)."""
    t = text.strip()
    if t.startswith("∞"):
        return "Infinity"
    if t.startswith("<"):
        return "0"
    m = NUMBER.match(t)
    if not m:
        return ""
    unit, after = t[m.end():m.end() + 1], t[m.end() + 1:m.end() + 2]
    if unit in SCALE and not after.isalnum():  # exact: Decimal, printed without exponent
        return format(Decimal(m.group(0)).scaleb(SCALE[unit]), "f")
    return m.group(0)


def page_link(suite: str) -> str:
    return quote(f"{slug(suite)}.html")


def _linked(text: str) -> str:
    """Escaped ``text`` with its http(s) URLs as links (licences)."""
    return URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', esc(text))


def _th(label: str, numeric: bool, attrs: str = "", extra: str = "") -> str:
    kind = "num" if numeric else "text"
    cls = ' class="num"' if numeric else ""
    return (f'<th{cls} data-type="{kind}" aria-sort="none"{attrs}>'
            f'<button type="button" class="sort">{esc(label)}</button>{extra}</th>')


def _dataset_th(d: DatasetInfo) -> str:
    """A dataset column's header: its id, and a stand-in badge saying what it stands in for."""
    extra = (f'<span class="badge standin" title="{esc(d.label)}">offline stand-in</span>'
             if d.stand_in else "")
    return _th(d.id, True, f' data-dataset="{esc(d.id)}" data-standin='
                           f'"{"yes" if d.stand_in else "no"}" title="{esc(d.label)}"', extra)


def _num_td(text: str, *, title: str = "", attrs: str = "") -> str:
    body = esc(text).replace(
        MARK, f'<span class="sig" title="significant after correction">{MARK}</span>').replace(
        "‡", '<span class="below" title="|Δ| below the minimum detectable effect">‡</span>')
    tip = f' title="{esc(title)}"' if title else ""
    return f'<td class="num" data-v="{esc(sort_value(text))}"{tip}{attrs}>{body}</td>'


def table_html(t: Table, *, numeric: Sequence[int] | None = None, links: Sequence[int] = (),
               first: Callable[[str], str] | None = None) -> str:
    """A plain :class:`Table` as a sortable HTML table. ``numeric`` overrides which columns
    sort as numbers (default: from ``numeric_from``), ``links`` are columns whose URLs become
    links, ``first`` renders the first column's cells (already escaped)."""
    nums = set(range(t.numeric_from, len(t.header)) if numeric is None else numeric)
    head = "".join(_th(h, i in nums) for i, h in enumerate(t.header))
    rows = []
    for row in t.rows:
        cells = []
        for i, c in enumerate(row):
            if i in nums:
                cells.append(_num_td(c))
            elif i == 0 and first is not None:
                cells.append(f'<td data-v="{esc(c)}">{first(c)}</td>')
            else:
                cells.append(f"<td>{_linked(c) if i in links else esc(c)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _detail_titles(v: SuiteView) -> dict[tuple[str, str, str], str]:
    """Per main-table cell, its test as the "All metrics" table states it (a tooltip)."""
    out = {}
    for d, t in v.details:
        for key, row in zip(t.keys, t.rows, strict=True):
            delta, p, p_adj, mde, test = row[-5:]
            out[(*key, d.id)] = f"Δ {delta} · p {p} · p adj. {p_adj} · MDE {mde} · {test}"
    return out


def _method_td(info: RowInfo) -> str:
    badges = ""
    if info.baseline:
        badges += '<span class="badge baseline">baseline</span>'
    if info.note is not None:
        badges += (f'<a class="badge partial" href="#note-{info.note}" title="partial '
                   f'implementation: see note {info.note}">partial · note {info.note}</a>')
    return (f'<td class="name" data-v="{esc(info.method)}"><span class="method">'
            f"{esc(info.method)}</span>{badges}</td>")


def _runs(info: RowInfo, prov: tuple[str, ...], where: Callable[[dict[str, Any]], str | None]
          ) -> str:
    """The row's ``<details>``: one line per result file."""
    lines = []
    for r in info.records:
        p = r["provenance"]
        command = p.get("command") or "unknown"
        rel = where(r)
        link = f'<a href="{esc(quote(rel))}">{esc(rel.rsplit("/", 1)[-1])}</a>' if rel else "—"
        lines.append(
            f"<tr><td>{esc(r['dataset']['id'])}</td><td class=\"num\">{esc(r['seed'])}</td>"
            f"<td>{esc(r.get('preset', 'default'))}</td><td>{esc(commit_label(p))}</td>"
            f"<td>{esc(p.get('date', '—'))}</td><td>{esc(hardware_label(p))}</td>"
            f'<td><div class="cmd"><code>{esc(command)}</code><button type="button" '
            f'class="copy" title="copy the command">Copy</button></div></td><td>{link}</td></tr>')
    n = len(info.records)
    summary = (f"{n} result file{'s' if n != 1 else ''} · seeds {prov[2]} · preset {prov[3]} · "
               f"commit {prov[5]} · {prov[6]}")
    head = "".join(f"<th>{h}</th>" for h in ("Dataset", "Seed", "Preset", "Commit", "Date",
                                             "Hardware (cpu / accelerator)", "Command",
                                             "Result JSON"))
    return (f"<details><summary>{esc(summary)}</summary><div class=\"table-wrap\"><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
            "</details>")


def _filters(v: SuiteView) -> str:
    def select(name: str, label: str, options: Sequence[tuple[str, str]]) -> str:
        opts = '<option value="">all</option>' + "".join(
            f'<option value="{esc(value)}">{esc(text)}</option>' for value, text in options)
        return f'<label>{esc(label)}<select name="{name}">{opts}</select></label>'

    presets = sorted({r.get("preset", "default") for i in v.rows for r in i.records})
    n = len(v.rows)
    return ('<form class="filters" data-table="main-table" aria-label="filter the main table">'
            + select("dataset", "Dataset", [(d.id, d.label) for d in v.datasets])
            + select("standin", "Offline stand-in", [("yes", "offline stand-ins only"),
                                                     ("no", "real benchmarks only")])
            + select("preset", "Preset", [(p, p) for p in presets])
            + select("model", "Model", [(m, m) for m in sorted({i.model for i in v.rows})])
            + select("impl", "Implementation", [("full", "full"), ("partial", "partial")])
            + f'<button type="reset">Reset</button><output>{n} of {n} rows</output></form>')


def main_table(v: SuiteView, where: Callable[[dict[str, Any]], str | None]) -> str:
    """The main table: one ``<tbody class="entry">`` per row (its cells, then its runs)."""
    titles = _detail_titles(v)
    head = [_th("Method", False), _th("Model", False)]
    head += [_th(h, True) for h in COST_HEADER]
    head += [_dataset_th(d) for d in v.datasets]
    head.append(_th("Mean", True))
    bodies = []
    for info, row, prov in zip(v.rows, v.main.rows, v.provenance.rows, strict=True):
        cells = [_method_td(info), f'<td class="name">{esc(info.model)}</td>']
        cells += [_num_td(text) for text in row[2:2 + len(COST_HEADER)]]
        cells += [_num_td(text, title=titles.get((info.method, info.model, d.id), ""),
                          attrs=f' data-dataset="{esc(d.id)}"')
                  for d, text in zip(v.datasets, row[2 + len(COST_HEADER):-1], strict=True)]
        cells.append(_num_td(row[-1]))
        presets = sorted({r.get("preset", "default") for r in info.records})
        attrs = (f'data-method="{esc(info.method)}" data-model="{esc(info.model)}" '
                 f'data-preset="{esc(" ".join(presets))}" '
                 f'data-impl="{"partial" if info.note is not None else "full"}"')
        bodies.append(f'<tbody class="entry" {attrs}><tr class="row">{"".join(cells)}</tr>'
                      f'<tr class="runs"><td colspan="{len(head)}">{_runs(info, prov, where)}'
                      "</td></tr></tbody>")
    return ('<div class="table-wrap"><table id="main-table" class="sortable board"><thead><tr>'
            + "".join(head) + "</tr></thead>" + "".join(bodies) + "</table></div>")


def page(title: str, body: str, suites: Sequence[str], current: str | None) -> str:
    here = ' aria-current="page"'
    nav = "".join(f'<a href="{page_link(s)}"{here if s == current else ""}>{esc(s)}</a>'
                  for s in suites)
    return (f"{SITE_HEADER}\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)} · distillbench leaderboards</title>\n"
            '<link rel="icon" href="data:,">\n<link rel="stylesheet" href="site.css">\n'
            '<script src="site.js" defer></script>\n</head>\n<body>\n'
            '<header class="top"><a class="home" href="index.html">distillbench leaderboards'
            f'</a><nav aria-label="suites">{nav}</nav></header>\n<main>\n{body}\n</main>\n'
            "</body>\n</html>\n")


def suite_page(v: SuiteView, *, sections: Sequence[str], plots: Sequence[str],
               suites: Sequence[str], where: Callable[[dict[str, Any]], str | None]) -> str:
    """One suite's page; ``plots`` are paths relative to the site folder, ``where`` gives a
    record's result JSON relative to it."""
    out = [f"<h1>{esc(v.title)}</h1>"]
    if v.description:
        out.append(f'<div class="description">{to_html([v.description])}</div>')
    out.append('<div class="legend">' + "".join(f"<p>{inline(ln)}</p>" for ln in v.legend)
               + "</div>")
    out += ['<section id="main-score"><h2>Main score</h2>', _filters(v), main_table(v, where),
            "</section>"]
    if sections:
        out.append(f'<section id="sections">{to_html(sections)}</section>')
    out += ['<section id="datasets"><h2>Datasets</h2>',
            table_html(v.dataset_table, links=(6,)), "</section>",
            f'<section id="models"><h2>Models</h2><p class="legend">{inline(MODELS_LEGEND)}</p>',
            table_html(v.models, links=(2, 3)), "</section>",
            '<section id="all-metrics"><h2>All metrics per dataset</h2>'
            f'<p class="legend">{inline(v.details_legend)}</p>']
    for d, t in v.details:
        out += [f'<h3 id="ds-{esc(slug(d.id))}">{esc(d.label)}</h3>',
                table_html(t, numeric=range(t.numeric_from, len(t.header) - 1))]  # not Test
    out += ["</section>", '<section id="provenance"><h2>Provenance</h2>',
            table_html(v.provenance), "</section>"]
    if v.notes:
        out.append('<section id="notes"><h2>Notes</h2><ol class="notes">' + "".join(
            f'<li id="note-{i}">{esc(n)}</li>' for i, n in enumerate(v.notes, 1)) + "</ol></section>")
    if plots:
        out.append('<section id="plots"><h2>Plots</h2>' + "".join(
            f'<figure><img src="{quote(p)}" alt="{esc(Path(p).stem)}"><figcaption>'
            f"{esc(Path(p).stem)}</figcaption></figure>" for p in plots) + "</section>")
    return page(v.title, "\n".join(out), suites, v.suite)


def index_page(index: IndexView, suites: Sequence[str]) -> str:
    out = ["<h1>distillbench leaderboards</h1>",
           '<p class="legend">Generated by <code>bench leaderboard</code> from the result '
           "files, beside the markdown pages; do not edit by hand.</p>"]
    if index.entries:
        out.append('<ul class="cards">' + "".join(
            f'<li><a href="{page_link(s)}"><strong>{esc(title)}</strong></a><br>'
            f'<span class="summary">{esc(summary)}</span></li>'
            for s, title, summary in index.entries) + "</ul>")
        out += ['<section id="where-things-stand"><h2>Where things stand</h2>',
                f'<p class="legend">{inline(STATUS_LEGEND)}</p>',
                table_html(index.status, numeric=(3, 5),
                           first=lambda s: f'<a href="{page_link(s)}">{esc(s)}</a>'),
                "</section>"]
    else:
        out.append("<p>No results yet: run <code>bench run --method &lt;m&gt; --suite "
                   "&lt;s&gt;</code> first.</p>")
    out += ['<section id="assets"><h2>Packaged assets</h2>',
            f'<p class="legend">{inline(ASSETS_LEGEND)}</p>',
            table_html(index.assets, links=(3, 4)), "</section>"]
    return page("Overview", "\n".join(out), suites, None)


def relative(path: Path, site_dir: Path) -> str:
    """``path`` as a URL relative to the site folder (``../beir_main_score.png``)."""
    return Path(os.path.relpath(Path(path).resolve(), site_dir.resolve())).as_posix()
