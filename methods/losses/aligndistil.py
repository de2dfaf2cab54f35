"""AlignDistil: token-level alignment as adaptive policy distillation (Zhang et al., 2025,
ACL 2025, arXiv:2503.02832; official code: github songmzhang/AlignDistil, an OpenRLHF fork,
``openrlhf/trainer/aligndistil_offpolicy_trainer.py`` and ``aligndistil_trainer.py``).

Two frozen models score every vocabulary entry at every response position: a DPO model
(logits z₁ = z_dpo) and a second model (logits z₂). The student π_θ is distilled, with the
reverse KL, towards a synthetic teacher built from them:

    z*_t = base_t + α_t · (z₁ − z₂)_t            (per token t, on raw logits)
    β_t  = β₀ / α_t                              (per-token KL coefficient)
    L    = mean over sequences of  Σ_t β_t · KL(π_θ(·|t) ‖ softmax(z*_t))  [/ |y|]

The ``mode`` selects the teacher (the official ``--reward_boost_type`` in brackets):

- ``"adaptive"`` [``aligndistil``]: z₂ = reverse DPO model, z* = z₁ + α_t (z₁ − z₂).
- ``"contrastive"`` [``theorem1_contrast``]: z₂ = reverse DPO model, z* = z₁ + α (z₁ − z₂),
  α constant.
- ``"constant"`` [``theorem1``]: z₂ = reference (initial) policy, z* = α z₁ + (1 − α) z₂
  (= z₂ + α (z₁ − z₂)), α constant.
- ``"theorem1_adaptive"`` [``theorem1_adaptive``]: z₂ = reference policy,
  z* = α_t z₁ + (1 − α_t) z₂.

with the token-adaptive coefficient α_t = r · D_t + ε and D_t = Σ_v |p₁(v) − p₂(v)|, p = the
softmax of each model's logits (temperature 1). **The paper calls D_t the total variation
distance; the official code computes the plain L1 distance without the ½ (so D_t ∈ [0, 2])**,
and so does this module, so that r keeps the official meaning. Defaults: r = 10 (off-policy;
the official on-policy script uses 15), ε = 1e-3, β₀ = 0.1 (the DPO models' β).

Where the modes come from:

- ``"constant"`` is Theorem 1: with the DPO reward r_dpo = β₀ log(π_dpo/π_ref) in the RLHF
  objective with KL coefficient β, the optimum is the token-level teacher
  softmax((β₀/β) z_dpo + (1 − β₀/β) z_ref) and the objective equals β Σ_t KL(π_θ ‖ π*): here
  α = β₀/β (α > 1 extrapolates beyond the DPO model) and β_t = β = β₀/α. The official code
  passes the reference model as ``--ref_model`` (it defaults to the initial policy,
  ``cli/train_aligndistil_off_policy.py`` l. 48), hence z₂ = the reference policy's logits.
- ``"contrastive"`` replaces the DPO reward by the contrastive one β₀ log(π_dpo/π_dpo−) (the
  reverse DPO model π_dpo− is trained with chosen and rejected swapped), extrapolating from
  the DPO model: z* = z_dpo + α (z_dpo − z_dpo−), β_t = β₀/α ("contrastive without
  adaptivity"; official ``theorem1_contrast``, weight = beta/beta2, loss × beta2).
- ``"adaptive"`` is AlignDistil: the contrastive teacher with α_t = r D_t + ε per token
  (token adaptive logit extrapolation), β_t = β₀/α_t (official ``aligndistil``,
  off-policy trainer ll. 215-221, on-policy trainer ll. 293-299).
- ``"theorem1_adaptive"``: Theorem 1's interpolation with the adaptive α_t; in the official
  code; included for completeness.

The constant modes take α from ``alpha`` (default 1.0, which is what the official CLI defaults
``--beta 1.0 --beta2 1.0`` give; the value used for the paper's ablation is not known to us, so
set it explicitly). ``r`` and ``eps`` only affect the adaptive modes.

Decisions, checked against the official code:

- The extrapolation is on raw logits (``weight * (teacher_logits - reference_logits) +
  teacher_logits``), not on log-probabilities; the two give the same softmax, since they
  differ by a per-token constant. D_t uses float32 softmax probabilities.
- The teacher is a constant: the official code computes both models' logits under
  ``torch.no_grad()``. :func:`aligndistil_loss` detaches ``dpo_logits`` and
  ``reverse_logits``, so neither z* nor α_t (nor β_t) carries a gradient; only the student
  is trained. :func:`aligndistil_teacher` itself is plain differentiable arithmetic.
- β_t multiplies the per-token reverse KL; the per-sequence sum over response tokens is
  divided by the response length |y| when ``length_normalize`` (official ``--reward_len_norm``,
  used by both official scripts), then averaged over the sequences of the batch.
- Temperature (official ``--kd_temperature``, default 1): α_t comes from temperature-1
  probabilities; z* and the student logits are divided by T before the softmax (as in the
  on-policy trainer; the off-policy trainer divides only z*). No T² factor.
- Vocabulary slots whose logit is −inf in either model (padding) get −inf in z*.

Library conventions: logits ``[batch, seq, vocab]``; ``mask`` ``[batch, seq]`` bool marks the
response tokens, and position t of the logits must already be the distribution over response
token t (the caller shifts; the official off-policy trainer does not shift its mask). A
sequence without response tokens is skipped; the batch mean runs over the others, and an
all-false mask returns 0 with a warning. ``chunk_size=k`` builds the teacher and the KL for k
tokens at a time (recomputed in backward under activation checkpointing), so the float32
``[tokens, vocab]`` tensors exist for one chunk only; the result equals the plain path.

Registration: the library's generic loss signature takes one teacher; AlignDistil needs two
teacher logit tensors, so it is registered as ``aligndistil`` with the signature
``(student_logits, dpo_logits, reverse_logits, *, mask, ...)`` spelled out in the entry's
``signature`` metadata, and is wired by its own recipe rather than by the generic token-KD one.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.checkpoint import checkpoint

from methods.losses.token_core import kl_rows

REGISTRY = [
    {"name": "aligndistil", "target": "aligndistil_loss",
     "summary": "AlignDistil: beta_t-weighted reverse KL to z* = z_dpo + a_t (z_dpo - z_rev), "
                "a_t = r·L1(p_dpo, p_rev) + eps (three logit tensors: student, DPO, reverse DPO)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832",
     "signature": "(student_logits, dpo_logits, reverse_logits, *, mask=None, r=10.0, "
                  "eps=1e-3, beta0=0.1, mode='adaptive', alpha=1.0, length_normalize=True, "
                  "temperature=1.0, chunk_size=None) -> scalar"},
]

MODES = ("adaptive", "contrastive", "constant", "theorem1_adaptive")
_ADAPTIVE = ("adaptive", "theorem1_adaptive")
_CONTRASTIVE = ("adaptive", "contrastive")  # extrapolate from z₁; the others from z₂
_FLOOR = torch.finfo(torch.float32).min / 4  # same finite floor as methods.losses.token_core


def _check_hp(mode: str, r: float, eps: float, beta0: float, alpha: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if beta0 <= 0:
        raise ValueError(f"beta0 must be positive, got {beta0}")
    if mode in _ADAPTIVE and (r < 0 or eps <= 0):
        raise ValueError(f"need r >= 0 and eps > 0 (beta_t = beta0 / (r·D_t + eps)), "
                         f"got r={r}, eps={eps}")
    if mode not in _ADAPTIVE and alpha <= 0:
        raise ValueError(f"alpha must be positive (beta_t = beta0 / alpha), got {alpha}")


def l1_distance(dpo_logits: torch.Tensor, reverse_logits: torch.Tensor) -> torch.Tensor:
    """D_t = Σ_v |softmax(z₁)_v − softmax(z₂)_v| in float32 (twice the TVD; in [0, 2]).

    Shapes: logits ``[..., V]`` -> ``[...]``. The official code's distance, which the paper
    writes as the total variation distance.
    """
    p1 = torch.softmax(dpo_logits.float(), dim=-1)
    p2 = torch.softmax(reverse_logits.float(), dim=-1)
    return (p1 - p2).abs().sum(-1)


def extrapolation_coefficient(dpo_logits: torch.Tensor, reverse_logits: torch.Tensor, *,
                              r: float = 10.0, eps: float = 1e-3, mode: str = "adaptive",
                              alpha: float = 1.0) -> torch.Tensor:
    """α per token, ``[...]`` float32: r·D_t + ε in the adaptive modes, ``alpha`` otherwise."""
    _check_hp(mode, r, eps, 1.0, alpha)
    if mode in _ADAPTIVE:
        return r * l1_distance(dpo_logits, reverse_logits) + eps
    return torch.full(dpo_logits.shape[:-1], float(alpha), dtype=torch.float32,
                      device=dpo_logits.device)


def aligndistil_teacher(dpo_logits: torch.Tensor, reverse_logits: torch.Tensor, *,
                        r: float = 10.0, eps: float = 1e-3, beta0: float = 0.1,
                        mode: str = "adaptive", alpha: float = 1.0,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic teacher's logits z* and the per-token KL weights β_t.

    Shapes: ``dpo_logits``, ``reverse_logits`` ``[B, T, V]`` (any leading shape ``[..., V]``)
    -> ``(teacher_logits [B, T, V], token_weights [B, T])``, both float32. In the default mode
    z* = z_dpo + α_t (z_dpo − z_rev) with α_t = r·Σ_v|p_dpo − p_rev| + ε (the L1 distance;
    the paper writes TVD) and β_t = β₀/α_t; see the module docstring for the other modes (in
    ``"constant"``/``"theorem1_adaptive"`` the second argument is the reference policy's
    logits). Slots that are −inf in either input are −inf in z*. Differentiable as written;
    detach the inputs for a constant teacher (:func:`aligndistil_loss` does).
    """
    if dpo_logits.shape != reverse_logits.shape:
        raise ValueError(f"dpo logits {tuple(dpo_logits.shape)} and reverse logits "
                         f"{tuple(reverse_logits.shape)} differ in shape")
    _check_hp(mode, r, eps, beta0, alpha)
    coef = extrapolation_coefficient(dpo_logits, reverse_logits, r=r, eps=eps, mode=mode,
                                     alpha=alpha)
    z1 = dpo_logits.float()
    z2 = reverse_logits.float()
    blocked = torch.isneginf(z1) | torch.isneginf(z2)
    if blocked.any():
        z1 = z1.masked_fill(blocked, 0.0)
        z2 = z2.masked_fill(blocked, 0.0)
    base = z1 if mode in _CONTRASTIVE else z2
    teacher = base + coef.unsqueeze(-1) * (z1 - z2)
    if blocked.any():
        teacher = teacher.masked_fill(blocked, float("-inf"))
    return teacher, beta0 / coef


def _weighted_rkl(student: torch.Tensor, dpo: torch.Tensor, reverse: torch.Tensor,
                  row_weight: torch.Tensor, r: float, eps: float, beta0: float, mode: str,
                  alpha: float, temperature: float) -> torch.Tensor:
    """Σ_rows row_weight · β_t · KL(student ‖ softmax(z*/T)) over rows ``[N, V]``."""
    teacher, token_weight = aligndistil_teacher(dpo, reverse, r=r, eps=eps, beta0=beta0,
                                                mode=mode, alpha=alpha)
    log_t = torch.log_softmax(teacher / temperature, dim=-1).clamp_min(_FLOOR)
    log_s = torch.log_softmax(student.float() / temperature, dim=-1).clamp_min(_FLOOR)
    return (row_weight * token_weight * kl_rows(log_s, log_t)).sum()


def aligndistil_loss(student_logits: torch.Tensor, dpo_logits: torch.Tensor,
                     reverse_logits: torch.Tensor, *, mask: torch.Tensor | None = None,
                     r: float = 10.0, eps: float = 1e-3, beta0: float = 0.1,
                     mode: str = "adaptive", alpha: float = 1.0,
                     length_normalize: bool = True, temperature: float = 1.0,
                     chunk_size: int | None = None) -> torch.Tensor:
    """AlignDistil loss (a 0-dim float32 tensor):

        mean over sequences b of  Σ_{t ∈ mask_b} β_t · KL(π_θ(·|t) ‖ softmax(z*_t / T))  [/ |y_b|]

    Shapes: ``student_logits``, ``dpo_logits``, ``reverse_logits`` ``[B, T, V]``; ``mask``
    ``[B, T]`` bool (response tokens; None = all). (z*, β_t) from :func:`aligndistil_teacher`
    on the detached teacher inputs; ``|y_b|`` = the number of masked-in tokens of sequence b.
    Reverse KL (student first), as the official ``--kd_divergence rkl``.
    """
    if not (student_logits.shape == dpo_logits.shape == reverse_logits.shape):
        raise ValueError(f"student {tuple(student_logits.shape)}, dpo "
                         f"{tuple(dpo_logits.shape)} and reverse {tuple(reverse_logits.shape)} "
                         "logits must have the same shape (same vocabulary)")
    if student_logits.dim() != 3:
        raise ValueError(f"logits must be [batch, seq, vocab], got {tuple(student_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    _check_hp(mode, r, eps, beta0, alpha)
    batch, seq, _ = student_logits.shape
    if mask is None:
        keep = torch.ones(batch, seq, dtype=torch.bool, device=student_logits.device)
    elif mask.shape != (batch, seq):
        raise ValueError(f"mask {tuple(mask.shape)} must be {(batch, seq)}")
    else:
        keep = mask.to(torch.bool)
    lengths = keep.sum(-1)  # [B]
    n_sequences = int((lengths > 0).sum())
    if n_sequences == 0:
        warnings.warn("AlignDistil loss over an empty mask: returning 0", stacklevel=2)
        return student_logits.sum() * 0.0
    per_token = torch.ones_like(lengths, dtype=torch.float32)
    if length_normalize:
        per_token = 1.0 / lengths.clamp_min(1).float()
    row_weight = (per_token / n_sequences).unsqueeze(-1).expand(batch, seq)[keep]  # [N]
    student = student_logits[keep]
    dpo = dpo_logits.detach()[keep]
    reverse = reverse_logits.detach()[keep]
    hp = (r, eps, beta0, mode, alpha, temperature)
    n_rows = student.shape[0]
    if chunk_size is None or chunk_size >= n_rows:
        return _weighted_rkl(student, dpo, reverse, row_weight, *hp)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunks = zip(*(torch.split(x, chunk_size) for x in (student, dpo, reverse, row_weight)),
                 strict=True)
    if not torch.is_grad_enabled() or not student.requires_grad:
        with torch.no_grad():
            return sum(_weighted_rkl(*c, *hp) for c in chunks)  # type: ignore[return-value]
    total = student.new_zeros((), dtype=torch.float32)
    for c in chunks:
        total = total + checkpoint(_weighted_rkl, *c, *hp, use_reentrant=False)
    return total
