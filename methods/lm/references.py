"""The two reference rows of the ``lm`` suite: the teacher itself and the untrained student.

``teacher`` scores the teacher (Gemma-3-270M by default) with its own tokenizer, so its
bits per byte are directly comparable with the students'; ``student-init`` scores the
student before any training (the pretrained SmolLM2-135M-Instruct, or its first
``student_layers`` layers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.lm.context import TEACHER, LMContext
from bench.suite import Setting

REGISTRY = [
    {"name": "teacher", "suites": ["lm"], "target": "Teacher",
     "summary": "the teacher itself (Gemma-3-270M by default), its own tokenizer, no training",
     "citation": "Gemma Team 2025 (Gemma 3), arXiv:2503.19786"},
    {"name": "student-init", "suites": ["lm"], "target": "StudentInit",
     "summary": "the student before training (SmolLM2-135M-Instruct, or its first k layers)",
     "citation": "Allal et al. 2025 (SmolLM2), arXiv:2502.02737"},
]


class Teacher:
    uses_teacher = True
    default_teacher = TEACHER
    settings_keys: tuple[str, ...] = ()

    def build_model(self, context: LMContext) -> tuple[Any, str]:
        from methods.lm.common import load_teacher

        model, tokenizer = load_teacher(context)
        context.eval_tokenizer = tokenizer
        return model, Path(str(context.teacher_name)).name


class StudentInit:
    uses_teacher = False
    settings_keys = ("student_layers",)
    setting_specs = (Setting("student_layers", "int", 0, "0: the whole student; k: its first "
                             "k layers", min=0),)

    def build_model(self, context: LMContext) -> tuple[Any, str]:
        from methods.lm.common import build_student, student_name

        layers = int(context.settings.get("student_layers", 0))
        return build_student(context, layers).eval(), student_name(context, layers)
