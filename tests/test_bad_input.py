"""Bad input never costs a run or gives a silent wrong score: the CLI's bad-input table.

Every case exits 2 (or 1 for `bench assets check`) with one line on stderr naming the
flag, file or field and what to do, and writes nothing. The suite-level cases run a toy
plug-in suite whose `run` only builds a record, so the table costs seconds.
"""

import json
import textwrap

import pytest

from bench.cli import main


def _one_line_error(capsys, code, expected_code=2):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.count("\n") == 1 and err.startswith("bench: error: "), err
    return err


def _refused_before_any_work(tmp_path, capsys, argv):
    """Run ``bench run argv`` with a fresh --out and --work-dir: one-line exit 2, neither
    folder created; returns the error line."""
    out, work = tmp_path / "results", tmp_path / "work"
    err = _one_line_error(capsys, main(["run", *argv, "--out", str(out), "--work-dir",
                                        str(work)]))
    assert not out.exists() and not work.exists()
    return err


RUN = ["run", "--method", "toy-method", "--suite", "toy"]


@pytest.mark.parametrize("argv, message", [
    (["--set", "n_items=abc"], "--set n_items=abc: expected an integer >= 1"),
    (["--set", "n_items=0"], "--set n_items=0: expected an integer >= 1"),
    (["--set", "scale=NaN"], "--set scale=NaN: expected a finite number in [0, 10]"),
    (["--set", "scale=Infinity"], "expected a finite number"),
    (["--set", "scale=11"], "scale=11: expected a finite number in [0, 10]"),
    (["--set", "nope=1"], "--set nope: not a setting of method 'toy-method' on suite 'toy'"),
    (["--method", "toy-method"], "--method given twice"),
    (["--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["--seed", "1", "--seed", "2"], "--seed given twice"),
    (["--limit", "0"], "--limit: must be >= 1, got 0"),
    (["--preset", "huge"], "--preset huge: suite 'toy' has presets smoke, default, full"),
    (["--loss", "x.py:f"], "argument --loss: not allowed with argument --method"),
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
])
def test_bad_run_flags_are_one_line_errors_before_any_work(toy, capsys, argv, message):
    out = toy / "results"
    err = _one_line_error(capsys, main([*RUN, *argv, "--out", str(out)]))
    assert message in err
    assert not out.exists()


def test_an_untyped_recipe_key_still_rejects_nan(toy, capsys):
    # A plug-in's epochs has no declared type and no value to take one from: any finite
    # JSON value passes (built-in recipes type every key: tests/test_contract.py).
    assert main([*RUN, "--set", "epochs=2", "--out", str(toy / "r")]) == 0
    assert main([*RUN, "--set", "epochs=NaN", "--out", str(toy / "r2")]) == 2
    assert "epochs=NaN" in capsys.readouterr().err


def test_out_and_cache_are_checked_before_any_work(toy, capsys, monkeypatch):
    a_file = toy / "a-file"
    a_file.write_text("x")
    for argv, message in [(["--out", str(a_file)], f"--out {a_file}: is a file"),
                          (["--out", str(a_file / "sub")], "cannot create it"),
                          (["--work-dir", str(a_file)], f"--work-dir {a_file}: is a file")]:
        err = _one_line_error(capsys, main([*RUN, *argv]))
        assert message in err
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(a_file))
    err = _one_line_error(capsys, main([*RUN, "--out", str(toy / "r")]))
    assert f"DISTILLBENCH_CACHE {a_file}: is a file" in err
    assert not (toy / "r").exists()
    err = _one_line_error(capsys, main(["assets", "prepare", "nothing-here"]))
    assert "DISTILLBENCH_CACHE" in err


def test_assets_check_reports_an_unusable_cache(toy, capsys, monkeypatch):
    a_file = toy / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(a_file))
    assert main(["assets", "check"]) == 1
    assert f"DISTILLBENCH_CACHE {a_file}: is a file" in capsys.readouterr().err


def test_leaderboard_out_must_be_a_writable_folder(toy, capsys):
    a_file = toy / "a-file"
    a_file.write_text("x")
    (toy / "results").mkdir()
    err = _one_line_error(capsys, main(["leaderboard", "--results", str(toy / "results"),
                                        "--out", str(a_file)]))
    assert f"--out {a_file}: is a file" in err


def test_a_limited_run_is_its_own_dataset_and_never_replaces_the_full_one(toy):
    out = toy / "results"
    assert main([*RUN, "--out", str(out)]) == 0
    assert main([*RUN, "--limit", "2", "--out", str(out)]) == 0
    files = sorted(out.rglob("*.json"))
    assert len(files) == 2
    ids = sorted(json.loads(f.read_text())["dataset"]["id"] for f in files)
    assert ids == ["toy/data", "toy/data@limit2"]
    limited = next(r for r in map(lambda f: json.loads(f.read_text()), files)
                   if r["dataset"]["id"].endswith("@limit2"))
    assert limited["provenance"]["runtime"] == {"device": "cpu", "dtype": "float32"}
    assert limited["config"]["limit"] == 2 and len(limited["per_item"]["score"]) == 2


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(3)\n", "importing {path} raised SystemExit: exit status 3 "
     "(loss.py, line 2)"),
    ("x = 1 / 0\n", "raised ZeroDivisionError: division by zero (loss.py, line 1)"),
    ("def f(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
     "    raise TypeError('my own bug')\n",
     "failed on a [2, 3, 7] test batch: TypeError: my own bug (loss.py, line 2)"),
    ("def f(student_logits, teacher_logits):\n    return student_logits.sum()\n",
     "must accept (student_logits, teacher_logits, *, mask=None, temperature=1.0)"),
    ("def f(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
     "    return float(student_logits.sum())\n", "must return a 0-dim tensor"),
])
def test_a_bad_user_loss_is_one_line_naming_file_line_and_exception(tmp_path, capsys, body,
                                                                    message):
    path = tmp_path / "loss.py"
    path.write_text(textwrap.dedent(body))
    err = _one_line_error(capsys, main(["run", "--loss", f"{path}:f", "--suite", "instruct",
                                        "--out", str(tmp_path / "r")]))
    assert message.format(path=path) in err
    assert "Warning" not in err


def test_compare_options_that_need_seeds_say_so(capsys, tmp_path):
    err = _one_line_error(capsys, main(["compare", "--suite", "instruct", "--methods", "fkl",
                                        "--teacher", "x", "--results", str(tmp_path)]))
    assert "--teacher only applies with --seeds N" in err
    err = _one_line_error(capsys, main(["compare", "--suite", "instruct", "--methods", "fkl",
                                        "--power", "-1", "--results", str(tmp_path)]))
    assert "--power -1.0: expected a positive difference" in err


def test_compare_checks_a_user_loss_entry_before_any_run(capsys, tmp_path):
    err = _one_line_error(capsys, main(["compare", "--suite", "instruct", "--methods",
                                        f"fkl,{tmp_path}/none.py:kl", "--seeds", "1",
                                        "--results", str(tmp_path)]))
    assert "none.py:kl" in err and "does not exist" in err
    (tmp_path / "ok.py").write_text("def kl(s, t, *, mask=None, temperature=1.0):\n"
                                    "    return (s - t).pow(2).mean()\n")
    err = _one_line_error(capsys, main(["compare", "--suite", "specbench", "--methods",
                                        f"ar,{tmp_path}/ok.py:kl", "--results", str(tmp_path)]))
    assert "suite 'specbench' does not train with token-level losses" in err


def test_a_dirty_checkout_may_not_write_committed_rows(toy, capsys, monkeypatch):
    from pathlib import Path

    import bench.core.results as results

    monkeypatch.setattr(results, "git_state", lambda: ("abc", True))
    out = Path(__file__).resolve().parent.parent / "leaderboards" / "results-test-never-written"
    err = _one_line_error(capsys, main([*RUN, "--out", str(out)]))
    assert "uncommitted changes" in err and "--allow-dirty" in err
    assert not out.exists()
    assert main([*RUN, "--out", str(toy / "elsewhere")]) == 0  # outside leaderboards/: fine


@pytest.mark.parametrize("argv, message", [
    (["--method", "eagle", "--set", "draft_vocab=-5"], "--set draft_vocab=-5: expected an integer >= 0"),
    (["--method", "pld", "--set", "max_ngram=0"], "--set max_ngram=0"),
    (["--method", "pld", "--set", "k=0"], "--set k=0"),
    (["--method", "recycling", "--set", "candidates=0"], "--set candidates=0"),
])
def test_bad_speculative_settings_are_one_line_errors_before_any_work(tmp_path, capsys, argv,
                                                                      message):
    out = tmp_path / "results"
    err = _one_line_error(capsys, main(["run", "--suite", "specbench", *argv, "--out", str(out),
                                        "--work-dir", str(tmp_path / "work")]))
    assert message in err
    assert not out.exists() and not (tmp_path / "work" / "specbench").exists()


def test_a_draft_vocabulary_larger_than_the_target_s_is_refused(tmp_path):
    from types import SimpleNamespace

    from conftest import tiny_llama

    from bench.errors import UsageError
    from methods.specdec.drafts import Eagle

    context = SimpleNamespace(target=tiny_llama(32), settings={"draft_vocab": 33},
                              options=SimpleNamespace(preset="default", seed=0))
    with pytest.raises(UsageError, match="draft_vocab=33: the target's vocabulary has 32"):
        Eagle().build_draft(context)


@pytest.mark.parametrize("argv", [
    ["--method", "fkl", "--suite", "lm", "--student"],
    ["--method", "fkl", "--suite", "instruct", "--teacher"],
    ["--method", "cot-sft", "--suite", "gsm8k", "--teacher"],
    ["--method", "dear", "--suite", "beir", "--student"],
])
def test_more_student_layers_than_the_model_has_is_refused_before_any_work(
        tmp_path, capsys, tiny_chat_model_dir, argv):
    err = _refused_before_any_work(tmp_path, capsys, [*argv, str(tiny_chat_model_dir),
                                                      "--set", "student_layers=3"])
    assert "--set student_layers=3:" in err and "has 2 layers; choose at most 2" in err


@pytest.mark.parametrize("argv, key", [
    (["--method", "ce", "--suite", "lm"], "batch_size"),
    (["--method", "sft", "--suite", "lm"], "sample_tokens"),
    (["--method", "ce", "--suite", "lm"], "checkpoint_every"),
    (["--method", "fkl", "--suite", "instruct"], "batch_size"),
    (["--method", "cot-sft", "--suite", "gsm8k"], "batch_size"),
    (["--method", "skip-thinking", "--suite", "gsm8k"], "n_chunks"),
    (["--method", "eagle", "--suite", "specbench"], "batch_size"),
])
def test_a_zero_count_is_refused_before_any_work(tmp_path, capsys, argv, key):
    err = _refused_before_any_work(tmp_path, capsys, [*argv, "--set", f"{key}=0"])
    assert f"--set {key}=0: expected an integer >= 1" in err


def test_config_counts_and_declared_minima_become_setting_bounds():
    from dataclasses import dataclass, field

    from bench.contracts import dataclass_settings

    @dataclass
    class Config:
        batch_size: int = 4
        epochs: int = 1
        warmup: float = 0.1
        layers: int = field(default=2, metadata={"min": 1})

    specs = {s.name: s for s in dataclass_settings(Config)}
    assert (specs["batch_size"].min, specs["epochs"].min, specs["warmup"].min,
            specs["layers"].min) == (1, 0, 0, 1)


@pytest.mark.parametrize("argv, message", [
    (["--method", "ce", "--suite", "lm", "--set", "mixed_precision=fp8"],
     "--set mixed_precision=fp8: expected one of no, bf16, fp16"),
    (["--method", "ce", "--suite", "lm", "--set", "warmup_fraction=2"],
     "--set warmup_fraction=2: expected a finite number in [0, 1]"),
    (["--method", "eagle", "--suite", "specbench", "--set", "betas=abc"],
     '--set betas="abc": expected two numbers in [0, 1)'),
    (["--method", "fspad", "--suite", "specbench", "--set", "betas=[2,3]"],
     "--set betas=[2, 3]: expected two numbers in [0, 1)"),
    (["--method", "eagle", "--suite", "specbench", "--set", "schedule=foo"],
     "--set schedule=foo: expected one of cosine, linear, constant"),
    (["--method", "aligndistil", "--suite", "align", "--set", "teacher_dtype=int8"],
     "--set teacher_dtype=int8: expected one of float32, bfloat16, float16"),
])
def test_a_choice_fraction_or_pair_out_of_range_is_refused_before_any_work(tmp_path, capsys,
                                                                          argv, message):
    assert message in _refused_before_any_work(tmp_path, capsys, argv)


def test_betas_is_checked_only_when_given_and_accepts_both_of_its_forms():
    from methods.specdec.drafts import FeatureHeadRecipe

    for settings in ({}, {"betas": "0.8,0.9"}, {"betas": [0.9, 0.95]}):
        FeatureHeadRecipe.check_settings(settings)


@pytest.mark.parametrize("argv, message", [
    (["--method", "cot-sft", "--suite", "gsm8k", "--dataset", "gsm8k"], "DISTILLBENCH_ONLINE=1"),
    (["--method", "cot-sft", "--suite", "gsm8k", "--dataset", "gsm8k",
      "--set", "eval_split=validation"], "gsm8k has no validation items"),
    (["--method", "aligndistil", "--suite", "align", "--teacher", "x"],
     "--teacher: suite 'align' has no teacher flag"),
])
def test_a_suites_own_refusal_leaves_no_empty_out_folder(tmp_path, capsys, monkeypatch, argv,
                                                         message):
    """Checks a suite makes inside its run (its datasets, flags it has no use for) come after
    --out is made; the refused run removes the folders it made, so none is left empty."""
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    assert message in _refused_before_any_work(tmp_path, capsys, argv)


def test_a_refused_run_keeps_an_out_folder_that_existed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    out = tmp_path / "results"
    out.mkdir()
    code = main(["run", "--method", "cot-sft", "--suite", "gsm8k", "--dataset", "gsm8k",
                 "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert "DISTILLBENCH_ONLINE=1" in _one_line_error(capsys, code)
    assert out.is_dir()
