"""``ce``: the student fine-tuned on the training text alone, no teacher: the control every
distillation method on the ``lm`` suite is tested against (same segments, steps and
optimiser; the loss is the next-token cross-entropy only)."""

from __future__ import annotations

from methods.lm.common import LMRecipe

REGISTRY = [
    {"name": "ce", "suites": ["lm"], "target": "CrossEntropy",
     "summary": "student fine-tuned on the training text, no teacher (the control)",
     "citation": "Gururangan et al. 2020 (domain-adaptive pretraining), arXiv:2004.10964"},
]


class CrossEntropy(LMRecipe):
    uses_teacher = False
    default_teacher = None
