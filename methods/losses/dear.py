"""DeAR's pointwise distillation loss (Abdallah et al., 2025, arXiv:2508.16998).

For one query, a group of N passages (the judged positive first, then N−1 hard
negatives), student scores s and teacher scores t:

    L = (1 − α)·L_main(s) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))

averaged over the queries of the batch, with ``main`` one of

- ``"ce"``: softmax cross-entropy over the group with the positive (index 0) as the label,
- ``"ranknet"``: RankNet with soft targets: the mean over ordered pairs i ≠ j of the binary
  cross-entropy between sigmoid(s_i − s_j) and the target sigmoid(t_i − t_j),
- ``"ce+ranknet"``: the sum of the two.

Defaults follow the official training script (T = 2, α = 0.1; its argparse default α is
0.3). The T² factor keeps the KL gradient's scale independent of T (Hinton et al., 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REGISTRY = [
    {"name": "dear_pointwise", "target": "dear_pointwise",
     "summary": "DeAR stage 1: (1-a)·CE/RankNet + a·T²·KL(teacher ‖ student) over a group",
     "citation": "Abdallah et al. 2025 (DeAR), arXiv:2508.16998"},
]
MAINS = ("ce", "ranknet", "ce+ranknet")


def ranknet_soft(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Mean over queries of the mean over ordered pairs i ≠ j of
    BCE(sigmoid(s_i − s_j), sigmoid(t_i − t_j)). Shapes: ``[batch, n]`` each."""
    n = student_scores.shape[-1]
    if n < 2:
        return student_scores.sum() * 0.0
    s_diff = student_scores.unsqueeze(-1) - student_scores.unsqueeze(-2)
    target = torch.sigmoid(teacher_scores.unsqueeze(-1) - teacher_scores.unsqueeze(-2))
    pair_loss = F.binary_cross_entropy_with_logits(s_diff, target, reduction="none")
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=student_scores.device)
    return pair_loss[..., off_diagonal].mean(-1).mean()


def dear_pointwise(student_scores: torch.Tensor, teacher_scores: torch.Tensor, *,
                   alpha: float = 0.1, temperature: float = 2.0, main: str = "ce",
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """DeAR stage-1 loss. ``student_scores``, ``teacher_scores``: ``[batch, n]`` (float);
    ``labels``: ``[batch]`` index of the positive (default 0). Returns a scalar.
    The teacher is not differentiated (detach it if it requires grad)."""
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(f"scores must both be [batch, n], got {tuple(student_scores.shape)} "
                         f"and {tuple(teacher_scores.shape)}")
    if main not in MAINS:
        raise ValueError(f"main must be one of {', '.join(MAINS)}, got {main!r}")
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ValueError(f"need 0 <= alpha <= 1 and temperature > 0, got {alpha}, {temperature}")
    s = student_scores.float()
    t = teacher_scores.float()
    if labels is None:
        labels = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
    main_loss = s.sum() * 0.0
    if "ce" in main.split("+"):
        main_loss = main_loss + F.cross_entropy(s, labels)
    if "ranknet" in main.split("+"):
        main_loss = main_loss + ranknet_soft(s, t)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return (1.0 - alpha) * main_loss + alpha * temperature**2 * kl
