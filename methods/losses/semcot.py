"""SemCoT losses: the sentence encoder's InfoNCE and the generator's cosine + CE objective.

He et al. 2025, "SemCoT: Accelerating Chain-of-Thought Reasoning through
Semantically-Aligned Implicit Tokens", arXiv:2510.24940 (NeurIPS 2025); official code
github.com/YinhanHe123/SemCoT (``training/train_semcot.py``), which these functions follow:

- :func:`semcot_infonce` trains the sentence encoder ("customized sentence transformer")
  on pairs (ground-truth reasoning, condensed reasoning): the cosine-similarity matrix of
  the two batches of embeddings, and for every ground-truth row the cross-entropy of its
  own condensed version against all condensed rows of the batch (in-batch negatives). The
  official ``contrastive_loss`` uses the raw cosines as logits (temperature 1); the
  ``temperature`` argument keeps that default.
- :func:`semcot_generator_loss` trains the implicit-reasoning generator:
  ``alpha * (1 - cos(ST(implicit), ST(ground truth))) + (1 - alpha) * CE(answer)``, where
  the CE is the frozen teacher's answer cross-entropy given the question, the implicit
  states (as input embeddings) and the answer prompt. ``alpha`` is the paper's balance
  (official best value for GSM8K with the Llama-2 configuration: 0.25).

Both are pure tensor functions (scalar out); the recipe is :mod:`methods.reasoning.semcot`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REGISTRY = [
    {"name": "semcot_infonce", "target": "semcot_infonce",
     "summary": "SemCoT sentence-encoder InfoNCE: ground-truth vs condensed reasoning "
                "embeddings, in-batch negatives, cosine logits",
     "citation": "He et al. 2025 (SemCoT), arXiv:2510.24940",
     "signature": "(reasoning_emb [B, D], condensed_emb [B, D], *, temperature=1.0)"},
    {"name": "semcot_generator", "target": "semcot_generator_loss",
     "summary": "SemCoT generator objective: alpha*(1 - cos(ST(implicit), ST(gt))) + "
                "(1-alpha)*answer CE through the frozen teacher",
     "citation": "He et al. 2025 (SemCoT), arXiv:2510.24940",
     "signature": "(implicit_emb [B, D], reasoning_emb [B, D], answer_logits [B, T, V], "
                  "answer_ids [B, T], *, mask=None, alpha=0.25)"},
]


def semcot_infonce(reasoning_emb: torch.Tensor, condensed_emb: torch.Tensor, *,
                   temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE between two batches of sentence embeddings (row i of each is a positive pair).

    ``reasoning_emb`` and ``condensed_emb``: ``[B, D]``. Logits ``S_ij = cos(r_i, c_j) / T``,
    ``[B, B]``; loss ``= -mean_i log softmax_j(S_i·)[i]``. With ``B = 1`` the loss is 0 (no
    negatives). Returns a scalar.
    """
    if reasoning_emb.shape != condensed_emb.shape or reasoning_emb.dim() != 2:
        raise ValueError(f"need two [B, D] tensors of one shape, got "
                         f"{tuple(reasoning_emb.shape)} and {tuple(condensed_emb.shape)}")
    r = F.normalize(reasoning_emb.float(), dim=-1)
    c = F.normalize(condensed_emb.float(), dim=-1)
    logits = r @ c.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def semcot_generator_loss(implicit_emb: torch.Tensor, reasoning_emb: torch.Tensor,
                          answer_logits: torch.Tensor, answer_ids: torch.Tensor, *,
                          mask: torch.Tensor | None = None, alpha: float = 0.25
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * L_reason + (1 - alpha) * L_ans`` and its parts.

    - ``implicit_emb`` ``[B, D]``: the sentence encoder applied to the K implicit states;
    - ``reasoning_emb`` ``[B, D]``: the sentence encoder applied to the teacher's hidden
      states of the ground-truth reasoning (a fixed target: detached here);
    - ``answer_logits`` ``[B, T, V]``: the frozen teacher's logits at the positions that
      predict the answer tokens ``answer_ids`` ``[B, T]`` (already shifted: row t predicts
      ``answer_ids[:, t]``); ``mask`` ``[B, T]`` bool marks real (non-padding) answer tokens.

    ``L_reason = mean_b (1 - cos(implicit_b, reasoning_b))``; ``L_ans`` = token-mean
    cross-entropy over the masked answer tokens (0 when the mask is empty). Returns
    ``(loss, {"reason": L_reason, "answer": L_ans})`` (scalars).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    sim = F.cosine_similarity(implicit_emb.float(), reasoning_emb.detach().float(), dim=-1)
    reason = (1.0 - sim).mean()
    if mask is None:
        mask = torch.ones_like(answer_ids, dtype=torch.bool)
    per_token = F.cross_entropy(answer_logits.float().flatten(0, 1), answer_ids.flatten(),
                                reduction="none").view_as(answer_ids)
    n = mask.sum()
    answer = (per_token * mask).sum() / n.clamp(min=1)
    loss = alpha * reason + (1.0 - alpha) * answer
    return loss, {"reason": reason, "answer": answer}
