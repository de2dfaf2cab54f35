"""Training losses of feature-level speculative-decoding drafts (EAGLE, FSPAD), pure functions.

Notation per training position ``t`` of a target sequence: the draft reads the target's
feature ``f_t`` (its last hidden state, after the final norm, i.e. the LM head's input)
and the embedding of the next token ``x_{t+1}``; it must predict the next feature
``f_{t+1}`` and, through the target's frozen LM head ``W``, the target's next-token
distribution ``p_{t+1} = softmax(W f_{t+1})`` (the law of token ``t + 2``).

- EAGLE (Li et al. 2024, arXiv:2401.15077; official ``train/main.py``): one output vector
  ``h`` carries both losses: ``1.0 * SmoothL1(h, f_{t+1}) + 0.1 * CE(p_{t+1}, softmax(W h))``
  (``v_w`` = 1.0, ``p_w`` = 0.1). EAGLE-2 (arXiv:2406.16858) trains the same head.
- FSPAD (Gui et al. 2024, arXiv:2408.15562; official ``train/main_fspad.py``, "partial
  alignment distillation"): the draft layer outputs two halves; the *feature* half ``r``
  (fed back at the next draft step) gets the SmoothL1 term, the *logit* half ``g`` gets
  the cross-entropy term through the LM head: ``1.0 * SmoothL1(r, f_{t+1}) + 0.1 *
  CE(p_{t+1}, softmax(W g))``.

Reductions follow the official code: SmoothL1 (beta 1) is averaged over the hidden size
and then over the valid positions; the soft cross-entropy ``-sum_v p log q`` is summed over
the vocabulary and averaged over the valid positions. The official code divides by
``mask.sum() + 1e-5``; here an empty mask gives an exact 0 (with a gradient path), as
every loss in the library. The LM head is applied only to the valid rows, optionally
``chunk_size`` rows at a time with recomputation in backward, so the ``[rows, vocab]``
float32 probabilities of target and draft never coexist for all rows (value and gradients
equal the plain path).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

REGISTRY = [
    {"name": "eagle_draft", "target": "eagle_loss",
     "summary": "EAGLE draft loss: 1.0·SmoothL1(h, f_next) + 0.1·CE(softmax(W f_next), "
                "softmax(W h)) on one draft output h; features [B, T, H], LM head W [V, H]",
     "citation": "Li et al. 2024 (EAGLE), arXiv:2401.15077",
     "signature": "(draft_hidden, target_next, head_weight, mask=None, *, feature_weight=1.0, "
                  "token_weight=0.1, head_bias=None, chunk_size=None) -> DraftLoss"},
    {"name": "fspad_draft", "target": "fspad_loss",
     "summary": "FSPAD partial alignment: 1.0·SmoothL1(feature half, f_next) + 0.1·CE("
                "softmax(W f_next), softmax(W logit half))",
     "citation": "Gui et al. 2024 (FSPAD), arXiv:2408.15562",
     "signature": "(logit_hidden, feature_hidden, target_next, head_weight, mask=None, *, "
                  "feature_weight=1.0, token_weight=0.1, head_bias=None, chunk_size=None) "
                  "-> DraftLoss"},
]


class DraftLoss(NamedTuple):
    """The weighted total (differentiable) and its two unweighted parts."""

    loss: torch.Tensor
    feature: torch.Tensor
    token: torch.Tensor


def _valid(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape[:-1], dtype=torch.bool)
    if mask.shape != shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must be {tuple(shape[:-1])} "
                         "(the features without their hidden dimension)")
    return mask.to(torch.bool)


def feature_smooth_l1(pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor | None = None, *, beta: float = 1.0) -> torch.Tensor:
    """SmoothL1 between predicted and target features, mean over hidden, mean over rows.

    Shapes: ``pred``, ``target`` ``[B, T, H]`` (or ``[N, H]``), ``mask`` ``[B, T]`` bool
    (None: all rows) -> scalar float32. Empty mask: 0 with a gradient path.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    keep = _valid(mask, pred.shape).to(pred.device)
    if not bool(keep.any()):
        return pred.float().sum() * 0.0
    per_row = F.smooth_l1_loss(pred[keep].float(), target[keep].float(), reduction="none",
                               beta=beta).mean(-1)
    return per_row.mean()


def _ce_rows(draft: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor | None) -> torch.Tensor:
    """Sum over rows of ``-sum_v softmax(W t) log softmax(W d)`` (float32)."""
    p = torch.softmax(F.linear(target.float(), weight.float(),
                               None if bias is None else bias.float()), dim=-1)
    logq = torch.log_softmax(F.linear(draft.float(), weight.float(),
                                      None if bias is None else bias.float()), dim=-1)
    return -(p * logq).sum()


def soft_token_ce(draft_hidden: torch.Tensor, target_hidden: torch.Tensor,
                  head_weight: torch.Tensor, mask: torch.Tensor | None = None, *,
                  head_bias: torch.Tensor | None = None,
                  chunk_size: int | None = None) -> torch.Tensor:
    """Soft cross-entropy of the draft's token distribution against the target's.

    ``p = softmax(W target_hidden)`` (no gradient), ``q = softmax(W draft_hidden)``; the
    loss is ``-sum_v p log q`` averaged over the valid rows. Shapes: hidden ``[B, T, H]``
    (or ``[N, H]``), ``head_weight`` ``[V, H]`` (frozen; no gradient flows into it unless
    it requires one), ``mask`` ``[B, T]`` -> scalar float32. ``chunk_size``: rows per
    chunk, recomputed in backward (equal value and gradients).
    """
    if draft_hidden.shape != target_hidden.shape:
        raise ValueError(f"draft {tuple(draft_hidden.shape)} and target "
                         f"{tuple(target_hidden.shape)} hidden states differ in shape")
    keep = _valid(mask, draft_hidden.shape).to(draft_hidden.device)
    if not bool(keep.any()):
        return draft_hidden.float().sum() * 0.0
    draft, target = draft_hidden[keep], target_hidden[keep].detach()
    n = draft.shape[0]
    if chunk_size is None or chunk_size >= n:
        return _ce_rows(draft, target, head_weight, head_bias) / n
    total = draft.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk_size):
        total = total + checkpoint(_ce_rows, draft[start:start + chunk_size],
                                   target[start:start + chunk_size], head_weight, head_bias,
                                   use_reentrant=False)
    return total / n


def eagle_loss(draft_hidden: torch.Tensor, target_next: torch.Tensor,
               head_weight: torch.Tensor, mask: torch.Tensor | None = None, *,
               feature_weight: float = 1.0, token_weight: float = 0.1,
               head_bias: torch.Tensor | None = None,
               chunk_size: int | None = None) -> DraftLoss:
    """EAGLE's draft loss on one output vector.

    Shapes: ``draft_hidden`` (the draft's output at position t) and ``target_next`` (the
    target's feature ``f_{t+1}``) ``[B, T, H]``; ``head_weight`` ``[V, H]``; ``mask``
    ``[B, T]`` bool (positions with a target) -> :class:`DraftLoss` of scalars.
    """
    feature = feature_smooth_l1(draft_hidden, target_next, mask)
    token = soft_token_ce(draft_hidden, target_next, head_weight, mask, head_bias=head_bias,
                          chunk_size=chunk_size)
    return DraftLoss(feature_weight * feature + token_weight * token, feature.detach(),
                     token.detach())


def fspad_loss(logit_hidden: torch.Tensor, feature_hidden: torch.Tensor,
               target_next: torch.Tensor, head_weight: torch.Tensor,
               mask: torch.Tensor | None = None, *, feature_weight: float = 1.0,
               token_weight: float = 0.1, head_bias: torch.Tensor | None = None,
               chunk_size: int | None = None) -> DraftLoss:
    """FSPAD's partial alignment distillation: each half of the output gets one loss.

    Shapes: ``logit_hidden`` (the half read by the LM head), ``feature_hidden`` (the half
    fed back as the next feature), ``target_next`` ``[B, T, H]``; ``head_weight``
    ``[V, H]``; ``mask`` ``[B, T]`` -> :class:`DraftLoss` of scalars.
    """
    feature = feature_smooth_l1(feature_hidden, target_next, mask)
    token = soft_token_ce(logit_hidden, target_next, head_weight, mask, head_bias=head_bias,
                          chunk_size=chunk_size)
    return DraftLoss(feature_weight * feature + token_weight * token, feature.detach(),
                     token.detach())
