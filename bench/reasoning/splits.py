"""Which items the ``gsm8k`` suite trains on, holds out and scores, per dataset.

Training pools (the students take the first ``n_train`` items, the arith teacher the first
``teacher_train``; the teacher's cache key hashes its items, so these lists must not move):

- arith: the first ``max(n_train, teacher_train)`` items of the seeded train stream
  (:func:`bench.reasoning.arith.make_arith`, ``ARITH_SEED``, train pairs only);
- ASDiv: the packaged train split in its fixed hash order (:func:`asdiv_splits`);
- ``gsm8k`` / ``gsm8k_cot``: GSM8K's train split through ``datasets`` (online).

Validation items (``--set eval_split=validation``; the last ``val_per_task`` items of a
training pool, scored instead of the test items and never trained on in either mode):

- arith: the next ``val_per_task`` items of the same seeded stream, drawn *after* the
  training items. ``make_arith`` is prefix-stable (a larger ``n`` extends a smaller one),
  so carving them out leaves every training item, and the teacher's key, as before. They
  depend on ``max(n_train, teacher_train)`` (where the stream is cut), not on ``n_train``
  alone: runs that differ only in ``n_train`` below ``teacher_train`` share them. A pair
  space too small for the extra items is a usage error (lower ``val_per_task``).
- ASDiv: the last ``val_per_task`` items of the train split, at most a third of it
  (``bench.instruct.suite.held_out``, the instruct suite's rule). They leave the pool in
  both modes, so the students' items change only when ``n_train`` reaches past
  ``len(pool) - val_per_task`` (the default 300 of ~1,460 does not).
- ``gsm8k`` / ``gsm8k_cot``: none; validation is offline-only (a usage error), so these
  train on their whole train split as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench.errors import UsageError
from bench.reasoning.problem import Problem


@dataclass(frozen=True)
class Dataset:
    id: str
    task: str  # lm-eval task name
    kind: str  # "arith" | "asdiv" | "lm-eval"
    digits: tuple[int, int] | None = None
    style: str = "partial"  # arith rationale style (bench.reasoning.arith.STYLES)

    @property
    def offline(self) -> bool:
        return self.kind != "lm-eval"


def parse_dataset(dataset_id: str) -> Dataset:
    m = re.fullmatch(r"offline/arith-(\d+)x(\d+)(-digits)?", dataset_id)
    if m:
        from bench.reasoning.lm_eval_tasks import arith_task_name

        a, b = int(m.group(1)), int(m.group(2))
        style = "digits" if m.group(3) else "partial"
        return Dataset(dataset_id, arith_task_name(a, b, style), "arith", (a, b), style)
    if dataset_id == "offline/asdiv":
        return Dataset(dataset_id, "asdiv_offline", "asdiv")
    if dataset_id in ("gsm8k", "gsm8k_cot"):
        return Dataset(dataset_id, dataset_id, "lm-eval")
    raise UsageError(f"--dataset {dataset_id!r}: not a dataset of suite 'gsm8k'; choose "
                     "offline/arith-3x3, offline/arith-4x4 (any offline/arith-AxB, "
                     "offline/arith-AxB-digits for one-digit steps), "
                     "offline/asdiv, gsm8k or gsm8k_cot")


def check_validation(datasets: list[Dataset]) -> None:
    """A one-line usage error, before any work, when validation is asked of an online set."""
    online = [d.id for d in datasets if not d.offline]
    if online:
        raise UsageError(f"--set eval_split=validation: {', '.join(online)} has no validation "
                         "items (they are held out of the offline datasets' training pools "
                         "only); use an offline/ dataset or eval_split=test")


def arith_need(settings: dict[str, Any]) -> int:
    """Training items an arith run draws: enough for the students and the teacher."""
    return max(settings["n_train"] or 0, settings["teacher_train"] or 0)


def arith_pools(ds: Dataset, settings: dict[str, Any], n_validation: int
                ) -> tuple[list[Problem], list[Problem]]:
    """(training pool, validation items) of an arith dataset: :func:`arith_need` items, then
    ``n_validation`` more from the same stream (the training pool is its prefix, unchanged)."""
    from bench.reasoning.arith import make_arith
    from bench.reasoning.lm_eval_tasks import ARITH_SEED

    a, b = ds.digits or (3, 3)
    need = arith_need(settings)
    try:
        problems = make_arith(a, b, need + n_validation, ARITH_SEED, split="train",
                              style=ds.style)
    except ValueError as exc:
        raise UsageError(f"{ds.id}: {exc} (training and validation items); lower "
                         "val_per_task, n_train or teacher_train") from None
    return problems[:need], problems[need:]


def asdiv_pools(n_validation: int) -> tuple[list[Problem], list[Problem]]:
    """(training pool, validation items) of ASDiv: the last items of its train split."""
    from bench.instruct.suite import held_out
    from bench.reasoning.asdiv import asdiv_splits

    return held_out(asdiv_splits()[0], n_validation)


def validation_items(ds: Dataset, settings: dict[str, Any]) -> list[Problem]:
    """The validation items of ``ds`` (see the module docstring), all ``val_per_task`` of
    them; the run scores the first ``n_test``."""
    check_validation([ds])
    if ds.kind == "arith":
        return arith_pools(ds, settings, settings["val_per_task"])[1]
    return asdiv_pools(settings["val_per_task"])[1]


def training_items(ds: Dataset, settings: dict[str, Any]) -> list[Any]:
    """The training pool as :class:`~methods.reasoning.cot_distill.ReasoningItem` s (the
    students take the first ``n_train``, the arith teacher the first ``teacher_train``);
    never a validation item, whichever split is scored."""
    from methods.reasoning.cot_distill import ReasoningItem

    if ds.kind == "arith":
        # Only the prefix: the validation items after it need not exist to stay unused.
        problems = arith_pools(ds, settings, 0)[0]
        return [ReasoningItem(p.id, p.question, p.answer, gold_rationale=p.rationale)
                for p in problems]
    if ds.kind == "asdiv":
        pool = asdiv_pools(settings["val_per_task"])[0]
        return [ReasoningItem(p.id, p.question, p.answer)
                for p in pool[: settings["n_train"] or None]]
    from datasets import load_dataset

    rows = load_dataset("openai/gsm8k", "main", split="train")
    items = []
    for i, row in enumerate(rows):
        rationale, _, answer = row["answer"].partition("####")
        items.append(ReasoningItem(f"gsm8k-train-{i}", row["question"],
                                   answer.strip().replace(",", ""),
                                   gold_rationale=re.sub(r"<<[^>]*>>", "", rationale).strip()))
    return items[: settings["n_train"] or None]


def longest_test_target(ds: Dataset, settings: dict[str, Any], tok: Any) -> int:
    """The longest gold arith test target in tokens (0 elsewhere): it sets the generation
    budget, also of the teacher's rationales, so it comes from the test items in both
    modes and a validation run trains exactly what a test run trains."""
    if ds.kind != "arith":
        return 0
    from bench.reasoning.arith import make_arith
    from bench.reasoning.lm_eval_tasks import ARITH_SEED, ARITH_TEST_SIZE
    from methods.reasoning.cot_distill import target_units

    a, b = ds.digits or (3, 3)
    test = make_arith(a, b, min(settings["n_test"] or ARITH_TEST_SIZE, ARITH_TEST_SIZE),
                      ARITH_SEED, split="test", style=ds.style)
    return max(sum(map(len, target_units(tok, p.rationale, p.answer))) for p in test)
