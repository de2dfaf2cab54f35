"""The context the ``lm`` suite passes to its recipes (family ``generation``: the recipe's
``build_model(context) -> (model, name)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.contracts import RunContext

STUDENT = "smollm2-135m-instruct"  # the default student, and the same-tokenizer teacher
TEACHER = "gemma3-270m"  # the default teacher: a stronger LM with another tokenizer


def baseline_student(model: str) -> str:
    """The ``ce`` model a row of ``model`` is tested against when ``ce`` did not train that
    model (the leaderboard's ``baseline_model``): the default student. It matters for the
    teacher's row once ``ce`` has rows for several students (whole and ``-8L``); a student's
    own ``ce`` row is always found first."""
    return STUDENT


@dataclass(kw_only=True)
class LMContext(RunContext):
    """A run of the ``lm`` suite.

    ``student`` is the pretrained student base (float32, eval mode; recipes copy it before
    training), ``tokenizer`` its tokenizer; ``teacher_name`` the teacher this recipe uses
    (``--teacher`` or the recipe's ``default_teacher``; ``None`` for recipes without one),
    loaded by the recipe itself only if it needs it. ``train``: the training segments
    (:class:`bench.lm.data.Segment`). A recipe whose model has another tokenizer than the
    student (the ``teacher`` row) sets ``eval_tokenizer``."""

    student_name: str
    student: Any
    tokenizer: Any
    teacher_name: str | None
    train: list[Any]
    eval_tokenizer: Any = None
