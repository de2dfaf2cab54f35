"""The method side of the method–suite contract: run contexts, recipe protocols, resolution.

A method is a *recipe*: a class registered in a ``REGISTRY`` literal whose entry names the
suites it runs on (``"suites": ["instruct"]``). A suite never lists its methods; it finds
them in the registry (:func:`methods_for`). Each suite belongs to a *family*
(``SuiteMetadata.family``), and the family fixes the hook the suite calls and the context
it passes:

=============  =======================  =================================================
family         context                  the recipe provides
=============  =======================  =================================================
retrieval      :class:`RetrievalContext`  ``build_rerankers(ctx) -> [(row, reranker|None,
                                          model name), ...]``
generation     :class:`InstructContext`   ``build_model(ctx) -> (model, model name)``
reasoning      :class:`ReasoningContext`  ``build_model(ctx) -> (model, model name)``
align          :class:`AlignContext`      ``build_model(ctx) -> (policy, model name)``
specdec        :class:`SpecContext`       ``build_draft(ctx) -> (draft | None, name)``
vision         :class:`VisionContext`     ``build_model(ctx) -> (model, model name)``
=============  =======================  =================================================

Optional recipe attributes, read through :func:`recipe_option` with the defaults in
:data:`RECIPE_DEFAULTS`: ``settings_keys`` (its own ``--set`` keys), ``setting_specs``
(their types and ranges, usually :func:`dataclass_settings` of its config; a key without
one is typed by the value it replaces), ``presets`` (its overrides per preset), ``implementation`` (``full`` or ``partial``), ``uses_teacher``
(vision), ``needs_rationales`` (reasoning), ``needs_training_data`` (specdec),
``check_settings(settings)`` (refuses combinations of settings it cannot run, as a
one-line usage error before any work).

:func:`resolve_recipe` is the one way to turn a method name into a recipe; a method that
lacks its suite's hook is a one-line usage error before any work starts. Everything here
is importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from bench.errors import UsageError

RECIPE_DEFAULTS: dict[str, Any] = {
    "settings_keys": (), "presets": {}, "implementation": "full", "uses_teacher": False,
    "needs_rationales": False, "needs_training_data": True, "setting_specs": (),
    "check_settings": None,
}


@dataclass(kw_only=True)
class RunContext:
    """What every recipe gets: the run's options and settings, where to keep state, and
    two outputs recorded in the result (``notes`` and ``config``)."""

    options: Any  # bench.suite.RunOptions
    settings: dict[str, Any]
    work_dir: Path
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class RetrievalContext(RunContext):
    collection: Any  # bench.retrieval.collections.Collection
    bm25: Any  # callable(collection, queries) -> BM25 top-100 run (hard negatives)


def _alias(field_name: str) -> Any:
    """A read-only property naming a field by its role (``teacher`` for ``base``)."""
    return property(lambda self: getattr(self, field_name))


@dataclass(kw_only=True)
class LMContext(RunContext):
    """A run around one frozen language model: the teacher (instruct, gsm8k), the target
    (specbench) or the reference policy (align), by its role-named alias below. Float32,
    eval mode; recipes must not modify it."""

    base_name: str
    base: Any
    tokenizer: Any


@dataclass(kw_only=True)
class InstructContext(LMContext):
    train: list[Any]  # methods.instruct.token_kd.TrainExample: prompt ids, response ids, top-k logits

    teacher = _alias("base")
    teacher_name = _alias("base_name")


@dataclass(kw_only=True)
class ReasoningContext(InstructContext):
    dataset_id: str = ""
    student_name: str | None = None  # --student; default: first-k layers of the teacher
    direct_prompt: str | None = None  # the teacher's direct-answer prompt, if it has one


@dataclass(kw_only=True)
class SpecContext(LMContext):
    train: list[Any]  # TrainExample: the target's responses with its top-k logits

    target = _alias("base")
    target_name = _alias("base_name")


@dataclass(kw_only=True)
class AlignContext(LMContext):
    pairs: list[Any]  # methods.align.dpo.PreferencePair
    prompts: list[list[int]]  # training prompts (chat-rendered ids), for on-policy recipes

    reference = _alias("base")
    reference_name = _alias("base_name")


@dataclass(kw_only=True)
class VisionContext(RunContext):
    train: Any  # ImageArrays-like: labels, ids, classes, batch(indices)
    num_classes: int
    image_size: int
    channels: int
    seed: int = 0
    teacher: Any = None
    teacher_name: str = ""


ContextT = TypeVar("ContextT", bound=RunContext, contravariant=True)


@runtime_checkable
class RerankerRecipe(Protocol):
    """retrieval: one ``(row name, reranker | None, model name)`` per leaderboard row."""

    def build_rerankers(self, context: RetrievalContext) -> list[tuple[str, Any, str]]: ...


@runtime_checkable
class ModelRecipe(Protocol[ContextT]):
    """generation, reasoning, align, vision: the trained (or reference) model and its name."""

    def build_model(self, context: ContextT) -> tuple[Any, str]: ...


@runtime_checkable
class DraftRecipe(Protocol):
    """specdec: the draft (``None`` for plain decoding) and its name."""

    def build_draft(self, context: SpecContext) -> tuple[Any, str]: ...


# The typed protocol of each family, for type checkers (isinstance checks the hook only).
GeneratorRecipe = ModelRecipe[InstructContext]
ReasoningRecipe = ModelRecipe[ReasoningContext]
AlignRecipe = ModelRecipe[AlignContext]
VisionRecipe = ModelRecipe[VisionContext]
PROTOCOLS: dict[str, type] = {
    "retrieval": RerankerRecipe, "generation": ModelRecipe, "reasoning": ModelRecipe,
    "align": ModelRecipe, "specdec": DraftRecipe, "vision": ModelRecipe,
}
HOOKS = {"retrieval": "build_rerankers", "specdec": "build_draft"}  # others: build_model


def recipe_option(recipe: Any, name: str) -> Any:
    """An optional recipe attribute, or its documented default."""
    return getattr(recipe, name, RECIPE_DEFAULTS[name])


def methods_for(suite: str) -> list[Any]:
    """The registry entries of the methods that declare ``suite``, sorted by name."""
    from methods import METHODS

    return [e for e in METHODS.entries() if suite in e.meta.get("suites", ())]


def check_declarations() -> None:
    """Every method entry names at least one suite, and only suites that exist."""
    from bench.suite import SUITES
    from methods import METHODS

    known = set(SUITES.names())
    for e in METHODS.entries():
        suites = e.meta.get("suites")
        if not suites or not isinstance(suites, (list, tuple)):
            raise UsageError(f"method {e.name!r} ({e.origin}): its REGISTRY entry needs "
                             "\"suites\": [...], the suites it runs on")
        unknown = [s for s in suites if s not in known]
        if unknown:
            raise UsageError(f"method {e.name!r} ({e.origin}) names unknown suite "
                             f"{unknown[0]!r}; suites: {', '.join(sorted(known))}")


def resolve_recipe(method: str, suite: str) -> Any:
    """The recipe object of ``method`` on ``suite``, checked against the suite's protocol.

    A name may be registered once per suite where it means something different per suite
    (``teacher``, ``sft``); the entry declaring ``suite`` wins.
    """
    from bench.suite import suite_metadata
    from methods import METHODS

    family = suite_metadata(suite).family
    if method not in METHODS:
        METHODS.entry(method)  # raises the unknown-name error with suggestions
    entry = next((e for e in METHODS.entries_named(method)
                  if suite in e.meta.get("suites", ())), None)
    if entry is None:
        names = ", ".join(e.name for e in methods_for(suite))
        raise UsageError(f"method {method!r} does not run on suite {suite!r}; choose one "
                         f"of: {names}")
    recipe = METHODS.resolve(entry)()
    if not isinstance(recipe, PROTOCOLS[family]):
        hook = HOOKS.get(family, "build_model")
        raise UsageError(f"method {method!r} ({entry.origin}) declares suite {suite!r} but "
                         f"has no {hook}(context), which {family} suites call")
    return recipe


# Integer config fields ending so are counts a run divides by or loops over: 0 would fail
# (or silently do nothing) after data and models are loaded, so --set refuses it up front.
POSITIVE_COUNTS = ("batch_size", "_every", "_tokens", "group_size", "n_chunks", "lora_rank",
                   "_windows", "_queries")
MIXED_PRECISIONS = ("no", "bf16", "fp16")  # what methods.trainer's Accelerator accepts here


def dataclass_settings(cls: type, *, prefix: str = "", rename: dict[str, str] | None = None,
                       exclude: tuple[str, ...] = ("seed",)) -> tuple[Any, ...]:
    """Typed :class:`~bench.suite.Setting` s for a recipe's config dataclass.

    The type comes from the field's annotation (``int``, ``float``, ``bool``, ``str``, with
    ``| None`` making it nullable; anything else takes any JSON value) and the default from
    the field. Numbers must be >= 0: every hyperparameter of the recipes here (epochs,
    rates, weights, sizes, temperatures) is, and a recipe that needs a signed one declares
    it in ``setting_specs`` itself. Counts that cannot be 0 (an integer field named like
    :data:`POSITIVE_COUNTS`: batch sizes, token budgets, checkpoint intervals) must be >= 1,
    as must a field whose metadata says ``{"min": 1}``; a ``*_fraction`` is at most 1, a
    ``mixed_precision`` one of :data:`MIXED_PRECISIONS` (metadata ``max`` and ``choices``
    override both). ``rename`` maps a setting key to the field it sets
    (DeAR's ``stage2_*`` keys); ``prefix`` prefixes every key (AlignDistil's ``dpo_*``).
    """
    import dataclasses

    from bench.suite import Setting

    by_field = {v: k for k, v in (rename or {}).items()}
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or (rename is not None and f.name not in by_field):
            continue
        key = prefix + by_field.get(f.name, f.name)
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", f.type)
        parts = [p.strip() for p in str(annotation).split("|")]
        nullable = "None" in parts
        base = next((p for p in parts if p != "None"), "any")
        kind = base if base in ("int", "float", "bool", "str") else "any"
        default = None if f.default is dataclasses.MISSING else f.default
        lower = 0 if kind in ("int", "float") else None
        if kind == "int" and f.name.endswith(POSITIVE_COUNTS):
            lower = 1
        lower = f.metadata.get("min", lower)
        upper = 1 if kind == "float" and f.name.endswith("_fraction") else None
        upper = f.metadata.get("max", upper)
        choices = MIXED_PRECISIONS if f.name == "mixed_precision" else None
        choices = f.metadata.get("choices", choices)
        try:
            specs.append(Setting(key, kind, default, min=lower, max=upper, choices=choices,
                                 nullable=nullable or default is None))
        except ValueError:  # a default outside its annotation: keep the key, check less
            specs.append(Setting(key, "any", default, nullable=True))
    return tuple(specs)


def recipe_settings(recipe: Any) -> dict[str, Any]:
    """The recipe's typed settings (``setting_specs``), by key, for its ``settings_keys``."""
    keys = set(recipe_option(recipe, "settings_keys"))
    return {s.name: s for s in recipe_option(recipe, "setting_specs") if s.name in keys}
