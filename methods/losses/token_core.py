"""Shared machinery for token-level divergences: masking, temperature, mean, chunking.

Each divergence is written once as a per-row function of log-probabilities
``f(student_logp [N, V], teacher_logp [N, V]) -> [N]`` (float32). This module turns it into
a loss with the library's signature: select the masked-in tokens, apply the temperature,
average over the selected tokens of the whole batch, and optionally process the rows in
chunks so that the float32 probabilities of both models are never materialised for all
tokens at once (only one chunk's): each chunk's value and student gradient are computed
together in the forward pass (:class:`_FusedChunks`), or, when the teacher also needs a
gradient, the chunks are recomputed in backward under activation checkpointing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

RowDivergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_rows(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) per row from log-probabilities, with 0·log 0 = 0.

    The ``where`` keeps rows finite when a vocabulary entry has probability exactly 0 in
    ``a`` (e.g. ``-inf`` logits for padded vocabulary slots): its term is 0, not NaN.
    Rounding can make a near-zero KL come out at -1e-8; it is clamped to 0, since KL ≥ 0.
    """
    p_a = logp_a.exp()
    diff = torch.where(p_a > 0, logp_a - logp_b, torch.zeros_like(logp_a))
    return (p_a * diff).sum(-1).clamp_min(0.0)


def log_mixture(logp_a: torch.Tensor, logp_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w·a + (1−w)·b) computed stably in log space (w in [0, 1])."""
    if weight_a <= 0.0:
        return logp_b
    if weight_a >= 1.0:
        return logp_a
    w = torch.tensor(weight_a, dtype=logp_a.dtype, device=logp_a.device)
    return torch.logaddexp(logp_a + w.log(), logp_b + torch.log1p(-w))


def _flatten(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; teacher and student must share "
            "the vocabulary (cross-tokenizer distillation is not supported yet)"
        )
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            f"logits must be [batch, seq, vocab] (or [batch, n] for ranking), "
            f"got {tuple(student_logits.shape)}"
        )
    vocab = student_logits.shape[-1]
    if mask is None:
        return student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    if mask.shape != student_logits.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must be {tuple(student_logits.shape[:-1])}")
    keep = mask.to(torch.bool)
    return student_logits[keep], teacher_logits[keep]


def rows_loss(
    row_fn: RowDivergence, student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sum over rows of ``row_fn`` on temperature-scaled float32 log-probabilities."""
    s = torch.log_softmax(student.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher.float() / temperature, dim=-1)
    # -inf log-probabilities (masked vocabulary slots) make logaddexp's gradient NaN; a huge
    # finite floor has the same probability (0) and keeps every difference representable.
    floor = torch.finfo(torch.float32).min / 4
    return row_fn(s.clamp_min(floor), t.clamp_min(floor)).sum()


def token_loss(
    row_fn: RowDivergence,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    closure_has_params: bool = False,
) -> torch.Tensor:
    """Mean of ``row_fn`` over the masked-in tokens of the whole batch (a 0-dim tensor).

    An all-false mask returns 0 (connected to the graph, so ``backward`` works) with a
    warning, rather than the NaN of 0/0. The teacher is treated as a constant only if the
    caller detaches it; gradients flow to whatever requires them. ``closure_has_params``:
    ``row_fn`` uses trainable parameters of its own (e.g. MGSR's clipping network), so the
    chunked path must keep the autograd graph (checkpointing) rather than fuse.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student, teacher = _flatten(student_logits, teacher_logits, mask)
    n_tokens = student.shape[0]
    if n_tokens == 0:
        warnings.warn("distillation loss over an empty mask: returning 0", stacklevel=3)
        return student_logits.sum() * 0.0
    if chunk_size is None or chunk_size >= n_tokens:
        return rows_loss(row_fn, student, teacher, temperature) / n_tokens
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if not torch.is_grad_enabled() or not student.requires_grad:
        with torch.no_grad():
            return sum(rows_loss(row_fn, s, t, temperature) for s, t in zip(
                torch.split(student, chunk_size), torch.split(teacher, chunk_size),
                strict=True)) / n_tokens
    if teacher.requires_grad or closure_has_params:
        # Gradients beyond the student: recompute each chunk in backward instead of keeping it.
        total = student.new_zeros((), dtype=torch.float32)
        for s_chunk, t_chunk in zip(
            torch.split(student, chunk_size), torch.split(teacher, chunk_size), strict=True
        ):
            total = total + checkpoint(
                rows_loss, row_fn, s_chunk, t_chunk, temperature, use_reentrant=False
            )
        return total / n_tokens
    return _FusedChunks.apply(student, teacher, row_fn, temperature, chunk_size)


class _FusedChunks(torch.autograd.Function):
    """Loss and student gradient chunk by chunk in one pass (teacher constant).

    Each chunk's float32 probabilities live only while that chunk's value and gradient are
    computed; the gradient goes into one preallocated buffer that ``backward`` hands over
    as is. Nothing is recomputed, unlike activation checkpointing, which measured ~1.5x the
    plain path's time on CPU against ~1.0x for this (``benchmarks/kd_loss_memory.py``).
    Supports one backward pass (no double backward, no second ``retain_graph`` pass).
    """

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor,  # type: ignore[override]
                row_fn: RowDivergence, temperature: float, chunk_size: int) -> torch.Tensor:
        n_tokens = student.shape[0]
        grad = torch.empty_like(student)
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        for start in range(0, n_tokens, chunk_size):
            rows = slice(start, start + chunk_size)
            chunk = student[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                value = rows_loss(row_fn, chunk, teacher[rows], temperature) / n_tokens
            grad[rows] = torch.autograd.grad(value, chunk)[0]
            total += value.detach()
        ctx.grad = grad  # not save_for_backward: backward gives this very buffer to .grad
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad = getattr(ctx, "grad", None)
        if grad is None:
            raise RuntimeError("the chunked distillation loss supports one backward pass; "
                               "call it again (or use chunk_size=None) to differentiate twice")
        del ctx.grad  # so the gradient accumulator can keep the buffer without a copy
        return grad.mul_(grad_out.to(grad.dtype)), None, None, None, None
