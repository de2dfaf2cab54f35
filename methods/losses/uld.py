"""Universal Logit Distillation (ULD): a distance between next-token distributions over two
different vocabularies.

Boizard, El Haddad, Hudelot & Colombo 2024, "Towards Cross-Tokenizer Distillation: the
Universal Logit Distillation Loss for LLMs", arXiv:2402.12030. With q = softmax(student
logits / T) over the student's vocabulary (size Vs) and p = softmax(teacher logits / T)
over the teacher's (Vt), each sorted in decreasing order and padded with zeros to
max(Vs, Vt):

    ULD(q, p) = Σ_i |q_(i) − p_(i)|

the paper's closed form of the Wasserstein-1 distance between the two distributions when
the transport cost does not depend on which tokens are paired ("uniform support and
cost"): pairing the entries by rank is the cheapest one-to-one pairing. It ignores token
identities entirely, so it needs no shared vocabulary. It lies in [0, 2], is symmetric, and
is 0 whenever the two sorted vectors agree (in particular when p = q).

What the authors' code does (github.com/Nicolas-BZRD/llm-recipes, models/distillation_model.py
and configs/distillation.py), and which recipes here follow: the student's and the teacher's
answer positions are aligned by index (position i with position i, both counted from the
first answer token) and cut to the shorter of the two; per sequence the sum above is
averaged over those positions; the total loss is ``cross_entropy + λ · ULD`` with λ =
``distil_factor`` = 1.5 and both temperatures 1. This module is the pure distance; the
cross-entropy, λ and the position alignment belong to the recipe
(:mod:`methods.lm.uld`). The mean here is over the masked-in positions of the whole batch
(the library's convention), not per sequence first.

Top-k teachers. A full teacher distribution (Vt = 262,144 for Gemma 3) cannot be cached
per position, so recipes cache the teacher's top k probabilities and its remaining mass
("rest"). :func:`uld_topk_rows` then compares the two sorted top-k vectors entry by entry
and the two rest masses as one class each:

    ULD_k = Σ_{i≤k} |q_(i) − p_(i)| + |Q_rest − P_rest|

By the triangle inequality this is a lower bound of ULD, equal to it at k = max(Vs, Vt)
(tested), and the gap is at most 2·min(Q_rest, P_rest) ≤ 2·P_rest: the teacher's mass
outside its top k bounds the error (recipes record it).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

REGISTRY = [
    {"name": "uld", "target": "uld",
     "summary": "Wasserstein-1 between sorted student/teacher probabilities (any two "
                "vocabularies; optional top-k + rest approximation)",
     "citation": "Boizard et al. 2024 (ULD), arXiv:2402.12030"},
]


def sorted_l1_rows(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Σ_i |q_(i) − p_(i)| per row: both sorted decreasingly, the shorter padded with 0.

    ``q`` ``[N, Vs]`` and ``p`` ``[N, Vt]`` are probabilities (rows need not sum to 1:
    the hybrid loss passes sub-vectors); returns ``[N]``."""
    qs = q.sort(dim=-1, descending=True).values
    ps = p.sort(dim=-1, descending=True).values
    width = max(qs.shape[-1], ps.shape[-1])
    qs = torch.nn.functional.pad(qs, (0, width - qs.shape[-1]))
    ps = torch.nn.functional.pad(ps, (0, width - ps.shape[-1]))
    return (qs - ps).abs().sum(-1)


def uld_topk_rows(q_top: torch.Tensor, q_rest: torch.Tensor, p_top: torch.Tensor,
                  p_rest: torch.Tensor) -> torch.Tensor:
    """The top-k ULD per row: ``q_top`` ``[N, k]`` and ``p_top`` ``[N, k']`` sorted
    decreasingly (the shorter is padded with 0), ``q_rest`` / ``p_rest`` ``[N]`` the mass
    outside them. Returns ``[N]``."""
    width = max(q_top.shape[-1], p_top.shape[-1])
    q_top = torch.nn.functional.pad(q_top, (0, width - q_top.shape[-1]))
    p_top = torch.nn.functional.pad(p_top, (0, width - p_top.shape[-1]))
    return (q_top - p_top).abs().sum(-1) + (q_rest - p_rest).abs()


def topk_and_rest(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top-k probabilities sorted decreasingly [N, k], rest mass [N])`` of ``probs``
    ``[N, V]``; the rest is computed from the row's own sum (merged rows sum to < 1)."""
    top = torch.topk(probs, min(k, probs.shape[-1]), dim=-1).values
    return top, (probs.sum(-1) - top.sum(-1)).clamp_min(0.0)


def widen(x: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 logits lose ~1% of a probability), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def _rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
          topk: int | None) -> torch.Tensor:
    q = torch.softmax(widen(student) / temperature, dim=-1)
    p = torch.softmax(widen(teacher) / temperature, dim=-1)
    if topk is None:
        return sorted_l1_rows(q, p).sum()
    return uld_topk_rows(*topk_and_rest(q, topk), *topk_and_rest(p, topk)).sum()


def _flatten(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [batch, seq, vocab], got {tuple(logits.shape)}")
    if mask is None:
        return logits.reshape(-1, logits.shape[-1])
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must be {tuple(logits.shape[:-1])}")
    return logits[mask.to(torch.bool)]


def uld(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
        mask: torch.Tensor | None = None, temperature: float = 1.0,
        chunk_size: int | None = None, topk: int | None = None) -> torch.Tensor:
    """Mean ULD over the masked-in positions (a 0-dim tensor).

    Shapes: ``student_logits`` ``[B, S, Vs]``, ``teacher_logits`` ``[B, S, Vt]`` (the
    vocabularies may differ; position s of one is compared with position s of the other),
    ``mask`` ``[B, S]`` bool. ``topk``: compare only the top k of each side plus one rest
    class (see the module docstring); ``None`` is exact. ``chunk_size``: rows at a time,
    each chunk recomputed in backward (same value and gradient, less memory).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_logits.shape)} logits must align position by "
                         "position (only the vocabulary sizes may differ)")
    student, teacher = _flatten(student_logits, mask), _flatten(teacher_logits, mask)
    n = student.shape[0]
    if n == 0:
        return student_logits.sum() * 0.0
    if chunk_size is None or chunk_size >= n:
        return _rows(student, teacher, temperature, topk) / n
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    total = student.new_zeros((), dtype=widen(student).dtype)
    for s, t in zip(torch.split(student, chunk_size), torch.split(teacher, chunk_size),
                    strict=True):
        if torch.is_grad_enabled() and (s.requires_grad or t.requires_grad):
            total = total + checkpoint(_rows, s, t, temperature, topk, use_reentrant=False)
        else:
            total = total + _rows(s, t, temperature, topk)
    return total / n
