"""TRG: knowledge distillation via a token-level relationship graph (Zhang, Liu & He 2023).

Zhang et al., "Knowledge Distillation via Token-level Relationship Graph", arXiv:2306.12442.
The objective is ``L = L_logit + a·L_inner + b·L_local + g·L_global`` over patch tokens.
Only the paper's abstract and first page could be read offline (no official code is
public), so every choice the formulas below leave open is stated here and in
:mod:`methods.vision.trg`:

- **Graph** (:func:`knn_graph`): over a set of n tokens, ``A_ij = exp(-‖T_i − T_j‖² / 2σ)``
  when ``j`` is one of the ``k`` nearest neighbours of ``i`` (Euclidean, self excluded),
  else 0. Each model's graph is built on its own features (student neighbourhoods for
  the student graph). ``σ`` defaults to the mean squared distance over the kNN pairs of
  that graph (detached): student and teacher features live at different scales, and a
  fixed σ would make one of the two graphs all-ones or all-zeros.
- **Local loss** (:func:`graph_local_loss`): rows of both graphs are softmaxed over all n
  tokens (non-neighbours keep their zero entry, so they get weight ``exp(0)``, as the
  formula is written) and compared with ``KL(teacher row ‖ student row)`` (the teacher's
  row is the target, as in Hinton KD), averaged over rows.
- **Global loss** (:func:`token_infonce`): InfoNCE between the student's (linearly
  projected) token i and the teacher's token i among all n teacher tokens, cosine
  similarity over temperature τ; the recipe schedules τ from high to low.
- **Contextual (inner) loss** (:func:`contextual_loss`): per image, ``CS = softmax(F Fᵀ /
  √D)`` over its patch tokens, with each model's own width D (so no projection is needed),
  and the mean squared error between the student's and the teacher's maps.

All functions are pure: tensors in, scalar out; the teacher side is detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REGISTRY = [
    {"name": "trg_local", "target": "graph_local_loss",
     "summary": "TRG local loss: KL between row-softmaxed kNN token graphs (teacher ‖ student)",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
    {"name": "trg_global", "target": "token_infonce",
     "summary": "TRG global loss: token InfoNCE, positive = teacher token at the same position",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
    {"name": "trg_inner", "target": "contextual_loss",
     "summary": "TRG contextual loss: MSE between softmax(F F^T / sqrt(D)) token maps",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
]


def knn_graph(tokens: torch.Tensor, k: int, sigma: float | None = None) -> torch.Tensor:
    """Weighted kNN graph over ``tokens`` [n, d] -> ``A`` [n, n].

    ``A_ij = exp(-‖t_i − t_j‖² / (2σ))`` if ``j`` is among the ``k`` nearest neighbours of
    ``i`` (self excluded; ties broken by index), else 0. Rows are neighbourhoods of ``i``,
    so ``A`` need not be symmetric. ``sigma=None``: the mean squared distance over the kNN
    pairs, detached. ``k`` is clipped to ``n − 1``.
    """
    n = tokens.shape[0]
    if n < 2:
        raise ValueError("a token graph needs at least 2 tokens")
    k = max(1, min(int(k), n - 1))
    sq = torch.cdist(tokens.float(), tokens.float()).pow(2)
    eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
    neighbours = sq.detach().masked_fill(eye, math.inf).topk(k, dim=1, largest=False).indices
    mask = torch.zeros_like(eye).scatter_(1, neighbours, True)
    if sigma is None:
        sigma = float(sq.detach()[mask].mean().clamp_min(1e-12))
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return torch.where(mask, torch.exp(-sq / (2.0 * sigma)), torch.zeros_like(sq))


def graph_local_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, *,
                     k: int = 8, sigma_student: float | None = None,
                     sigma_teacher: float | None = None) -> torch.Tensor:
    """Mean over rows of ``KL(softmax(A_T[i]) ‖ softmax(A_S[i]))``.

    Shapes: ``student_tokens`` [n, d_s], ``teacher_tokens`` [n, d_t] (row i of both is the
    same image position). Zero when the two graphs are equal.
    """
    if student_tokens.shape[0] != teacher_tokens.shape[0]:
        raise ValueError("student and teacher token sets must have the same size")
    a_s = knn_graph(student_tokens, k, sigma_student)
    with torch.no_grad():
        a_t = knn_graph(teacher_tokens.detach(), k, sigma_teacher)
    log_q = F.log_softmax(a_s, dim=1)
    log_p = F.log_softmax(a_t, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def token_infonce(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, *,
                  temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE over n token pairs: ``−mean_i log softmax_j(cos(s_i, t_j) / τ)[i]``.

    Shapes: ``student_tokens`` [n, d] (already projected to the teacher's width),
    ``teacher_tokens`` [n, d]. Negatives of token i are the other n − 1 teacher tokens.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = F.normalize(student_tokens.float(), dim=-1)
    t = F.normalize(teacher_tokens.detach().float(), dim=-1)
    logits = s @ t.T / temperature
    return F.cross_entropy(logits, torch.arange(s.shape[0], device=s.device))


def context_map(features: torch.Tensor) -> torch.Tensor:
    """``softmax(F Fᵀ / √D)`` per image: features [B, N, D] -> maps [B, N, N]."""
    f = features.float()
    return torch.softmax(f @ f.transpose(1, 2) / math.sqrt(f.shape[-1]), dim=-1)


def contextual_loss(student_features: torch.Tensor, teacher_features: torch.Tensor
                    ) -> torch.Tensor:
    """MSE between the student's and teacher's context maps (mean over B·N·N entries).

    Shapes: ``student_features`` [B, N, D_s], ``teacher_features`` [B, N, D_t].
    """
    if student_features.shape[:2] != teacher_features.shape[:2]:
        raise ValueError(f"token grids differ: student {tuple(student_features.shape[:2])} "
                         f"vs teacher {tuple(teacher_features.shape[:2])}")
    with torch.no_grad():
        target = context_map(teacher_features.detach())
    return F.mse_loss(context_map(student_features), target)


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor, *, temperature: float = 4.0, ce_weight: float = 0.1,
              kd_weight: float = 0.9) -> torch.Tensor:
    """``ce_weight·CE(s, y) + kd_weight·T²·KL(softmax(t/T) ‖ softmax(s/T))``, mean over images.

    Hinton et al. 2015 (arXiv:1503.02531); weights 0.1 / 0.9 and T = 4 as mdistiller's KD
    config for image classification. Shapes: logits [B, C], labels [B].
    """
    ce = F.cross_entropy(student_logits.float(), labels)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return ce_weight * ce + kd_weight * temperature ** 2 * kl
