"""The site's stylesheet and script, written next to its pages as ``site.css`` and ``site.js``.

Plain CSS and dependency-free JavaScript (no CDN, no build step), so the site works from
``file://`` as well as from ``bench leaderboard --serve``. The script only reads the page:
sortable tables (``table.sortable``: a click on a header sorts by that column, numbers
numerically, again to reverse; rows without a value stay last), the main table's filters
(``form.filters``) and the copy buttons of the commands (``navigator.clipboard``, else a
selected textarea and ``document.execCommand("copy")``).
"""

CSS = """\
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --accent: #0969da;
  --sig: #1a7f37; --warn: #9a6700; --runs: #fbfcfd; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
a { color: var(--accent); }
header.top { background: #24292f; color: #fff; padding: .45rem 1rem; display: flex;
  flex-wrap: wrap; gap: .3rem 1.2rem; align-items: baseline; }
header.top a { color: #fff; text-decoration: none; }
header.top a.home { font-weight: 600; }
header.top nav a { margin-right: .8rem; opacity: .85; }
header.top nav a[aria-current="page"] { opacity: 1; text-decoration: underline; }
main { max-width: 1480px; margin: 0 auto; padding: .5rem 1rem 3rem; }
h1 { font-size: 1.45rem; margin: .6rem 0 .4rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; padding-bottom: .2rem;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p { margin: .35rem 0; max-width: 120ch; }
.legend p, p.legend { color: var(--muted); font-size: .85rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .3rem 0; }
th, td { border: 1px solid var(--line); padding: .28rem .5rem; text-align: left;
  vertical-align: top; }
th { background: var(--head); font-weight: 600; }
th.num, td.num { text-align: right; white-space: nowrap; }
th button.sort { all: unset; cursor: pointer; display: block; }
th button.sort::after { content: " \\2195"; color: #8c959f; font-weight: 400; }
th[aria-sort="ascending"] button.sort::after { content: " \\25B2"; color: var(--fg); }
th[aria-sort="descending"] button.sort::after { content: " \\25BC"; color: var(--fg); }
th button.sort:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
.sig { color: var(--sig); font-weight: 700; }
.below { color: var(--warn); }
.badge { display: inline-block; margin-left: .35rem; padding: 0 .4rem; border: 1px solid;
  border-radius: 1em; font-size: .72rem; line-height: 1.35; text-decoration: none; }
.badge.baseline { color: var(--accent); }
.badge.partial { color: var(--warn); }
.badge.standin { color: var(--muted); font-weight: 400; margin: .15rem 0 0; }
table.board td.name { white-space: nowrap; }
table.board th .badge { display: block; width: max-content; margin-left: auto; }
table.board > tbody.entry > tr.row > td { border-bottom: none; }
table.board > tbody.entry > tr.runs > td { border-top: none; background: var(--runs);
  padding: 0 .5rem .15rem; }
tr.runs summary { cursor: pointer; color: var(--muted); font-size: .78rem; }
tr.runs table { font-size: .78rem; margin: .3rem 0 .5rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; }
.cmd { display: flex; gap: .4rem; align-items: flex-start; min-width: 24rem; }
.cmd code { white-space: pre-wrap; word-break: break-all; }
button.copy { font-size: .72rem; padding: .05rem .45rem; cursor: pointer; }
form.filters { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: flex-end;
  margin: .4rem 0 .6rem; padding: .5rem .7rem; background: var(--head);
  border: 1px solid var(--line); border-radius: 6px; }
form.filters label { display: flex; flex-direction: column; font-size: .75rem; color: var(--muted); }
form.filters select { font-size: .85rem; max-width: 22rem; }
form.filters output { font-size: .8rem; color: var(--muted); margin-left: auto; }
ul.cards { list-style: none; padding: 0; display: grid; gap: .6rem;
  grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
ul.cards li { border: 1px solid var(--line); border-radius: 6px; padding: .55rem .75rem; }
ul.cards .summary { color: var(--muted); font-size: .85rem; }
figure { margin: .5rem 0 1rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .8rem; }
ol.notes li { margin: .2rem 0; }
"""

JS = """\
(function () {
  "use strict";
  var NUMBER = /[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)/;

  function cellValue(cell, numeric) {
    var raw = cell && cell.dataset.v !== undefined ? cell.dataset.v : (cell ? cell.textContent : "");
    if (!numeric) { return raw.trim(); }
    var text = raw.trim();
    if (text.charAt(0) === "\\u221e" || text === "Infinity") { return Infinity; }
    var m = NUMBER.exec(text.replace(/^</, ""));
    return m && m.index === 0 ? parseFloat(m[0]) : NaN;
  }

  function units(table) {
    var groups = table.querySelectorAll(":scope > tbody.entry");
    if (groups.length) { return Array.prototype.slice.call(groups); }
    return table.tBodies.length ? Array.prototype.slice.call(table.tBodies[0].rows) : [];
  }

  function firstRow(unit) { return unit.tagName === "TBODY" ? unit.rows[0] : unit; }

  function sortBy(table, th, col) {
    var numeric = th.dataset.type === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
      if (other !== th) { other.setAttribute("aria-sort", "none"); }
    });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var list = units(table).map(function (unit) {
      return { unit: unit, index: Number(unit.dataset.index), value: cellValue(firstRow(unit).cells[col], numeric) };
    });
    list.sort(function (a, b) {
      var am = numeric ? isNaN(a.value) : a.value === "";
      var bm = numeric ? isNaN(b.value) : b.value === "";
      if (am !== bm) { return am ? 1 : -1; }
      var c = 0;
      if (!am) {
        c = numeric ? (a.value < b.value ? -1 : a.value > b.value ? 1 : 0)
                    : a.value.localeCompare(b.value, "en", { numeric: true, sensitivity: "base" });
      }
      return c !== 0 ? sign * c : a.index - b.index;
    });
    list.forEach(function (item) { item.unit.parentNode.appendChild(item.unit); });
  }

  function initSort(table) {
    units(table).forEach(function (unit, i) { unit.dataset.index = String(i); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button.sort");
      if (button) { button.addEventListener("click", function () { sortBy(table, th, col); }); }
    });
  }

  function applyFilters(form, table) {
    var f = {};
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name) { f[el.name] = el.value; } });
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var shown = heads.map(function (th) {
      if (!th.dataset.dataset) { return true; }
      return (!f.dataset || th.dataset.dataset === f.dataset) &&
             (!f.standin || th.dataset.standin === f.standin);
    });
    var narrowed = Boolean(f.dataset || f.standin);
    heads.forEach(function (th, i) { th.hidden = !shown[i]; });
    var all = units(table), visible = 0;
    all.forEach(function (unit) {
      var row = firstRow(unit), d = unit.dataset;
      Array.prototype.forEach.call(row.cells, function (cell, i) { cell.hidden = !shown[i]; });
      var ok = (!f.preset || d.preset === f.preset) && (!f.model || d.model === f.model) &&
               (!f.impl || d.impl === f.impl);
      if (ok && narrowed) {
        ok = heads.some(function (th, i) {
          return th.dataset.dataset && shown[i] && row.cells[i].dataset.v !== "";
        });
      }
      unit.hidden = !ok;
      if (ok) { visible += 1; }
    });
    var count = form.querySelector("output");
    if (count) { count.textContent = visible + " of " + all.length + " rows"; }
  }

  function initFilters(form) {
    var table = document.getElementById(form.getAttribute("data-table"));  // form.dataset: its "dataset" select
    if (!table) { return; }
    form.addEventListener("change", function () { applyFilters(form, table); });
    form.addEventListener("reset", function () {
      window.setTimeout(function () { applyFilters(form, table); }, 0);
    });
    applyFilters(form, table);
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copied(button, ok) {
    button.textContent = ok ? "Copied" : "Select and press Ctrl+C";
    window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy") : null;
    if (!button) { return; }
    var code = button.parentNode.querySelector("code");
    var text = code ? code.textContent : "";
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button, true); },
                                               function () { copied(button, fallbackCopy(text)); });
    } else {
      copied(button, fallbackCopy(text));
    }
  });

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), initSort);
  Array.prototype.forEach.call(document.querySelectorAll("form.filters"), initFilters);
}());
"""
