"""The suite side of the method–suite contract: one validated metadata object per suite.

A suite file declares, at module level, ``METADATA = SuiteMetadata(...)`` built from
literals only (strings, numbers, tuples, dicts and nested ``DatasetSpec`` / ``Setting``
calls), and its ``Suite`` subclass says ``metadata = METADATA``. Discovery
(:mod:`bench.registry`) reads that literal with ``ast`` without importing the suite, so
``bench --help`` and ``bench ls`` import no torch; the class reads the same object when it
runs, and a test checks that the two agree. The CLI (presets, ``--set``), ``bench ls`` and
the leaderboard read nothing else about a suite (mteb's ``TaskMetadata`` is the model).

Settings are typed and ranged, so ``--set`` values are parsed and checked before any
work starts. Which recipe runs, and what it must provide, is :mod:`bench.contracts`.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import UsageError
from bench.registry import Registry

# Presets every suite has; a suite may add its own (e.g. ``cpu-long``).
BASE_PRESETS = ("smoke", "default", "full")
FAMILIES = ("retrieval", "generation", "reasoning", "align", "specdec", "vision")
# Significance tests and corrections bench.core.stats implements (named here, torch- and
# numpy-free, for the CLI and the metadata checks).
TESTS = ("auto", "ttest", "permutation", "bootstrap", "randomization")
CORRECTIONS = ("holm", "bh", "none")
SETTING_TYPES = ("int", "float", "bool", "str", "any")
# `bench run` flags that are shorthands for one --set key each: key -> (flag, help).
SCALE_FLAGS = {
    "train_queries": ("--train-queries", "training queries (beir/trec-dl: DeAR)"),
    "epochs": ("--epochs", "training epochs"),
    "depth": ("--top-k", "rerank the top N BM25 candidates (beir/trec-dl)"),
    "group_size": ("--group-size", "passages per training query (DeAR stage 1)"),
    "window": ("--window", "listwise window (DeAR stage 2)"),
    "stride": ("--stride", "listwise stride (DeAR stage 2)"),
}


# Licence identifiers a ``licence`` field may name (SPDX); anything else is written as
# "see upstream: <url>" (or "<Name> Terms of Use: <url>") rather than guessed.
LICENCE_IDS = ("Apache-2.0", "MIT", "BSD-3-Clause", "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-3.0",
               "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0",
               "GPL-2.0-only WITH Classpath-exception-2.0")
_LICENCE_PART = re.compile(
    r"(?:(?P<id>[A-Za-z0-9.+ -]+?)|see upstream: https?://\S+|[A-Z][\w -]* Terms of Use: "
    r"https?://\S+)(?: \((?P<scope>[^()]+)\))?")


def check_licence(text: str, *, where: str, required: bool = False) -> str:
    """``text`` if it is a valid licence statement, else a ``ValueError`` naming ``where``.

    A statement is one or more parts joined by ``"; "``, each an SPDX id of
    :data:`LICENCE_IDS`, ``"see upstream: <url>"`` or ``"<Name> Terms of Use: <url>"``,
    optionally followed by what it covers in parentheses: ``"CC-BY-SA-3.0 (BoolQ)"``.
    Empty means "not stated" (allowed unless ``required``).
    """
    if not isinstance(text, str):
        raise ValueError(f"{where}: licence must be a string")
    if not text:
        if required:
            raise ValueError(f"{where}: licence is required (an SPDX id or 'see upstream: URL')")
        return text
    for part in text.split("; "):
        m = _LICENCE_PART.fullmatch(part)
        if m is None or (m.group("id") is not None and m.group("id") not in LICENCE_IDS):
            raise ValueError(f"{where}: licence part {part!r} is not one of "
                             f"{', '.join(LICENCE_IDS)}, 'see upstream: URL' or "
                             "'<Name> Terms of Use: URL' (optionally followed by '(what)')")
    return text


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset a suite evaluates on. ``stands_in_for`` is set for offline substitutes;
    ``licence`` is the licence or terms of the data it derives from (:func:`check_licence`),
    shown in every leaderboard's dataset table."""

    id: str
    description: str
    stands_in_for: str | None = None
    split: str = "test"
    licence: str = ""

    def __post_init__(self) -> None:
        check_licence(self.licence, where=f"dataset {self.id!r}")


@dataclass(frozen=True)
class Setting:
    """One ``--set`` key: its type, default, allowed range or choices, and what it does.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str`` or ``any`` (a JSON value);
    ``nullable`` admits ``null`` (meaning "all" or "automatic", as the help says).
    ``settable=False`` marks a value that a flag sets instead (``--dataset``, ``--student``).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    settable: bool = True

    def __post_init__(self) -> None:
        if self.type not in SETTING_TYPES:
            raise ValueError(f"setting {self.name!r}: type must be one of {SETTING_TYPES}")
        if self.default is None:
            if not (self.nullable or self.type == "any"):
                raise ValueError(f"setting {self.name!r}: default None needs nullable=True")
        else:
            try:
                self.check(self.default, where="default")
            except UsageError as exc:
                raise ValueError(str(exc)) from None

    def allowed(self) -> str:
        """What the setting accepts, in words (for error messages and ``--help``)."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = {"int": "an integer", "float": "a finite number", "bool": "true or false",
                    "str": "a string", "any": "a JSON value"}[self.type]
            if self.min is not None and self.max is not None:
                text += f" in [{self.min:g}, {self.max:g}]"
            elif self.min is not None:
                text += f" >= {self.min:g}"
            elif self.max is not None:
                text += f" <= {self.max:g}"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, *, where: str = "--set") -> Any:
        """``value`` converted to the setting's type, or a one-line :class:`UsageError`."""

        raw = value

        def bad() -> UsageError:
            return UsageError(f"{where} {self.name}={_show(raw)}: expected {self.allowed()}")

        if value is None:
            if self.nullable or self.type == "any":
                return None
            raise bad()
        if self.type == "bool":
            if not isinstance(value, bool):
                raise bad()
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad()
            value = float(value)
        elif self.type == "str":
            if isinstance(value, (dict, list)):
                raise bad()
            value = value if isinstance(value, str) else _show(value)
        if not _finite(value):
            raise bad()
        if self.choices is not None and value not in self.choices:
            raise bad()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.min is not None and value < self.min) or \
                    (self.max is not None and value > self.max):
                raise bad()
        return value


def _show(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _finite(value: Any) -> bool:
    """False for NaN/inf anywhere in a (nested) JSON value: results must stay valid JSON."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def inferred_setting(name: str, default: Any) -> Setting:
    """A setting typed by the value it would take (a recipe key the suite does not declare).

    Numbers stay numbers (``int`` stays ``int``), flags stay flags, names stay strings; a
    key whose default is ``None`` takes any finite JSON value.
    """
    if isinstance(default, bool):
        return Setting(name, "bool", default)
    if isinstance(default, int):
        return Setting(name, "int", default)
    if isinstance(default, float):
        return Setting(name, "float", default)
    if isinstance(default, str):
        return Setting(name, "str", default)
    return Setting(name, "any", default, nullable=True)


@dataclass(frozen=True)
class SuiteMetadata:
    """Everything about a suite that is not its code; validated when it is built.

    ``presets`` maps each preset the suite accepts to its overrides of the settings'
    defaults (only the suite's own settings; a recipe's preset overrides live on the
    recipe). ``family`` names the recipe protocol the suite calls (:mod:`bench.contracts`).
    """

    name: str
    version: str
    summary: str
    citation: str
    family: str
    main_score: str
    baseline: str
    datasets: tuple[DatasetSpec, ...]
    higher_is_better: bool = True
    settings: tuple[Setting, ...] = ()
    presets: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {p: {} for p in BASE_PRESETS})
    description: str | None = None
    test: str = "auto"
    plot: str | None = None
    sections: str | None = None
    # "module:function" (model name -> model name): the baseline model a row's model is
    # measured against when the baseline did not run with that model (specbench: a draft
    # row against plain decoding of the same target in the same dtype)
    baseline_model: str | None = None
    user_loss: bool = False  # `bench run --loss file.py:fn` trains on this suite
    # Presets only for recipes that define them (retrieval: cpu-long is DeAR's longer
    # recipe on the default protocol); other methods get a one-line error.
    recipe_presets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise ValueError(f"suite {self.name!r} metadata: {what}")

        for key in ("name", "version", "summary", "citation", "main_score", "baseline"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                fail(f"{key} must be a non-empty string")
        if self.family not in FAMILIES:
            fail(f"family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.test not in TESTS:
            fail(f"test {self.test!r} is not one of {', '.join(TESTS)}")
        ids = [d.id for d in self.datasets]
        if not ids or len(set(ids)) != len(ids):
            fail("datasets must be non-empty with unique ids")
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            fail("setting names must be unique")
        if "default" not in self.presets:
            fail("presets must include 'default'")
        if not set(self.recipe_presets) <= set(self.presets):
            fail("recipe_presets must be presets of the suite")
        declared = set(names)
        for preset, overrides in self.presets.items():
            for key, value in overrides.items():
                if key not in declared:
                    fail(f"preset {preset!r} sets {key!r}, which is not a declared setting")
                try:
                    self.setting(key).check(value, where=f"preset {preset}:")
                except UsageError as exc:
                    fail(str(exc))

    @property
    def preset_names(self) -> tuple[str, ...]:
        return tuple(self.presets)

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def defaults(self, preset: str) -> dict[str, Any]:
        """Every declared setting's value at ``preset`` (before recipe presets and ``--set``)."""
        return {**{s.name: s.default for s in self.settings}, **self.presets[preset]}

    def leaderboard_meta(self) -> dict[str, Any]:
        """What :mod:`bench.core.leaderboard` reads (the registry entry's ``meta``)."""
        meta: dict[str, Any] = {"baseline": self.baseline, "main_score": self.main_score,
                                "higher_is_better": self.higher_is_better, "test": self.test,
                                "family": self.family, "metadata": self}
        for key in ("plot", "sections", "description", "baseline_model"):
            if getattr(self, key):
                meta[key] = getattr(self, key)
        return meta


@dataclass
class RunOptions:
    """Everything ``bench run`` passes to a suite; recorded in each result's config."""

    method: str
    dataset: str | None = None
    preset: str = "default"
    seed: int = 0
    limit: int | None = None
    out: Path = Path("leaderboards/results")
    work_dir: Path | None = None  # checkpoints and caches; resumable
    overwrite: bool = False
    teacher: str | None = None
    student: str | None = None
    judge: str | None = None  # a pairwise judge model (align)
    overrides: dict[str, Any] = field(default_factory=dict)
    loss_fn: Any = None  # a user's loss from `bench run --loss file.py:fn`
    loss_name: str | None = None
    loss_source: dict[str, Any] | None = None  # {"spec", "sha256"}, recorded in the result


class Suite(ABC):
    """A suite: its :class:`SuiteMetadata` plus a ``run`` that returns result records.

    The class attributes ``name``, ``version``, ``main_score``, ``baseline``, ``datasets``,
    ``citation`` and ``presets`` are copied from ``metadata`` when the class is defined, so
    they cannot drift from it.
    """

    metadata: ClassVar[SuiteMetadata]
    name: ClassVar[str]
    version: ClassVar[str]
    main_score: ClassVar[str]
    baseline: ClassVar[str]
    datasets: ClassVar[tuple[DatasetSpec, ...]]
    citation: ClassVar[str]
    presets: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        meta = cls.__dict__.get("metadata")
        if meta is None:
            return  # an abstract family base (e.g. RetrievalSuite)
        cls.name, cls.version, cls.citation = meta.name, meta.version, meta.citation
        cls.main_score, cls.baseline, cls.datasets = meta.main_score, meta.baseline, \
            meta.datasets
        cls.presets = meta.preset_names

    def user_loss_recipe(self, options: RunOptions) -> Any:
        """The recipe that trains with ``options.loss_fn`` (``bench run --loss``): suites
        whose metadata sets ``user_loss`` override this with their own."""
        raise NotImplementedError(f"suite {self.name!r} does not train with a user's loss")

    def resolve_settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        """The run's settings: suite defaults < suite preset < recipe preset < ``--set``.

        ``--set`` keys must be the suite's settings or the recipe's ``settings_keys``;
        values are type- and range-checked against the suite's declaration, the recipe's
        ``setting_specs``, or else the type of the value they replace.
        """
        from bench.contracts import recipe_option, recipe_settings

        meta = self.metadata
        typed = recipe_settings(recipe)
        if options.preset in meta.recipe_presets and \
                options.preset not in recipe_option(recipe, "presets"):
            from bench.contracts import methods_for

            having = [e.name for e in methods_for(meta.name)
                      if options.preset in recipe_option(_recipe_of(e), "presets")]
            raise UsageError(f"--preset {options.preset}: method {options.method!r} has no "
                             f"longer CPU recipe on suite {meta.name!r}; use --preset default "
                             f"({options.preset} exists here for: {', '.join(having)})")
        settings = meta.defaults(options.preset)
        settings.update(recipe_option(recipe, "presets").get(options.preset, {}))
        settable = {s.name for s in meta.settings if s.settable}
        known = settable | set(recipe_option(recipe, "settings_keys"))
        for key, value in options.overrides.items():
            if key not in known:
                flag = f" ({SCALE_FLAGS[key][0]})" if key in SCALE_FLAGS else ""
                raise UsageError(f"--set {key}{flag}: not a setting of method "
                                 f"{options.method!r} on suite {meta.name!r} (known: "
                                 f"{', '.join(sorted(known))})")
            spec = meta.setting(key) if key in settable else \
                typed.get(key) or inferred_setting(key, settings.get(key))
            settings[key] = spec.check(value)
        check = recipe_option(recipe, "check_settings")
        if check is not None:  # combinations a recipe cannot run, refused before any work
            check(settings)
        if "student_layers" in options.overrides:
            self._check_student_layers(options, settings)
        return settings

    def truncated_model(self, options: RunOptions, settings: dict[str, Any]) -> str | None:
        """The model whose first ``student_layers`` layers make the student (None: the
        suite has no such setting). Suites with that setting override it."""
        return None

    def _check_student_layers(self, options: RunOptions, settings: dict[str, Any]) -> None:
        """``--set student_layers=k`` beyond the truncated model's depth is refused before
        any work (it would fail, or be silently clamped, after data and teachers are
        ready); only the model's config is read."""
        source = self.truncated_model(options, settings)
        if source is None:
            return
        from bench.core.assets import layer_count

        n, k = layer_count(source), settings["student_layers"]
        if n is not None and k > n:
            raise UsageError(f"--set student_layers={k}: {source!r} has {n} layers; choose "
                             f"at most {n}")

    @abstractmethod
    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        """Train/evaluate ``options.method`` and return validated result records."""


def _recipe_of(entry: Any) -> Any:
    from methods import METHODS

    return METHODS.resolve(entry)


def limited_id(dataset_id: str, limit: int | None) -> str:
    """The dataset id a ``--limit`` run records: a partial evaluation is its own dataset."""
    return dataset_id if limit is None else f"{dataset_id}@limit{limit}"


def suite_metadata(name: str) -> SuiteMetadata:
    """The metadata of suite ``name`` as discovery read it (no suite module imported)."""
    return SUITES.entry(name).meta["metadata"]


def baseline_bootstrap(options: RunOptions, suite: str, dataset_id: str, metric: str,
                       scores: dict[str, float], baseline: str
                       ) -> tuple[dict[str, Any] | None, str | None]:
    """Paired bootstrap CI of ``scores`` minus the baseline's per-item ``metric``.

    The baseline's result must already be in ``options.out`` for the same dataset, seed and
    preset. Returns (the config entry, None) or (None, a note saying why there is none).
    """
    if baseline == options.method:
        return None, None
    import math

    from bench.core.results import ResultStore
    from bench.core.stats import bootstrap_ci

    wanted = limited_id(dataset_id, options.limit)
    base = [r for r in ResultStore(options.out).load(suite)
            if r["method"] == baseline and r["dataset"]["id"] == wanted
            and r["seed"] == options.seed and r["preset"] == options.preset]
    if not base:
        return None, (f"no {baseline!r} result for this dataset/seed/preset in {options.out} "
                      "yet: no bootstrap interval against it")
    delta, lo, hi = bootstrap_ci(scores, base[0]["per_item"][metric])
    if not all(math.isfinite(v) for v in (delta, lo, hi)):
        return None, f"fewer than 2 items shared with the {baseline!r} result: no interval"
    return {"baseline": baseline, "delta": delta, "ci95": [lo, hi], "n_resamples": 10000}, None


def attach_baseline_bootstrap(config: dict[str, Any], notes: list[str], options: RunOptions,
                              suite: str, dataset_id: str, metric: str,
                              scores: dict[str, float], baseline: str) -> None:
    """Put :func:`baseline_bootstrap`'s interval into ``config`` or its reason into ``notes``."""
    entry, note = baseline_bootstrap(options, suite, dataset_id, metric, scores, baseline)
    if entry:
        config["paired_bootstrap_vs_baseline"] = entry
    if note:
        notes.append(note)


# Every module under bench/ (and every plug-in) that declares ``NAME = SuiteMetadata(...)``
# and a Suite subclass with ``metadata = NAME``; an entry's ``meta`` is the metadata's
# ``leaderboard_meta()``, with the SuiteMetadata itself under ``"metadata"``.
SUITES: Registry[type[Suite]] = Registry("suite", base=Suite, discover="bench")
