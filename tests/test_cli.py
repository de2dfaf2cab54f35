"""CLI behaviour: usage errors exit 2 with one line; help works everywhere; ls stays light."""

import json
import subprocess
import sys

import pytest

from bench.cli import build_parser, main
from bench.errors import UsageError

SUBCOMMANDS = [["run"], ["ls"], ["evaluate"], ["compare"], ["leaderboard"], ["assets"], ["assets", "check"],
               ["assets", "prepare"]]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", SUBCOMMANDS)
def test_help_on_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: bench" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "--suite", "beir"], "--method"),
        (["run", "--method", "dear", "--suite", "beir", "--preset", "huge"],
         "--preset huge: suite 'beir' has presets smoke, default, full, cpu-long"),
        (["run", "--method", "dear", "--suite", "beir", "--seed", "x"], "invalid int value"),
        (["run", "--method", "dear", "--suite", "bier"], "unknown suite 'bier'"),
        (["run", "--method", "m", "--suite", "s", "--set", "novalue"], "KEY=VALUE"),
        (["compare", "--suite", "s", "--methods", ",", "--baseline", "b"], "comma-separated"),
        (["ls", "widgets"], "invalid choice: 'widgets'"),
        (["leaderboard", "--results", "/nonexistent/results"], "no such results directory"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, fragment, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bench: error: ")
    assert fragment in lines[0]


def test_compare_without_results_is_usage_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", "--suite", "instruct", "--methods", "a,b",
                           "--baseline", "a", "--results", str(tmp_path))
    assert code == 2 and "no results for suite 'instruct'" in err


def test_parser_records_overrides():
    args = build_parser().parse_args(
        ["run", "--method", "kd", "--suite", "instruct", "--set", "lr=1e-4", "--set", "tag=x"])
    assert dict(args.overrides) == {"lr": 1e-4, "tag": "x"}


def test_ls_and_help_do_not_import_heavy_packages():
    code = (
        "import sys, io, contextlib\n"
        "from bench.cli import main\n"
        "for argv in (['ls'], ['--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'pyserini', 'lm_eval', 'ranx', 'numba')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_ls_lists_every_kind(capsys):
    code, out, _ = run_cli(capsys, "ls")
    assert code == 0
    for kind in ("methods:", "suites:", "losses:", "assets:"):
        assert kind in out
    assert "smollm2-135m-instruct" in out


def test_assets_check_json_is_parseable(capsys):
    code, out, _ = run_cli(capsys, "assets", "check", "--json")
    assert code in (0, 1)
    statuses = json.loads(out)
    assert {s["name"] for s in statuses} >= {"smollm2-135m-instruct", "all-minilm-l6-v2"}


def test_scale_flags_are_shorthands_for_set_keys(capsys):
    from bench.cli import build_parser
    from bench.cli_commands import _scale_overrides

    args = build_parser().parse_args(
        ["run", "--method", "dear", "--suite", "beir", "--train-queries", "500", "--epochs",
         "2", "--top-k", "50", "--group-size", "8", "--window", "20", "--stride", "10",
         "--set", "lr=0.001"])
    assert _scale_overrides(args) == {"train_queries": 500, "epochs": 2, "depth": 50,
                                      "group_size": 8, "window": 20, "stride": 10, "lr": 0.001}
    args = build_parser().parse_args(["run", "--method", "dear", "--suite", "beir",
                                      "--epochs", "2", "--set", "epochs=3"])
    with pytest.raises(UsageError, match="--epochs 2 and --set epochs=3 disagree"):
        _scale_overrides(args)
    # a suite without the setting names the flag in its one-line error
    assert main(["run", "--method", "ce", "--suite", "imagenet-lt", "--window", "4"]) == 2
    assert "--set window (--window): not a setting" in capsys.readouterr().err


def test_compare_seeds_passes_model_flags_to_the_runs_it_starts(monkeypatch, tmp_path):
    import bench.cli_commands as commands

    started = []
    monkeypatch.setattr(commands, "cmd_run", lambda args: started.append(args))
    args = build_parser().parse_args(
        ["compare", "--suite", "align", "--methods", "aligndistil", "--seeds", "1",
         "--teacher", "t", "--student", "s", "--judge", "j", "--results", str(tmp_path),
         "--work-dir", str(tmp_path / "work")])
    commands._run_missing_seeds(args, ["dpo", "aligndistil"])
    assert [(a.method, a.teacher, a.student, a.judge, a.work_dir) for a in started] == [
        ("dpo", "t", "s", "j", tmp_path / "work"), ("aligndistil", "t", "s", "j", tmp_path / "work")]


def test_compare_work_dir_is_checked_before_any_run_and_needs_seeds(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", "--suite", "instruct", "--methods", "fkl", "--seeds", "1",
                 "--results", str(tmp_path), "--work-dir", str(blocker)]) == 2
    assert "--work-dir" in capsys.readouterr().err
    assert main(["compare", "--suite", "instruct", "--methods", "fkl",
                 "--results", str(tmp_path), "--work-dir", str(tmp_path)]) == 2
    assert "--work-dir only applies with --seeds N" in capsys.readouterr().err


def _results_at_presets(tmp_path, presets):
    """The leaderboard fixture's records as the instruct suite's, once per preset."""
    from pathlib import Path

    from bench.core.results import ResultStore

    fixtures = ResultStore(Path(__file__).parent / "fixtures" / "results").load()
    store = ResultStore(tmp_path / "results")
    for shift, preset in enumerate(presets):  # each preset's scores shifted by 0.1 more
        for rec in fixtures:
            if rec["method"] in ("bm25", "dear"):
                metrics = {k: v + shift / 10 for k, v in rec["metrics"].items()}
                store.write({**rec, "suite": "instruct", "preset": preset, "metrics": metrics},
                            overwrite=True)
    return store.root


def test_compare_preset_keeps_only_that_presets_results(tmp_path, capsys):
    results = _results_at_presets(tmp_path, ["default", "full"])

    def compare(methods, *extra):
        code, out, err = run_cli(capsys, "compare", "--suite", "instruct", "--methods", methods,
                                 "--baseline", "bm25", "--dataset", "nfcorpus", "--results",
                                 str(results), "--json", *extra)
        return code, (json.loads(out) if code == 0 else err)

    code, rows = compare("dear")  # every preset: plain "dear" is the default row
    default = {d["method"]: d["mean"] for d in rows}
    code, rows = compare("dear [full]")
    assert code == 0 and {d["method"]: d["mean"] for d in rows}["dear [full]"] == \
        pytest.approx(default["dear"] + 0.1)
    code, rows = compare("dear", "--preset", "full")
    assert code == 0 and [d["method"] for d in rows] == ["bm25", "dear"]
    assert rows[1]["mean"] == pytest.approx(default["dear"] + 0.1)
    assert rows[0]["mean"] == pytest.approx(default["bm25"] + 0.1)
    assert rows[1]["p_value"] is not None
    code, err = compare("dear", "--preset", "smoke")
    assert code == 2 and err.count("\n") == 1
    assert "--preset smoke: no results of suite 'instruct' at this preset" in err
    assert "presets with results: default, full" in err
