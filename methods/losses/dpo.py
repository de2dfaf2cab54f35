"""Direct Preference Optimization (Rafailov et al., 2023, NeurIPS, arXiv:2305.18290), Eq. 7:

    L_DPO = −E log σ( β · [ (log π_θ(y_w|x) − log π_ref(y_w|x))
                           − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )

over sequence log-probabilities of the chosen y_w and rejected y_l responses, β = 0.1 (the
AlignDistil DPO models' β). The implicit rewards β·(log π_θ − log π_ref) of both responses
are returned detached, for logging. A *reverse* DPO model (AlignDistil's second teacher) is
this same loss with chosen and rejected swapped.

:func:`sequence_logps` turns logits into the sequence log-probabilities. It does **not** shift:
``logits[:, t]`` must already be the distribution over ``labels[:, t]``. For a causal LM on
``input_ids``: ``sequence_logps(out.logits[:, :-1], input_ids[:, 1:], response_mask[:, 1:])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REGISTRY = [
    {"name": "dpo", "target": "dpo_loss",
     "summary": "DPO: -log sigmoid(beta·((pi_c - ref_c) - (pi_r - ref_r))) over sequence "
                "log-probs [B]; returns (loss, chosen rewards, rejected rewards)",
     "citation": "Rafailov et al. 2023 (DPO), arXiv:2305.18290",
     "signature": "(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, "
                  "ref_rejected_logps, *, beta=0.1) -> (loss, chosen_rewards, "
                  "rejected_rewards)"},
]
IGNORE_INDEX = -100


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t mask[b, t] · log softmax(logits[b, t])[labels[b, t]], in float32.

    Shapes: ``logits`` ``[B, T, V]`` already aligned with ``labels`` ``[B, T]`` (no shift here),
    ``mask`` ``[B, T]`` bool, the response tokens (None: ``labels != -100``) -> ``[B]``.
    Labels at masked-out positions are never read (they may be −100).
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:-1]:
        raise ValueError(f"need logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    keep = labels.ne(IGNORE_INDEX) if mask is None else mask.to(torch.bool)
    if keep.shape != labels.shape:
        raise ValueError(f"mask {tuple(keep.shape)} must be {tuple(labels.shape)}")
    safe = labels.masked_fill(~keep, 0).long().unsqueeze(-1)
    logits32 = logits.float()
    token_logp = logits32.gather(-1, safe).squeeze(-1) - torch.logsumexp(logits32, dim=-1)
    return torch.where(keep, token_logp, torch.zeros_like(token_logp)).sum(-1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss, mean over the batch, with the implicit rewards.

    Shapes: four ``[B]`` sequence log-probabilities -> ``(loss [], chosen_rewards [B],
    rejected_rewards [B])``; rewards = β·(policy − reference) log-probs, detached. The
    reference log-probs are constants (detach them if they carry a graph).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected = policy_rejected_logps.float() - ref_rejected_logps.float()
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} "
                         "log-probs differ in shape")
    # −log σ(x) = softplus(−x), stable for large |x|.
    loss = F.softplus(-beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()
