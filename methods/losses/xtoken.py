"""Cross-tokenizer alignment: text-span groups, chain-rule merging, exact-match vocabulary
mapping, and the hybrid ULD loss built on them.

After TRL's GOLD trainer (Hugging Face TRL, ``trl/experimental/gold/gold_trainer.py``:
``ULDLoss._align_by_byte_offsets``, ``_merge_probabilities_with_alignment_groups``,
``_compute_hybrid_uld_loss``), which extends ULD (Boizard et al. 2024, arXiv:2402.12030)
from "position i with position i" to spans of text both tokenizers agree on:

1. **Span alignment** (:func:`align_spans`). Both tokenizations of one text carry character
   offsets into it. A *cut* of one side is the end of a token after which no token of that
   side starts earlier (so a character split into several byte-level tokens is never cut
   inside). The cuts both sides share close a group: each group is a run of student tokens
   and a run of teacher tokens covering exactly the same text. GOLD walks UTF-8 byte
   offsets; character offsets into the same string give the same cuts, since a token that
   ends inside a character (a byte-level piece of "é") carries that character's offsets
   and the cut rule never cuts there. One-to-one groups are the
   common case; a merge ("▁the" against "Ġt" + "he") or a split gives a many-to-one group.
2. **Merging** (:func:`merge_groups`). A group's distribution is the one at its first
   token, times the probability each model gave to the group's later tokens that actually
   follow (chain rule): P(y, t₂, …, tₘ | x) for the group's first token y = its actual token
   this is exact; for other y it assumes the later tokens would follow y too (GOLD's stated
   bias). Done in log space (no underflow); the merged rows sum to less than 1.
3. **Exact-match mapping** (:func:`exact_match_map`). A teacher token and a student token
   are matched when they decode to the same non-empty text (decoded, not raw vocabulary
   strings, so SentencePiece's "▁" and byte-level BPE's "Ġ" spaces compare equal);
   special tokens and tokens that are an incomplete UTF-8 sequence are never matched; a
   text claimed by several ids keeps the lowest id on each side (a one-to-one map).
4. **Hybrid distance** (:func:`hybrid_rows`, :func:`hybrid_topk_rows`). Matched entries
   are compared one to one, the rest by ULD's sorted L1:

       H(q, p) = Σ_{t matched} |p(t) − q(m(t))| + ULD(p restricted to the unmatched,
                                                      q restricted to the unmatched)

   Choices that differ from GOLD, and why: GOLD uses a generalized JSD on the matched
   entries and weights the two parts by the matched share of the teacher vocabulary; here
   both parts are L1 with weight 1, because the matched sub-vectors are not normalised
   distributions (a JSD of sub-probability vectors is not a divergence) and L1 keeps both
   parts on ULD's scale: H is ULD with the pairing forced to identity on matched texts, it
   lies in [0, 2] for normalised rows, is 0 when p = q on a shared vocabulary, and equals
   ULD when nothing matches.

Top-k teachers: :func:`hybrid_topk_rows` sees the teacher's top k entries of a row plus
its rest mass. Matching is done on the top k; the teacher's unmatched top-k entries and its
rest, against the student's unmatched entries (top k plus their rest), go through
:func:`~methods.losses.uld.uld_topk_rows`. Equal to :func:`hybrid_rows` at k = Vt
(tested); otherwise the teacher's tail is one class on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from methods.losses.uld import sorted_l1_rows, topk_and_rest, uld_topk_rows, widen

REGISTRY = [
    {"name": "uld_hybrid", "target": "uld_hybrid",
     "summary": "exact-match vocabulary pairs compared directly, ULD's sorted L1 on the rest "
                "(GOLD-style hybrid; vocab_map teacher id -> student id)",
     "citation": "Hugging Face TRL GOLD trainer (2025), after Boizard et al. 2024 (ULD), "
                 "arXiv:2402.12030"},
]

Offsets = Sequence[tuple[int, int]]


def _cuts(offsets: Offsets) -> list[int]:
    """Ends of tokens after which no later token of this side starts before that end."""
    cuts, later_start = [], float("inf")
    for start, end in reversed(offsets):
        if end <= later_start:
            cuts.append(end)
        later_start = min(later_start, start)
    return cuts[::-1]


def align_spans(student: Offsets, teacher: Offsets) -> list[tuple[list[int], list[int]]]:
    """Groups ``(student token positions, teacher token positions)`` covering the same
    text, in order. ``student`` / ``teacher``: ``(start, end)`` character (or byte) offsets
    of each token in one shared text. Tokens after the last shared cut form a final group
    when both sides have some (a text cut mid-token); a group missing one side is dropped.
    """
    shared = sorted(set(_cuts(student)) & set(_cuts(teacher)))

    def assign(offsets: Offsets) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in range(len(shared) + 1)]
        g = 0
        for i, (_, end) in enumerate(offsets):
            while g < len(shared) and end > shared[g]:
                g += 1
            groups[g].append(i)
        return groups

    pairs = zip(assign(student), assign(teacher), strict=True)
    return [(s, t) for s, t in pairs if s and t]


def merge_groups(logp: torch.Tensor, targets: torch.Tensor, groups: Sequence[Sequence[int]]
                 ) -> torch.Tensor:
    """Merged log-probabilities ``[G, V]``: for each group, row ``logp[first]`` plus the
    log-probability of every later token of the group (``logp[j, targets[j]]``).

    ``logp`` ``[n, V]``: row j is the distribution that predicts token j; ``targets``
    ``[n]`` the tokens that follow. Gradients flow through both terms."""
    picked = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    rows, extra = [], []
    for group in groups:
        rows.append(group[0])
        extra.append(picked[list(group[1:])].sum() if len(group) > 1 else picked.new_zeros(()))
    return logp[rows] + torch.stack(extra).unsqueeze(-1)


def exact_match_map(student_texts: Sequence[str | None], teacher_texts: Sequence[str | None]
                    ) -> torch.Tensor:
    """``[len(teacher_texts)]`` long tensor: the student id whose text equals teacher id
    t's, or -1. ``None`` or empty texts never match; the lowest id wins on each side."""
    first_student: dict[str, int] = {}
    for i, text in enumerate(student_texts):
        if text and text not in first_student:
            first_student[text] = i
    mapping = torch.full((len(teacher_texts),), -1, dtype=torch.long)
    seen: set[str] = set()
    for t, text in enumerate(teacher_texts):
        if text and text in first_student and text not in seen:
            mapping[t] = first_student[text]
            seen.add(text)
    return mapping


def token_texts(tokenizer: object) -> list[str | None]:
    """Each id's text as the tokenizer's decoder writes it on its own (``None`` for
    special tokens and for pieces of a UTF-8 character, which decode to U+FFFD)."""
    backend = tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    specials = set(tokenizer.all_special_ids)  # type: ignore[attr-defined]
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))  # type: ignore[attr-defined]
    texts: list[str | None] = []
    for i, piece in enumerate(pieces):
        text = None if (i in specials or piece is None) else backend.decoder.decode([piece]) \
            if backend.decoder is not None else piece
        texts.append(None if not text or "\ufffd" in text else text)
    return texts


def hybrid_rows(q: torch.Tensor, p: torch.Tensor, vocab_map: torch.Tensor | None
                ) -> torch.Tensor:
    """H(q, p) per row from full (possibly merged) probabilities ``q`` ``[N, Vs]``,
    ``p`` ``[N, Vt]``; ``vocab_map`` ``[Vt]`` teacher id -> student id or -1."""
    if vocab_map is None or not bool((vocab_map >= 0).any()):
        return sorted_l1_rows(q, p)
    vocab_map = vocab_map.to(p.device)
    t_ids = (vocab_map >= 0).nonzero().squeeze(-1)
    s_ids = vocab_map[t_ids]
    matched = (p[:, t_ids] - q[:, s_ids]).abs().sum(-1)
    t_keep = torch.ones(p.shape[-1], dtype=torch.bool, device=p.device)
    t_keep[t_ids] = False
    s_keep = torch.ones(q.shape[-1], dtype=torch.bool, device=q.device)
    s_keep[s_ids] = False
    return matched + sorted_l1_rows(q[:, s_keep], p[:, t_keep])


def hybrid_topk_rows(q: torch.Tensor, p_top: torch.Tensor, p_ids: torch.Tensor,
                     p_rest: torch.Tensor, vocab_map: torch.Tensor | None, k: int
                     ) -> torch.Tensor:
    """H on a top-k teacher: ``q`` ``[N, Vs]`` student probabilities; ``p_top`` /
    ``p_ids`` ``[N, k']`` the teacher's top probabilities and their ids; ``p_rest`` ``[N]``
    its remaining mass; ``k`` the student's top entries kept. Returns ``[N]``."""
    if vocab_map is None:
        mapped = torch.full_like(p_ids, -1, dtype=torch.long)
    else:
        mapped = vocab_map.to(p_ids.device)[p_ids.long()]
    is_matched = mapped >= 0
    safe = mapped.clamp_min(0)
    q_at = q.gather(-1, safe)
    matched = ((p_top - q_at).abs() * is_matched).sum(-1)
    # the student's unmatched entries: its matched ones set to 0. Counted with scatter_add,
    # since unmatched slots all point at id 0 and a plain scatter would let them overwrite
    # a real match there.
    hits = torch.zeros_like(q).scatter_add(-1, safe, is_matched.to(q.dtype))
    q_unmatched = q * (hits == 0)
    p_unmatched = torch.where(is_matched, torch.zeros_like(p_top), p_top)
    p_unmatched = p_unmatched.sort(dim=-1, descending=True).values
    q_top, q_rest = topk_and_rest(q_unmatched, k)
    return matched + uld_topk_rows(q_top, q_rest, p_unmatched, p_rest)


def uld_hybrid(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
               mask: torch.Tensor | None = None, temperature: float = 1.0,
               chunk_size: int | None = None, vocab_map: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Mean H over the masked-in positions (a 0-dim tensor), from logits aligned position
    by position: ``student_logits`` ``[B, S, Vs]``, ``teacher_logits`` ``[B, S, Vt]``,
    ``mask`` ``[B, S]``, ``vocab_map`` ``[Vt]`` (``None``: nothing matched, i.e. ULD).
    ``chunk_size`` processes that many positions at a time (same value)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError("student and teacher logits must align position by position")
    keep = (mask.to(torch.bool) if mask is not None
            else torch.ones(student_logits.shape[:-1], dtype=torch.bool,
                            device=student_logits.device))
    s, t = student_logits[keep], teacher_logits[keep]
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    step = chunk_size or s.shape[0]
    total = s.new_zeros((), dtype=widen(s).dtype)
    for start in range(0, s.shape[0], step):
        q = torch.softmax(widen(s[start:start + step]) / temperature, -1)
        p = torch.softmax(widen(t[start:start + step]) / temperature, -1)
        total = total + hybrid_rows(q, p, vocab_map).sum()
    return total / s.shape[0]
