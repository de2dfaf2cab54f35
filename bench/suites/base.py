"""What every suite is: metadata (mteb-style) plus a ``run`` that returns result records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

PRESETS = ("smoke", "default", "full")
# `bench run` flags that are shorthands for one --set key each: key -> (flag, help).
SCALE_FLAGS = {
    "train_queries": ("--train-queries", "training queries (beir/trec-dl: DeAR)"),
    "epochs": ("--epochs", "training epochs"),
    "depth": ("--top-k", "rerank the top N BM25 candidates (beir/trec-dl)"),
    "group_size": ("--group-size", "passages per training query (DeAR stage 1)"),
    "window": ("--window", "listwise window (DeAR stage 2)"),
    "stride": ("--stride", "listwise stride (DeAR stage 2)"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset a suite evaluates on. ``stands_in_for`` is set for offline substitutes."""

    id: str
    description: str
    stands_in_for: str | None = None
    split: str = "test"


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


def apply_overrides(settings: dict[str, Any], options: RunOptions, known: set[str],
                    suite: str) -> dict[str, Any]:
    """``settings`` updated with ``--set`` values, after rejecting keys not in ``known``."""
    from bench.errors import UsageError

    unknown = sorted(set(options.overrides) - known)
    if unknown:
        flag = f" ({SCALE_FLAGS[unknown[0]][0]})" if unknown[0] in SCALE_FLAGS else ""
        raise UsageError(f"--set {unknown[0]}{flag}: not a setting of method {options.method!r} on "
                         f"suite {suite!r} (known: {', '.join(sorted(known))})")
    settings.update(options.overrides)
    return settings


class Suite(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    main_score: ClassVar[str]
    baseline: ClassVar[str]
    datasets: ClassVar[tuple[DatasetSpec, ...]]
    citation: ClassVar[str] = ""
    # Scales ``bench run --preset`` accepts here; a suite may add its own (retrieval:
    # ``cpu-long``, for methods that define it).
    presets: ClassVar[tuple[str, ...]] = ("smoke", "default", "full")

    @abstractmethod
    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        """Train/evaluate ``options.method`` and return validated result records."""


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

    from bench.results import ResultStore
    from bench.stats import bootstrap_ci

    base = [r for r in ResultStore(options.out).load(suite)
            if r["method"] == baseline and r["dataset"]["id"] == dataset_id
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


def suite_recipe(method: str, suite: str, local: dict[str, str], *, needs: str) -> Any:
    """The recipe object of ``method`` on ``suite``.

    Method names are unique across ``methods/``, but a few rows mean something different
    per suite (``teacher``, ``sft``): ``local`` maps such names to this suite's own
    ``"module:Class"``. Any other name is the registered method, which must have the
    attribute ``needs`` (what the suite calls), or the user gets a one-line error.
    """
    import importlib

    from bench.errors import UsageError
    from methods import METHODS

    if method in local:
        module, attr = local[method].split(":")
        return getattr(importlib.import_module(module), attr)()
    recipe = METHODS.get(method)()
    if not hasattr(recipe, needs):
        raise UsageError(f"method {method!r} does not run on suite {suite!r}; see "
                         f"`bench ls` for this suite's methods")
    return recipe
