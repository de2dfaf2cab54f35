"""Token-level divergences between a teacher and a student distribution.

With p = softmax(teacher_logits / T) and q = softmax(student_logits / T) per token:

- ``fkl``      KL(p ‖ q)                                      (Hinton et al., 2015)
- ``rkl``      KL(q ‖ p)                                      (MiniLLM, Gu et al., 2024)
- ``jsd``      β·KL(p ‖ m) + (1−β)·KL(q ‖ m), m = β·p + (1−β)·q (GKD, Agarwal et al., 2024)
- ``skew_fkl`` KL(p ‖ α·p + (1−α)·q)                          (DistiLLM, Ko et al., 2024)
- ``skew_rkl`` KL(q ‖ α·q + (1−α)·p)                          (DistiLLM)
- ``tvd``      ½·Σ|p − q|                                     (Wen et al., 2023)

Every loss has the signature ``fn(student_logits, teacher_logits, *, mask=None,
temperature=1.0, chunk_size=None, **hp) -> scalar``: logits ``[batch, seq, vocab]`` (or
``[batch, n]`` for ranking), ``mask`` ``[batch, seq]`` bool; the value is the mean over the
masked-in tokens of the whole batch. No T² factor is applied: recipes multiply by T² where
their paper does. ``chunk_size=k`` processes k tokens at a time with recomputation in
backward; value and gradients equal the plain path (tested to 1e-5).

Note on ``jsd`` at β ∈ {0, 1}: the definition above gives m = q (or p) and a loss of 0, as
written. (TRL's implementation instead special-cases those limits to KL; use ``fkl``/``rkl``.)
"""

from __future__ import annotations

import torch

from methods.losses.token_core import kl_rows, log_mixture, token_loss

REGISTRY = [
    {"name": "fkl", "target": "forward_kl", "summary": "forward KL(p_teacher ‖ q_student)",
     "citation": "Hinton et al. 2015, arXiv:1503.02531"},
    {"name": "rkl", "target": "reverse_kl", "summary": "reverse KL(q_student ‖ p_teacher)",
     "citation": "Gu et al. 2024 (MiniLLM), arXiv:2306.08543"},
    {"name": "jsd", "target": "generalized_jsd",
     "summary": "generalized JSD with mixture weight beta (default 0.5)",
     "citation": "Agarwal et al. 2024 (GKD), arXiv:2306.13649"},
    {"name": "skew_fkl", "target": "skew_forward_kl",
     "summary": "skew KL(p ‖ a·p + (1-a)·q), alpha default 0.1",
     "citation": "Ko et al. 2024 (DistiLLM), arXiv:2402.03898"},
    {"name": "skew_rkl", "target": "skew_reverse_kl",
     "summary": "skew KL(q ‖ a·q + (1-a)·p), alpha default 0.1",
     "citation": "Ko et al. 2024 (DistiLLM), arXiv:2402.03898"},
    {"name": "tvd", "target": "total_variation", "summary": "total variation ½·Σ|p − q|",
     "citation": "Wen et al. 2023 (f-divergence KD), arXiv:2307.15190"},
]


def _check_weight(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
               mask: torch.Tensor | None = None, temperature: float = 1.0,
               chunk_size: int | None = None) -> torch.Tensor:
    """KL(p ‖ q), mean over masked tokens. Shapes: logits [B, S, V], mask [B, S]."""
    return token_loss(lambda s, t: kl_rows(t, s), student_logits, teacher_logits,
                      mask=mask, temperature=temperature, chunk_size=chunk_size)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
               mask: torch.Tensor | None = None, temperature: float = 1.0,
               chunk_size: int | None = None) -> torch.Tensor:
    """KL(q ‖ p), mean over masked tokens. Shapes: logits [B, S, V], mask [B, S]."""
    return token_loss(lambda s, t: kl_rows(s, t), student_logits, teacher_logits,
                      mask=mask, temperature=temperature, chunk_size=chunk_size)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                    mask: torch.Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None, beta: float = 0.5) -> torch.Tensor:
    """β·KL(p ‖ m) + (1−β)·KL(q ‖ m) with m = β·p + (1−β)·q (GKD). Symmetric at β = 0.5."""
    beta = _check_weight("beta", beta)

    def rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_m = log_mixture(t, s, beta)
        return beta * kl_rows(t, log_m) + (1.0 - beta) * kl_rows(s, log_m)

    return token_loss(rows, student_logits, teacher_logits, mask=mask,
                      temperature=temperature, chunk_size=chunk_size)


def skew_forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                    mask: torch.Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None, alpha: float = 0.1) -> torch.Tensor:
    """KL(p ‖ α·p + (1−α)·q) (DistiLLM's SKL). Equals ``fkl`` at α = 0."""
    alpha = _check_weight("alpha", alpha)
    return token_loss(lambda s, t: kl_rows(t, log_mixture(t, s, alpha)), student_logits,
                      teacher_logits, mask=mask, temperature=temperature,
                      chunk_size=chunk_size)


def skew_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                    mask: torch.Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None, alpha: float = 0.1) -> torch.Tensor:
    """KL(q ‖ α·q + (1−α)·p) (DistiLLM's SRKL). Equals ``rkl`` at α = 0."""
    alpha = _check_weight("alpha", alpha)
    return token_loss(lambda s, t: kl_rows(s, log_mixture(s, t, alpha)), student_logits,
                      teacher_logits, mask=mask, temperature=temperature,
                      chunk_size=chunk_size)


def total_variation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                    mask: torch.Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None) -> torch.Tensor:
    """½·Σ_v |p_v − q_v|, mean over masked tokens; in [0, 1]."""
    return token_loss(lambda s, t: 0.5 * (t.exp() - s.exp()).abs().sum(-1), student_logits,
                      teacher_logits, mask=mask, temperature=temperature,
                      chunk_size=chunk_size)
