"""Listwise reranking text formats: the window prompt, the target, and a robust parser.

Prompt and target follow RankGPT / RankZephyr (Sun et al., 2023; Pradeep et al., 2023):
passages numbered ``[1] ... [w]`` in one user turn, answer ``[2] > [1] > [3] ...``. A
rationale may precede the permutation inside ``<think>...</think>``, as in DeAR's
chain-of-thought data; the parser reads only what follows ``</think>`` so numbers inside
the reasoning are never taken for passage ids.

Repair rule (RankGPT's ``clean_response``/``remove_duplicate``/``receive_permutation``, also
DeAR's and rank_llm's): ids outside ``1..w`` are dropped, a repeated id keeps its first
occurrence, and missing ids are appended in their original window order; text with no id at
all leaves the window in its original order. Each repair is counted, and the counts go
into the result record, so a model that emits broken permutations cannot hide it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

SYSTEM = "You are RankLLM, an assistant that ranks passages by their relevance to a query."
_ID = re.compile(r"\[(\d+)\]")


@dataclass
class Repairs:
    out_of_range: int = 0
    duplicates: int = 0
    missing: int = 0
    unparsable: int = 0
    windows: int = 0

    def add(self, other: Repairs) -> None:
        for name in ("out_of_range", "duplicates", "missing", "unparsable", "windows"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in
                ("windows", "out_of_range", "duplicates", "missing", "unparsable")}


@dataclass
class Parsed:
    order: list[int]  # 0-based permutation of range(n)
    repairs: Repairs = field(default_factory=Repairs)


def parse_permutation(text: str, n: int) -> Parsed:
    """The 0-based window order named by ``text`` (``"[2] > [1] > [3]"``), repaired."""
    repairs = Repairs(windows=1)
    tail = text.rsplit("</think>", 1)[-1]
    ids = [int(m) - 1 for m in _ID.findall(tail)]
    if not ids:
        repairs.unparsable = 1
        return Parsed(list(range(n)), repairs)
    order: list[int] = []
    seen: set[int] = set()
    for i in ids:
        if not 0 <= i < n:
            repairs.out_of_range += 1
        elif i in seen:
            repairs.duplicates += 1
        else:
            seen.add(i)
            order.append(i)
    missing = [i for i in range(n) if i not in seen]
    repairs.missing = len(missing)
    return Parsed(order + missing, repairs)


def format_permutation(order: Sequence[int]) -> str:
    """``[3] > [1] > [2]`` for the 0-based order ``[2, 0, 1]``."""
    return " > ".join(f"[{i + 1}]" for i in order)


def window_messages(query: str, passages: Sequence[str]) -> list[dict[str, str]]:
    """One-turn chat prompt for a window of passages (RankZephyr-style, compact for CPUs)."""
    numbered = "\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    user = (f"I will provide you with {len(passages)} passages, each indicated by a numerical "
            f"identifier []. Rank the passages based on their relevance to the search query: "
            f"{query}\n\n{numbered}\n\nSearch Query: {query}\nRank the {len(passages)} passages "
            "above based on their relevance to the search query. All the passages should be "
            "included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [2] > [1]. Only respond with the ranking.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def target_text(order: Sequence[int], rationale: str | None = None) -> str:
    """The training target: optional ``<think>rationale</think>`` then the permutation."""
    perm = format_permutation(order)
    return f"<think>{rationale.strip()}</think>\n{perm}" if rationale else perm
