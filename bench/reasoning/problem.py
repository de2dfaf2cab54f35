"""One reasoning item in GSM8K form, shared by the ``arith`` generator and the ASDiv converter.

GSM8K (Cobbe et al. 2021, arXiv:2110.14168) stores ``{"question", "answer"}`` where the
answer is the worked rationale followed by a line ``#### <number>``; lm-eval's ``gsm8k``
task scores the number after ``#### `` by exact match. :meth:`Problem.to_gsm8k` writes
exactly that shape (plus our ``id``), so any GSM8K tooling reads our files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# lm-eval gsm8k.yaml's two answer filters: "strict-match" and "flexible-extract" (last number).
STRICT_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_ANSWER = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


@dataclass(frozen=True)
class Problem:
    """A question with an optional worked rationale and a numeric final answer.

    ``answer`` is the final number as written after ``#### `` (no thousands separators);
    ``rationale`` is empty for sources without rationales (ASDiv). ``a``/``b`` are the
    factors of an ``arith`` item (``None`` elsewhere).
    """

    id: str
    question: str
    rationale: str
    answer: str
    split: str = ""
    source: str = ""
    a: int | None = None
    b: int | None = None

    @property
    def target(self) -> str:
        """The GSM8K ``answer`` field: rationale, then ``#### <number>`` on its own line."""
        return f"{self.rationale}\n#### {self.answer}" if self.rationale else f"#### {self.answer}"

    def to_gsm8k(self) -> dict[str, str]:
        """JSON-ready GSM8K record: ``{"id", "question", "answer"}``."""
        return {"id": self.id, "question": self.question, "answer": self.target}


def normalize_number(text: str) -> str:
    """``"$1,200.50."`` -> ``"1200.5"``: no ``$``, separators, trailing period or decimal zeros."""
    text = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_answer(text: str) -> str | None:
    """The final number of a generation, as lm-eval's GSM8K filters find it: the number after
    the first ``#### `` (strict), else the last number in the text (flexible); normalized."""
    m = STRICT_ANSWER.search(text)
    if m:
        return normalize_number(m.group(1)) or None
    found = [a or b for a, b in FLEXIBLE_ANSWER.findall(text)]
    found = [f for f in found if any(c.isdigit() for c in f)]
    return normalize_number(found[-1]) if found else None


def answers_match(prediction: str, gold: str) -> bool:
    """Whether a generation's final number (:func:`extract_answer`) equals ``gold``'s number.

    ``gold`` may be a bare number or a GSM8K answer field ending in ``#### <number>``.
    Numbers compare by value (``"12.50"`` == ``"12.5"``).
    """
    pred, ref = extract_answer(prediction), extract_answer(gold)
    if pred is None or ref is None:
        return False
    try:
        return float(pred) == float(ref)
    except ValueError:
        return pred == ref
