"""Methods, losses and suites from outside the package: DISTILLBENCH_PLUGINS folders."""

import json
import textwrap

import pytest

from bench.cli import main
from bench.suite import SUITES
from methods import METHODS
from methods.losses import LOSSES

TOY_METHOD = '''
"""A toy plug-in: token-level symmetric KL (forward + reverse) on the instruct suite."""
REGISTRY = [
    {"name": "toy-sym-kl", "suites": ["instruct"], "target": "SymmetricKL",
     "summary": "toy plug-in: symmetric KL", "citation": "Jeffreys 1946"},
    {"name": "toy_sym_kl", "kind": "loss", "target": "symmetric_kl",
     "summary": "toy plug-in loss", "citation": "Jeffreys 1946"},
]

from methods.losses.divergences import forward_kl, reverse_kl
from methods.instruct.token_kd import TokenKD


def symmetric_kl(student_logits, teacher_logits, *, mask=None, temperature=1.0):
    return (forward_kl(student_logits, teacher_logits, mask=mask, temperature=temperature)
            + reverse_kl(student_logits, teacher_logits, mask=mask, temperature=temperature))


class SymmetricKL(TokenKD):
    def __init__(self):
        super().__init__(symmetric_kl, name="toy-sym-kl")
'''


@pytest.fixture
def plugins(plugin_folder):
    return plugin_folder


def test_a_plugin_method_and_loss_are_listed(plugins, capsys):
    (plugins / "toy.py").write_text(TOY_METHOD)
    assert main(["ls", "--suite", "instruct"]) == 0
    assert "toy-sym-kl" in capsys.readouterr().out
    assert "toy_sym_kl" in LOSSES.names()
    assert callable(LOSSES.get("toy_sym_kl"))
    assert METHODS.entry("toy-sym-kl").origin.endswith("toy.py")


@pytest.mark.slow
def test_a_plugin_method_runs_on_instruct_without_editing_the_package(
        plugins, tiny_chat_model_dir, tmp_path):
    (plugins / "toy.py").write_text(TOY_METHOD)
    common = ["--suite", "instruct", "--preset", "smoke", "--teacher", str(tiny_chat_model_dir),
              "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
              "--limit", "2", "--set", "max_new_tokens=4", "--set", "train_per_task=4",
              "--set", "student_layers=1", "--set", "mixed_precision=no",
              "--set", "gen_batch_size=4", "--set", "max_context_tokens=16",
              "--set", "max_steps=2"]
    assert main(["run", "--method", "toy-sym-kl", *common]) == 0
    files = sorted((tmp_path / "results" / "instruct").rglob("toy-sym-kl*.json"))
    assert len(files) == 3
    record = json.loads(files[0].read_text())
    assert record["method"] == "toy-sym-kl" and record["config"]["train_steps"] == 2


@pytest.mark.parametrize("source, message", [
    ('REGISTRY = [{"name": "x", "target": "X", "suites": ["nope"]}]',
     "method 'x' (", ),
    ('REGISTRY = [{"name": "x", "target": "X"}]', "needs \"suites\": [...]"),
    ('REGISTRY = [{"name": "fkl", "target": "X", "suites": ["instruct"]}]',
     "method 'fkl'"),
    ("REGISTRY = [", "syntax error"),
])
def test_a_bad_plugin_is_a_one_line_error_at_ls(plugins, capsys, source, message):
    (plugins / "bad.py").write_text(source)
    assert main(["ls"]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.py" in err and err.count("\n") == 1, err


def test_a_plugin_that_fails_to_import_names_the_file(plugins, capsys, tmp_path):
    (plugins / "broken.py").write_text(textwrap.dedent('''
        REGISTRY = [{"name": "broken", "target": "X", "suites": ["instruct"]}]
        raise SystemExit(3)
    '''))
    assert main(["run", "--method", "broken", "--suite", "instruct",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and "SystemExit" in err and err.count("\n") == 1, err


def test_a_plugin_folder_that_does_not_exist_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("DISTILLBENCH_PLUGINS", "/no/such/folder")
    METHODS.reset()
    try:
        assert main(["ls"]) == 2
        assert "DISTILLBENCH_PLUGINS: '/no/such/folder' is not a folder" in \
            capsys.readouterr().err
    finally:
        monkeypatch.delenv("DISTILLBENCH_PLUGINS")
        METHODS.reset()


def test_a_plugin_suite_is_discovered_with_its_metadata(plugins, capsys):
    (plugins / "mysuite.py").write_text(textwrap.dedent('''
        from bench.suite import DatasetSpec, Setting, Suite, SuiteMetadata

        TOY = SuiteMetadata(
            name="toy-suite", version="1", summary="a toy suite", citation="nobody",
            family="generation", main_score="rougeL", baseline="sft",
            datasets=(DatasetSpec("toy/data", "toy data"),),
            settings=(Setting("n", "int", 2, "items", min=1),))


        class ToySuite(Suite):
            metadata = TOY

            def run(self, options):
                return []
    '''))
    assert "toy-suite" in SUITES.names()
    assert SUITES.get("toy-suite").metadata == SUITES.entry("toy-suite").meta["metadata"]
    assert main(["ls", "--suite", "toy-suite"]) == 0
    assert "n = 2: items" in capsys.readouterr().out
