"""``bench reproduce``: rebuild the recorded ``bench run`` argv, rerun it into a scratch
folder, and judge every metric with the tolerance the two machines call for.

Most tests use a fake ``run`` that writes a record into the scratch folder; the last ones
run a toy plug-in suite end to end through ``bench.cli.main`` (seconds).
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from bench.core import reproduce as rp
from bench.core.reproduce import (
    CPU_TOLERANCE,
    format_report,
    is_timing_metric,
    rebuild_argv,
    reproduce,
    tolerance_for,
)
from bench.core.results import ResultStore, new_record
from bench.errors import UsageError

COMMAND = "bench run --method toy-method --suite toy --out leaderboards/results --overwrite"


def make(metrics=None, *, command=COMMAND, config=None, cpu=None, threads=None, **kw):
    record = new_record(
        suite="toy", suite_version="1",
        dataset={"id": "toy/data", "checksum": "unknown", "split": "test",
                 "offline_stand_in": True, "num_items": 3},
        method=kw.pop("method", "toy-method"), model=kw.pop("model", "toy-model"),
        seed=kw.pop("seed", 0), preset=kw.pop("preset", "default"), main_score="score",
        metrics=metrics or {"score": 0.816, "latency_s": 6.34},
        config={**(config or {"n_items": 3}),
                **({"torch_threads": threads} if threads is not None else {})},
        wall_time_s=2.5, command=command, **kw)
    if cpu is not None:
        record["provenance"]["hardware"]["cpu"] = cpu
    return record


@pytest.fixture
def committed(tmp_path):
    """Write a committed record under tmp/committed (a results folder); returns a writer."""
    root = tmp_path / "committed"

    def write(record):
        return ResultStore(root).write(record, overwrite=True)

    return write


class FakeRun:
    """A ``run`` callable: writes ``record`` (the rerun's) into the argv's ``--out``."""

    def __init__(self, record=None, code=0):
        self.record, self.code, self.calls = record, code, []

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if self.record is not None:
            out = Path(argv[argv.index("--out") + 1])
            ResultStore(out).write(self.record, overwrite="--overwrite" in argv)
        return self.code


def row(report, name):
    return next(r for r in report.rows if r.name == name)


# ----------------------------------------------------------------- verdicts


def test_identical_metrics_on_the_same_machine_are_ok_and_exact(committed, tmp_path):
    path = committed(make())
    run = FakeRun(make())
    report = reproduce(path, scratch=tmp_path / "scratch", run=run)
    assert report.ok
    assert row(report, "score").tolerance.label == "exact"
    assert row(report, "score").difference == 0
    assert report.new_record_path.parent.parent.parent == tmp_path / "scratch"
    text = format_report(report)
    assert "REPRODUCED: all 2 metrics within tolerance" in text
    assert "committed:" in text and "reproduced:" in text and "wall time:" in text


def test_same_machine_is_exact_so_any_difference_fails(committed, tmp_path):
    path = committed(make({"score": 0.816}))
    report = reproduce(path, scratch=tmp_path / "s", run=FakeRun(make({"score": 0.816001})))
    assert not report.ok
    assert row(report, "score").within is False
    assert "NOT REPRODUCED: 1 of 1 metrics outside tolerance (score)" in format_report(report)


def test_across_cpus_the_measured_boolq_gap_is_within_and_more_is_not(committed, tmp_path):
    xeon = "Intel(R) Xeon(R) Platinum 8480+ (AMX)"
    path = committed(make({"score": 0.816}, cpu=xeon))
    ok = reproduce(path, scratch=tmp_path / "a", run=FakeRun(make({"score": 0.826})))
    assert ok.ok, format_report(ok)
    assert row(ok, "score").tolerance.value == CPU_TOLERANCE
    assert "different CPU" in ok.tolerance_basis
    bad = reproduce(path, scratch=tmp_path / "b", run=FakeRun(make({"score": 0.84})))
    assert not bad.ok
    assert row(bad, "score").within is False
    text = format_report(bad)
    assert xeon in text and "NO" in text


def test_same_cpu_different_threads_allows_a_thousandth(committed, tmp_path):
    path = committed(make({"score": 0.5}, threads=1))
    ok = reproduce(path, scratch=tmp_path / "a", run=FakeRun(make({"score": 0.5009},
                                                                    threads=4)))
    assert ok.ok and row(ok, "score").tolerance.label == "±0.001"
    assert "torch threads 1 vs 4" in ok.tolerance_basis
    bad = reproduce(path, scratch=tmp_path / "b", run=FakeRun(make({"score": 0.502},
                                                                     threads=4)))
    assert not bad.ok


def test_different_accelerators_count_as_different_hardware(committed, tmp_path):
    old = make({"score": 0.5})
    old["provenance"]["hardware"]["accelerator"] = "none"
    new = make({"score": 0.505})
    new["provenance"]["hardware"]["accelerator"] = "1x NVIDIA H100"
    report = reproduce(committed(old), scratch=tmp_path / "s", run=FakeRun(new))
    assert report.ok and row(report, "score").tolerance.value == CPU_TOLERANCE
    assert "accelerator none vs 1x NVIDIA H100" in report.tolerance_basis


def test_threads_are_found_in_a_config_sub_block(committed):
    record = make(config={"eval_protocol": {"torch_threads": 3}})
    assert rp.torch_threads(record) == (3, "config.eval_protocol")
    assert rp.torch_threads(make()) == (None, "not recorded")


def test_a_timing_metric_within_the_ratio_is_ok_beyond_it_not(committed, tmp_path):
    path = committed(make({"score": 0.5, "latency_s": 6.34, "tokens_per_s": 20.0}))
    ok = reproduce(path, scratch=tmp_path / "a", run=FakeRun(
        make({"score": 0.5, "latency_s": 8.35, "tokens_per_s": 14.0})))
    assert ok.ok, format_report(ok)
    assert row(ok, "latency_s").tolerance.label == "x1.5"
    assert "(x1.32)" in format_report(ok)
    bad = reproduce(path, scratch=tmp_path / "b", run=FakeRun(
        make({"score": 0.5, "latency_s": 10.0, "tokens_per_s": 20.0})))
    assert not bad.ok and row(bad, "latency_s").within is False


@pytest.mark.parametrize("name, timing", [
    ("latency_s", True), ("tokens_per_s", True), ("plain_tokens_per_s_sampling", True),
    ("speedup", True), ("speedup_sampling", True), ("wall_time_s", True),
    ("teacher_seconds", True), ("throughput", True), ("ndcg@10", False), ("score", False),
    ("draft_fraction_sampling", False), ("acceptance_rate_sampling", False),
    ("tau_sampling", False), ("new_tokens", False), ("mean_accepted", False),
])
def test_timing_metrics_are_named_by_word(name, timing):
    assert is_timing_metric(name) is timing


def test_tolerance_scales_with_magnitudes_above_one():
    tol = tolerance_for("generated_tokens", 92.76, same_cpu=False, same_threads=True)
    assert tol.within(92.76, 93.5) and not tol.within(92.76, 94.0)
    assert tolerance_for("score", 0.4, same_cpu=False, same_threads=True).value == 0.01
    explicit = tolerance_for("generated_tokens", 92.76, same_cpu=False, same_threads=True,
                             tolerance=0.01)
    assert explicit.value == 0.01 and not explicit.within(92.76, 93.5)


def test_explicit_tolerance_overrides_non_timing_metrics_only(committed, tmp_path):
    path = committed(make({"score": 0.5, "latency_s": 6.0}))
    new = make({"score": 0.53, "latency_s": 8.0})
    ok = reproduce(path, tolerance=0.05, scratch=tmp_path / "a", run=FakeRun(new))
    assert ok.ok
    assert row(ok, "score").tolerance.label == "±0.05"
    assert row(ok, "latency_s").tolerance.label == "x1.5"  # still a ratio
    bad = reproduce(path, tolerance=0.01, scratch=tmp_path / "b", run=FakeRun(new))
    assert not bad.ok and row(bad, "score").within is False
    zero = reproduce(path, tolerance=0, scratch=tmp_path / "c",
                     run=FakeRun(make({"score": 0.5, "latency_s": 6.0})))
    assert zero.ok
    with pytest.raises(UsageError, match="--tolerance -1"):
        reproduce(path, tolerance=-1, scratch=tmp_path / "d", run=FakeRun(new))


def test_a_missing_metric_fails_and_an_extra_one_is_listed_unjudged(committed, tmp_path):
    path = committed(make({"score": 0.5, "extra_a": 1.0}))
    report = reproduce(path, scratch=tmp_path / "s", run=FakeRun(
        make({"score": 0.5, "extra_b": 2.0})))
    assert not report.ok
    assert row(report, "extra_a").reproduced is None and row(report, "extra_a").within is False
    assert row(report, "extra_b").committed is None and row(report, "extra_b").within is None


def test_a_failed_rerun_or_no_record_is_not_ok(committed, tmp_path):
    path = committed(make())
    failed = reproduce(path, scratch=tmp_path / "a", run=FakeRun(make(), code=2))
    assert not failed.ok and failed.error == "the rerun exited with status 2"
    silent = reproduce(path, scratch=tmp_path / "b", run=FakeRun(None))
    assert not silent.ok and "wrote no record" in silent.error
    assert "error: the rerun wrote no record" in format_report(silent)


def test_a_changed_model_name_is_matched_with_a_warning(committed, tmp_path):
    path = committed(make())
    report = reproduce(path, scratch=tmp_path / "s", run=FakeRun(make(model="toy-model-v2")))
    assert report.ok
    assert any("'toy-model-v2'" in w for w in report.warnings)


# ----------------------------------------------------------------- provenance warnings


def test_commit_and_dirty_tree_warnings(committed, tmp_path):
    old = make()
    old["provenance"]["git_commit"] = "0" * 40
    old["provenance"]["git_dirty"] = True
    report = reproduce(committed(old), scratch=tmp_path / "s", run=FakeRun(make()))
    text = format_report(report)
    assert "differs from the recorded commit 000000000000" in text
    assert "dirty tree (uncommitted edits on top of 000000000000)" in text
    assert "0" * 40 + " (dirty tree)" in text


def test_environment_differences_are_warned(committed, tmp_path):
    old = make(config={"n_items": 3})
    old["provenance"]["package_versions"]["torch"] = "0.0.1"
    new = make(config={"n_items": 4, "added": 1})
    new["dataset"]["checksum"] = "sha256:" + "b" * 64
    report = reproduce(committed(old), scratch=tmp_path / "s", run=FakeRun(new))
    joined = "\n".join(report.warnings)
    assert "dataset checksum differs" in joined
    assert "torch 0.0.1 ->" in joined
    assert "config differs: added=(absent) -> 1, n_items=3 -> 4" in joined


# ----------------------------------------------------------------- bad input


def test_bad_or_missing_files_are_one_line_usage_errors(tmp_path):
    run = FakeRun(make())
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    wrong_schema = tmp_path / "wrong.json"
    wrong_schema.write_text(json.dumps({"suite": "x"}))
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    for path, message in [(tmp_path / "missing.json", "no such result file"),
                          (bad_json, "not valid JSON"),
                          (wrong_schema, "field '(top level)'"),
                          (binary, str(binary)),
                          (tmp_path, "not a file")]:
        with pytest.raises(UsageError, match=re.escape(message)) as info:
            reproduce(path, run=run)
        assert "\n" not in str(info.value)
    assert run.calls == []


def test_a_scratch_folder_inside_the_committed_results_is_refused(committed, tmp_path):
    path = committed(make())
    run = FakeRun(make())
    for scratch in (tmp_path / "committed", tmp_path / "committed" / "sub"):
        with pytest.raises(UsageError, match="inside the committed results folder"):
            reproduce(path, scratch=scratch, run=run)
    with pytest.raises(UsageError, match="--work-dir"):
        reproduce(path, scratch=tmp_path / "s", work_dir=tmp_path / "committed" / "w",
                  run=run)
    assert run.calls == []


# ----------------------------------------------------------------- argv


def test_argv_has_out_scratch_and_never_the_committed_results(committed, tmp_path):
    path = committed(make())
    run = FakeRun(make())
    report = reproduce(path, scratch=tmp_path / "scratch", run=run)
    (argv,) = run.calls
    assert argv == report.argv
    assert argv[0] == "run" and argv.count("--out") == 1
    assert argv[argv.index("--out") + 1] == str(tmp_path / "scratch")
    assert argv[argv.index("--work-dir") + 1] == str(tmp_path / "scratch" / "work")
    assert "leaderboards/results" not in argv and "--overwrite" not in argv
    assert not any(str(tmp_path / "committed") in a for a in argv)
    assert report.argv_source == "recorded command"
    assert "dropped --out leaderboards/results, --overwrite" in report.argv_notes


def test_default_scratch_is_a_new_temp_folder(committed, tmp_path):
    path = committed(make())
    run = FakeRun(make())
    first = reproduce(path, run=run)
    second = reproduce(path, run=run)
    try:
        assert first.scratch != second.scratch
        for report, argv in zip((first, second), run.calls, strict=True):
            assert argv[argv.index("--out") + 1] == str(report.scratch)
            assert not str(report.scratch).startswith(str(tmp_path / "committed"))
            assert report.ok
    finally:
        import shutil

        for report in (first, second):
            shutil.rmtree(report.scratch, ignore_errors=True)


def test_a_stale_record_in_a_given_scratch_is_overwritten(committed, tmp_path):
    path = committed(make())
    scratch = tmp_path / "s"
    ResultStore(scratch).write(make({"score": 0.1, "latency_s": 1.0}))
    run = FakeRun(make())
    report = reproduce(path, scratch=scratch, run=run)
    assert run.calls[0][-1] == "--overwrite"
    assert report.ok
    lazy = reproduce(path, scratch=scratch, run=FakeRun(None))  # writes nothing new
    assert not lazy.ok and "did not rewrite" in lazy.error


@pytest.mark.parametrize("command, kept", [
    ("bench run --suite toy --method toy-method --out=elsewhere --work-dir /w",
     ["run", "--suite", "toy", "--method", "toy-method"]),
    ("/usr/bin/bench run --method toy-method --suite toy --overw --ou x",
     ["run", "--method", "toy-method", "--suite", "toy"]),
    ("python -m bench run --method toy-method --suite toy --set 'x=a b'",
     ["run", "--method", "toy-method", "--suite", "toy", "--set", "x=a b"]),
])
def test_recorded_command_forms(command, kept):
    argv, source, _ = rebuild_argv(make(command=command), "/scratch")
    assert source == "recorded command"
    assert argv == [*kept, "--out", "/scratch", "--work-dir", "/scratch/work"]


@pytest.mark.parametrize("command, why", [
    ("bench compare --suite toy --methods toy-method --seeds 2", "`bench compare`"),
    ("bench run --method toy-method --suite toy --seed 3", "seed 3 != 0"),
    ("bench run --method toy-method --suite toy --limit 2", "--limit 2 != None"),
    ("", "no command recorded"),
    ("bench run --frobnicate", "does not parse"),
])
def test_an_unusable_command_falls_back_to_the_fields(command, why):
    argv, source, notes = rebuild_argv(make(command=command, seed=0), "/s")
    assert source == "rebuilt from record fields"
    assert argv[:7] == ["run", "--suite", "toy", "--method", "toy-method", "--seed", "0"]
    assert argv[-4:] == ["--out", "/s", "--work-dir", "/s/work"]
    assert why in " ".join(notes)


# ----------------------------------------------------------------- end to end (toy plug-in)

def _committed_run(toy, monkeypatch, argv):
    """Run ``bench`` ARGV as if from a shell (so the record's command is ARGV)."""
    from bench.cli import main

    saved = sys.argv
    sys.argv = ["bench", *argv]
    try:
        assert main(argv) == 0
    finally:
        sys.argv = saved
    (path,) = (toy / "committed").rglob("*.json")
    return path


def test_end_to_end_through_the_cli_reproduces_exactly(toy, monkeypatch):
    out = str(toy / "committed")
    path = _committed_run(toy, monkeypatch, ["run", "--method", "toy-method", "--suite",
                                             "toy", "--set", "scale=2", "--limit", "2",
                                             "--out", out])
    before = path.read_bytes()
    report = reproduce(path, scratch=toy / "scratch")
    assert report.ok, format_report(report)
    assert report.argv_source == "recorded command"
    assert report.argv[:10] == ["run", "--method", "toy-method", "--suite", "toy",
                                "--set", "scale=2", "--limit", "2", "--out"]
    assert report.new_record_path.is_file()
    assert str(report.new_record_path).startswith(str(toy / "scratch"))
    assert row(report, "score").tolerance.label == "exact"
    assert path.read_bytes() == before  # the committed record is untouched
    assert list((toy / "committed").rglob("*.json")) == [path]


def test_end_to_end_fallback_rebuilds_set_values_from_the_config(toy, monkeypatch):
    out = str(toy / "committed")
    path = _committed_run(toy, monkeypatch, ["run", "--method", "toy-method", "--suite",
                                             "toy", "--set", "scale=3", "--out", out])
    record = json.loads(path.read_text())
    record["provenance"]["command"] = "bench compare --suite toy --methods toy-method"
    path.write_text(json.dumps(record))
    report = reproduce(path, scratch=toy / "scratch")
    assert report.argv_source == "rebuilt from record fields"
    assert ["--set", "scale=3.0"] == report.argv[report.argv.index("--set"):][:2]
    assert "--set n_items" not in " ".join(report.argv)  # at its default
    assert report.ok, format_report(report)


def test_end_to_end_a_changed_score_is_reported(toy, monkeypatch):
    out = str(toy / "committed")
    path = _committed_run(toy, monkeypatch, ["run", "--method", "toy-method", "--suite",
                                             "toy", "--out", out])
    record = json.loads(path.read_text())
    record["metrics"]["score"] += 0.05
    path.write_text(json.dumps(record))
    report = reproduce(path, scratch=toy / "scratch")
    assert not report.ok
    assert row(report, "score").within is False
    assert os.path.isdir(report.scratch)
