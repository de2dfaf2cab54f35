"""Top-k teacher logits (cached per response by :mod:`bench.core.generation`, as DistillKit
does) and the top-k support they define.

A full-vocabulary logit cache is infeasible (~200 GB for 500 steps of a 49k vocabulary); the top k logits per position are not (k = 64: ~0.25% of it). With a cache,
a token-level loss compares teacher and student on the **k + 1 classes** made of the
teacher's top-k tokens and one "rest" class holding everything else: the student's
probabilities come from its full-vocabulary softmax (so mass it puts outside the teacher's
top k is seen and penalised), the teacher's from its cached top-k logits and their
full-vocabulary log-normaliser (``teacher_lse``, cached too), so the rest class holds the
teacher's true remaining mass. The loss of two distributions coarse-grained to this
partition is a lower bound of the full one for every f-divergence (data processing) and
equals it at k = V (tested).

Renormalising the *student* over the top-k ids instead leaves the logits outside the
support unconstrained: forward-KL students then put their argmax on tokens outside the
teacher's top k and produce no usable text (docs/measurements/instruct.md). Without ``teacher_lse`` the
teacher is renormalised over its top k and the rest class gets probability 0 (fine for
forward KL, ill-posed for reverse KL): the suites always cache the normaliser.
"""

from __future__ import annotations

import torch


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, stable at both ends (Mächler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_support(student_logits: torch.Tensor, teacher_values: torch.Tensor,
                 teacher_indices: torch.Tensor, teacher_lse: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student, teacher)`` float32 log-probabilities over ``[..., k + 1]`` classes (the
    teacher's top k, then "rest"), ready for any loss of ``methods.losses`` (a
    log-softmax of log-probabilities at T = 1 is the identity).

    ``student_logits`` ``[..., V]``; ``teacher_values`` / ``teacher_indices`` ``[..., k]``;
    ``teacher_lse`` ``[...]``, the teacher's log-sum-exp over its full vocabulary.
    """
    if teacher_values.shape != teacher_indices.shape:
        raise ValueError("teacher top-k values and indices must have the same shape")
    student_logp = torch.log_softmax(student_logits.float(), dim=-1)
    s_k = torch.gather(student_logp, -1, teacher_indices.long())
    values = teacher_values.float()
    if teacher_lse is None:
        t_k = torch.log_softmax(values, dim=-1)
        t_rest = torch.full_like(t_k[..., :1], float("-inf"))
    else:
        t_k = values - teacher_lse.float().unsqueeze(-1)
        t_rest = _log1mexp(torch.logsumexp(t_k, -1, keepdim=True))
    s_rest = _log1mexp(torch.logsumexp(s_k, -1, keepdim=True))
    return torch.cat([s_k, s_rest], -1), torch.cat([t_k, t_rest], -1)


def topk_of(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k values (float32: bf16 rounding of logits near 30 moves probabilities by ~6%)
    and int32 ids along the vocabulary."""
    values, indices = torch.topk(teacher_logits.float(), k=min(k, teacher_logits.shape[-1]),
                                 dim=-1)
    return values, indices.to(torch.int32)


def topk_lse_of(teacher_logits: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`topk_of` plus the float32 log-sum-exp over the whole vocabulary."""
    values, indices = topk_of(teacher_logits, k)
    return values, indices, torch.logsumexp(teacher_logits.float(), dim=-1)
