"""The method–suite contract: suite metadata, typed settings, recipe resolution, `bench ls`."""

import json
import math
import re
import subprocess
import sys

import pytest

from bench.cli import main
from bench.contracts import PROTOCOLS, methods_for, resolve_recipe
from bench.errors import UsageError
from bench.suite import SUITES, DatasetSpec, RunOptions, Setting, SuiteMetadata
from methods import METHODS


def test_discovery_reads_what_each_suite_class_declares():
    assert set(SUITES.names()) == {"align", "beir", "gsm8k", "imagenet-lt", "instruct",
                                   "lm", "specbench", "trec-dl"}
    for entry in SUITES.entries():
        cls = SUITES.get(entry.name)
        meta = entry.meta["metadata"]
        assert cls.metadata == meta, entry.name
        assert (cls.name, cls.version, cls.main_score, cls.baseline, cls.citation) == \
            (meta.name, meta.version, meta.main_score, meta.baseline, meta.citation)
        assert cls.datasets == meta.datasets and cls.presets == meta.preset_names
        assert (entry.summary, entry.citation) == (meta.summary, meta.citation)


def test_literal_dataset_lists_match_the_data_modules():
    from bench.instruct.suite import TASKS
    from bench.specdec.data import CATEGORIES

    spec = SUITES.entry("specbench").meta["metadata"]
    assert [(d.id, d.description, d.stands_in_for) for d in spec.datasets[:-1]] == \
        [(f"offline/specbench-{c.name}", c.description, c.stands_in_for) for c in CATEGORIES]
    instruct = SUITES.entry("instruct").meta["metadata"]
    assert [(d.id, d.description) for d in instruct.datasets] == \
        [(t.dataset_id, t.description) for t in TASKS]


def test_every_declared_method_resolves_to_its_suites_protocol():
    pairs = 0
    for suite in SUITES.names():
        family = SUITES.entry(suite).meta["family"]
        assert methods_for(suite), suite
        for entry in methods_for(suite):
            recipe = resolve_recipe(entry.name, suite)
            assert isinstance(recipe, PROTOCOLS[family]), (entry.name, suite)
            pairs += 1
    assert pairs >= 40
    # one name, a different recipe per suite
    assert type(resolve_recipe("teacher", "gsm8k")).__name__ == "TeacherRow"
    assert type(resolve_recipe("teacher", "instruct")).__name__ == "Teacher"
    assert type(resolve_recipe("sft", "align")).__name__ == "ReferencePolicy"


def test_a_method_on_a_suite_it_does_not_declare_is_a_one_line_error():
    with pytest.raises(UsageError, match="does not run on suite 'beir'; choose one of: bm25"):
        resolve_recipe("fkl", "beir")
    with pytest.raises(UsageError, match="did you mean 'dear'"):
        resolve_recipe("deer", "beir")


def _meta(**changes):
    base = dict(name="toy", version="1", summary="s", citation="c", family="generation",
                main_score="m", baseline="b", datasets=(DatasetSpec("d", "data"),),
                settings=(Setting("n", "int", 3, min=1),))
    return SuiteMetadata(**{**base, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"family": "audio"}, "family 'audio'"),
    ({"test": "anova"}, "test 'anova'"),
    ({"datasets": ()}, "datasets must be non-empty"),
    ({"main_score": " "}, "main_score must be a non-empty string"),
    ({"presets": {"smoke": {}}}, "presets must include 'default'"),
    ({"presets": {"default": {"epochs": 2}}}, "sets 'epochs', which is not a declared"),
    ({"presets": {"default": {"n": 0}}}, "n=0: expected an integer >= 1"),
    ({"settings": (Setting("n", "int", 1), Setting("n", "int", 2))}, "unique"),
])
def test_suite_metadata_is_validated_when_built(changes, message):
    with pytest.raises(ValueError, match=message):
        _meta(**changes)


def test_setting_declarations_are_checked():
    with pytest.raises(ValueError, match="default None needs nullable"):
        Setting("n", "int", None)
    with pytest.raises(ValueError, match="expected an integer >= 1"):
        Setting("n", "int", 0, min=1)
    with pytest.raises(ValueError, match="type must be"):
        Setting("n", "list", [])


@pytest.mark.parametrize("setting, value, expected", [
    (Setting("n", "int", 1, min=1), 5, 5),
    (Setting("n", "int", 1, min=1, nullable=True), None, None),
    (Setting("x", "float", 1.0), 2, 2.0),
    (Setting("b", "bool", True), False, False),
    (Setting("s", "str", "a"), 3, "3"),
    (Setting("c", "str", "a", choices=("a", "b")), "b", "b"),
    (Setting("j", "any", None), [1, 2], [1, 2]),
])
def test_setting_values_are_parsed(setting, value, expected):
    assert setting.check(value) == expected


@pytest.mark.parametrize("setting, value, message", [
    (Setting("epochs", "int", 1, min=1), "abc", "--set epochs=abc: expected an integer >= 1"),
    (Setting("epochs", "int", 1, min=1), 1.5, "expected an integer"),
    (Setting("epochs", "int", 1, min=1), True, "expected an integer"),
    (Setting("depth", "int", 20, min=1, max=100), -1, "depth=-1: expected an integer in [1, 100]"),
    (Setting("depth", "int", 20, min=1, max=100), 101, "in [1, 100]"),
    (Setting("lr", "float", 1e-3, min=0), math.nan, "lr=NaN: expected a finite number"),
    (Setting("lr", "float", 1e-3), math.inf, "expected a finite number"),
    (Setting("flag", "bool", True), "yes", "expected true or false"),
    (Setting("c", "str", "a", choices=("a", "b")), "z", "one of a, b"),
    (Setting("n", "int", 1), None, "n=null"),
    (Setting("j", "any", None), [1.0, math.nan], "expected a JSON value"),
])
def test_bad_setting_values_are_one_line_errors(setting, value, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        setting.check(value)
    assert "\n" not in str(info.value)


def test_resolve_settings_layers_presets_and_checks_set_values():
    suite = SUITES.get("gsm8k")()
    recipe = resolve_recipe("cot-sft", "gsm8k")
    settings = suite.resolve_settings(RunOptions(method="cot-sft", preset="smoke"), recipe)
    assert settings["n_train"] == 24 and settings["epochs"] == 1  # suite, then recipe preset
    options = RunOptions(method="cot-sft", overrides={"n_train": 10, "epochs": 3})
    settings = suite.resolve_settings(options, recipe)
    assert (settings["n_train"], settings["epochs"]) == (10, 3)
    for overrides, message in [({"n_train": "abc"}, "n_train=abc: expected an integer"),
                               ({"n_train": 0}, "n_train=0"),
                               ({"nope": 1}, "--set nope: not a setting of method 'cot-sft'"),
                               ({"dataset": "x"}, "--set dataset"),
                               ({"epochs": "abc"}, "epochs=abc: expected an integer")]:
        with pytest.raises(UsageError, match=message):
            suite.resolve_settings(RunOptions(method="cot-sft", overrides=overrides), recipe)


def test_set_values_are_checked_before_any_work(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w")]
    for argv, message in [
        (["--method", "bm25", "--suite", "beir", "--set", "depth=-1"], "depth=-1"),
        (["--method", "bm25", "--suite", "beir", "--set", "depth=NaN"], "depth=NaN"),
        (["--method", "bm25", "--suite", "beir", "--set", "n_queries=abc"], "n_queries=abc"),
        (["--method", "bm25", "--suite", "beir", "--preset", "huge"], "--preset huge"),
        (["--method", "fkl", "--suite", "beir"], "does not run on suite 'beir'"),
    ]:
        assert main(["run", *argv, *out]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


def test_bench_ls_imports_no_torch_and_prints_the_matrix():
    code = ("import sys; from bench.cli import main; main(['ls']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "method x suite" in out
    matrix = out.split("method x suite")[1].splitlines()
    row = next(line for line in matrix if line.strip().startswith("teacher-direct"))
    assert row.split()[1:] == [".", ".", "x", ".", ".", ".", ".", "."]  # gsm8k only


def test_bench_ls_suite_lists_its_methods_settings_and_presets(capsys):
    assert main(["ls", "--suite", "beir"]) == 0
    out = capsys.readouterr().out
    assert "presets: smoke, default, full, cpu-long" in out
    assert "depth = 20" in out and "an integer in [1, 100]" in out
    methods = out.split("  methods:\n")[1]
    assert [line.split()[0] for line in methods.splitlines()] == \
        ["bm25", "dear", "llm-zeroshot", "minilm", "rerank-teacher"]
    assert "arXiv:2508.16998" in methods


def test_every_set_key_of_every_recipe_is_typed():
    from bench.contracts import recipe_option, recipe_settings

    for suite in SUITES.names():
        declared = {s.name for s in SUITES.entry(suite).meta["metadata"].settings}
        for entry in methods_for(suite):
            recipe = resolve_recipe(entry.name, suite)
            untyped = set(recipe_option(recipe, "settings_keys")) - declared - \
                set(recipe_settings(recipe))
            assert not untyped, (suite, entry.name, untyped)


def test_recipe_keys_are_checked_against_their_config_types():
    suite = SUITES.get("beir")()
    dear = resolve_recipe("dear", "beir")
    for key, value, message in [("epochs", "abc", "epochs=abc: expected an integer >= 0"),
                                ("alpha", 1.5, "alpha=1.5: expected a finite number in [0, 1]"),
                                ("stage2_epochs", -1, "stage2_epochs=-1"),
                                ("stage2", "no", "expected true or false"),
                                ("lr", math.nan, "lr=NaN")]:
        with pytest.raises(UsageError, match=re.escape(message)):
            suite.resolve_settings(RunOptions(method="dear", overrides={key: value}), dear)
    ok = suite.resolve_settings(RunOptions(method="dear", overrides={"stage2_epochs": 3}), dear)
    assert ok["stage2_epochs"] == 3


def test_every_method_entry_names_known_suites():
    from bench.contracts import check_declarations

    check_declarations()
    for entry in METHODS.entries():
        assert entry.summary and entry.citation, entry.name


def test_suite_metadata_round_trips_through_json_friendly_fields():
    meta = SUITES.entry("beir").meta["metadata"]
    assert json.dumps([s.default for s in meta.settings])  # defaults are plain JSON
    assert meta.defaults("smoke") == {"n_queries": 25, "depth": 10, "eval_split": "test"}
    assert meta.defaults("full") == {"n_queries": None, "depth": 100, "eval_split": "test"}
