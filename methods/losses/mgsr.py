"""MGSR: Multi-Granularity Semantic Revision for LLM distillation (Liu et al., 2024,
arXiv:2407.10068; ICLR 2025 submission, ACL 2026). Overall objective, unit weights:

    L = L_SFT + L_DAC-KL + L_span

Sources: the abstract, and the ICLR-2025 OpenReview reviews, which quote the equations. The
method section itself could not be read offline, so parts marked [ours] are interpretations.

- SCRG, Eq. (3): the student generates; j = argmax over positions i with y_i^s ≠ y_i^t of
  the token-wise KL between teacher and student; y_j^s is replaced by the teacher's token
  and the sequence is re-generated from j+1. One correction per sample (Table 4c: 1/3/5
  corrections give diminishing returns). :func:`scrg_correction` finds (j, y_j^t); the
  truncation and re-generation are the caller's job. [ours] y_i^t = teacher argmax at i;
  KL(p_t ‖ p_s); a row with no candidate returns position -1 (the paper leaves it open).
- DAC-KL, Eq. (6): a learnable MLP sub-network f_sub predicts lower/upper quantile bounds
  (l, u) that clip the teacher's distribution to its high-density region; the KL is taken
  against the clipped teacher; f_sub is trained end to end by this loss. [ours], as the
  MLP's input, width and the exact clipping rule are not available:
  * Quantiles live on the teacher's cumulative mass in descending-probability order: class
    v with mass above it C_v is kept iff its interval [C_v, C_v + p_v] meets [l, u] (u cuts
    the tail like top-p; l drops head classes only when the distribution is flat). The kept
    teacher mass is renormalised; the student is not (``clip_student=True`` renormalises
    it on the same support, giving 0 at student == teacher).
  * :class:`DACClipNet` reads only sorted-probability statistics (top-n sorted probabilities
    of teacher and student, normalised entropies), so the same net serves the full vocabulary
    and a top-k support. Bounds: l ∈ [0, 0.25], u ∈ [0.75, 1), initialised near (0, 0.99).
  * The hard mask is used in forward; its gradient into the bounds comes from a sigmoid
    relaxation (straight-through). Trained only on this loss, the net can shrink the region;
    the bound ranges keep ≥ ~half of the teacher mass (the reviews raise this collapse risk).
  * Without a net, fixed bounds (lower=0, upper=0.95) are used; (0, 1) equals ``fkl``.
- Span loss, Eq. (10): within spans from an off-the-shelf chunker (noun/verb/prepositional
  phrases; NLTK, citing Kiss & Strunk 2006), the "correlation" of adjacent tokens is the
  Hadamard product p_i ⊙ p_{i+1} ∈ R^V, matched between teacher and student. [ours] no
  chunker offline: spans are given as ids, or derived as fixed windows of ``span_len``
  (default 4) masked-in tokens, or word spans from token strings (:func:`word_span_ids`).
  Distance: squared L2 summed over the vocabulary (``"l2"``), mean over adjacent in-span
  pairs; ``"kl"`` compares the normalised products. O(pairs·V) memory, never V×V.
- No temperature or loss weights beyond the unit sum are reported: T = 1, weights 1.
  Library conventions: logits [B, S, V], mask [B, S] bool, mean over masked-in tokens (pairs
  for the span loss), empty → 0 with a warning, no T² factor.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.losses.token_core import kl_rows, token_loss

REGISTRY = [
    {"name": "mgsr_dac_kl", "target": "dac_kl",
     "summary": "MGSR DAC-KL: KL(teacher clipped to its high-density quantiles ‖ student); "
                "bounds from a DACClipNet, or fixed (lower 0, upper 0.95)",
     "citation": "Liu et al. 2024 (MGSR), arXiv:2407.10068"},
    {"name": "mgsr_span", "target": "span_correlation_loss",
     "summary": "MGSR span loss: match Hadamard products of adjacent-token distributions "
                "within spans (fixed windows of 4 unless span ids are given)",
     "citation": "Liu et al. 2024 (MGSR), arXiv:2407.10068"},
]
_FLOOR = torch.finfo(torch.float32).min / 4  # same finite floor as methods.losses.token_core


class DACClipNet(nn.Module):
    """f_sub of DAC-KL: predicts per-token quantile bounds (lower, upper).

    Input features (detached, [N, 2·top_n + 2]): the top-``top_n`` sorted probabilities of
    teacher and student (zero-padded when the support has fewer entries) and both entropies
    divided by log(support size). MLP: Linear → GELU → Linear(2). Output:
    lower = max_lower·σ(a) ∈ [0, max_lower], upper = min_upper + (1 − min_upper)·σ(b).
    Independent of the vocabulary size (full vocab or a top-k support).
    """

    def __init__(self, top_n: int = 16, hidden: int = 64, max_lower: float = 0.25,
                 min_upper: float = 0.75) -> None:
        super().__init__()
        if not 0.0 <= max_lower < min_upper <= 1.0:
            raise ValueError(f"need 0 <= max_lower < min_upper <= 1, got {max_lower}, {min_upper}")
        self.top_n, self.max_lower, self.min_upper = top_n, max_lower, min_upper
        self.mlp = nn.Sequential(nn.Linear(2 * top_n + 2, hidden), nn.GELU(), nn.Linear(hidden, 2))
        last = self.mlp[-1]
        nn.init.normal_(last.weight, std=0.01)
        with torch.no_grad():  # start near lower ≈ 0, upper ≈ 0.99: almost plain forward KL
            last.bias.copy_(torch.tensor([-4.0, 3.0]))

    def _sorted_stats(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.top_n, probs.shape[-1])
        top = probs.topk(k, dim=-1).values
        if k < self.top_n:
            top = F.pad(top, (0, self.top_n - k))
        log_v = math.log(probs.shape[-1]) if probs.shape[-1] > 1 else 1.0
        return top, torch.special.entr(probs).sum(-1, keepdim=True) / log_v

    def forward(self, teacher_probs: torch.Tensor,
                student_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``teacher_probs``, ``student_probs``: [N, V]. Returns (lower [N], upper [N]), float32."""
        t_top, t_ent = self._sorted_stats(teacher_probs.detach().float())
        s_top, s_ent = self._sorted_stats(student_probs.detach().float())
        feats = torch.cat([t_top, s_top, t_ent, s_ent], dim=-1)
        raw = self.mlp(feats.to(self.mlp[0].weight.dtype)).float()
        lower = self.max_lower * torch.sigmoid(raw[:, 0])
        upper = self.min_upper + (1.0 - self.min_upper) * torch.sigmoid(raw[:, 1])
        return lower, upper


def quantile_keep_weights(teacher_probs: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                          soft_width: float | None = None) -> torch.Tensor:
    """[N, V] weights of the classes kept by the quantile clip (1 kept, 0 dropped).

    Class v, with mass C_v above it in descending order, is kept iff C_v < upper and
    C_v + p_v > lower (upper ≥ 1 / lower ≤ 0 disable that side). With ``soft_width`` the
    value stays the hard mask but gradients reach ``lower``/``upper`` [N] through
    σ((upper − C)/w)·σ((C + p − lower)/w) (straight-through). The teacher is not differentiated.
    """
    p = teacher_probs.detach()
    vals, idx = p.sort(dim=-1, descending=True, stable=True)
    above = torch.empty_like(p).scatter_(-1, idx, vals.cumsum(-1) - vals)
    lo, up = lower.unsqueeze(-1), upper.unsqueeze(-1)
    hard = ((above < up) | (up >= 1.0)) & ((above + p > lo) | (lo <= 0.0))
    hard = hard.to(p.dtype)
    if soft_width is None:
        return hard
    soft = torch.sigmoid((up - above) / soft_width) * torch.sigmoid((above + p - lo) / soft_width)
    return hard + (soft - soft.detach())


def dac_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
           clip_net: DACClipNet | None = None, *, mask: torch.Tensor | None = None,
           temperature: float = 1.0, chunk_size: int | None = None, lower: float = 0.0,
           upper: float = 0.95, clip_student: bool = False,
           soft_width: float = 0.05) -> torch.Tensor:
    """DAC-KL: KL(p̃_t ‖ q), p̃_t the teacher clipped to quantiles [l, u] and renormalised.

    Shapes: logits [B, S, V] (V may be a top-k support), mask [B, S] bool; returns the mean
    over masked-in tokens (0-dim, float32). Bounds come from ``clip_net`` (gradients flow into
    its parameters) or, without one, the fixed ``lower``/``upper``. With Z = Σ_kept p_t:
    value = Σ_kept (p_t/Z)·(log p_t − log q) − log Z, ≥ 0, and −log Z at q = p_t unless
    ``clip_student`` (then q is renormalised on the kept support too and the value is 0).
    """
    if clip_net is None and not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got {lower}, {upper}")

    def rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p_t = t.exp()
        if clip_net is None:
            lo, up = torch.full_like(t[:, 0], lower), torch.full_like(t[:, 0], upper)
            w = quantile_keep_weights(p_t, lo, up)
        else:
            lo, up = clip_net(p_t, s.exp())
            w = quantile_keep_weights(p_t, lo, up, soft_width)
        kept = w * p_t
        z = kept.sum(-1)
        value = (kept * (t - s)).sum(-1) / z - z.log()
        if clip_student:
            value = value + (w * s.exp()).sum(-1).clamp_min(1e-30).log()
        return value.clamp_min(0.0)

    return token_loss(rows, student_logits, teacher_logits, mask=mask,
                      temperature=temperature, chunk_size=chunk_size,
                      closure_has_params=clip_net is not None)


def fixed_window_span_ids(mask: torch.Tensor, span_len: int) -> torch.Tensor:
    """[B, S] long span ids: consecutive windows of ``span_len`` masked-in tokens per row;
    -1 where ``mask`` [B, S] is false."""
    if span_len < 2:
        raise ValueError(f"span_len must be >= 2 (a span needs adjacent tokens), got {span_len}")
    m = mask.to(torch.bool)
    rank = m.long().cumsum(dim=1) - 1
    return torch.where(m, rank // span_len, torch.full_like(rank, -1))


_WORD_START = (" ", "Ġ", "▁", "Ċ", "\n", "\t")


def word_span_ids(tokens: Sequence[Sequence[str]], seq_len: int | None = None) -> torch.Tensor:
    """[B, seq_len] span ids from token strings: one span per word. A token opens a new word
    when it starts with a space marker (' ', 'Ġ', '▁', 'Ċ', newline, tab) or follows a
    punctuation token; tokens without letters or digits (punctuation) and padding get -1."""
    length = seq_len if seq_len is not None else max((len(row) for row in tokens), default=0)
    out = torch.full((len(tokens), length), -1, dtype=torch.long)
    for b, row in enumerate(tokens):
        word, prev_punct = -1, True
        for i, tok in enumerate(row[:length]):
            if not any(ch.isalnum() for ch in tok):
                prev_punct = True
                continue
            if prev_punct or tok.startswith(_WORD_START):
                word += 1
            out[b, i], prev_punct = word, False
    return out


def _span_ids(spans_or_mask: torch.Tensor | None, mask: torch.Tensor | None,
              shape: torch.Size, span_len: int, device: torch.device) -> torch.Tensor:
    for name, tensor in (("spans_or_mask", spans_or_mask), ("mask", mask)):
        if tensor is not None and tensor.shape != shape:
            raise ValueError(f"{name} {tuple(tensor.shape)} must be {tuple(shape)}")
    keep = torch.ones(shape, dtype=torch.bool, device=device) if mask is None else mask.bool()
    if spans_or_mask is None or spans_or_mask.dtype == torch.bool:
        if spans_or_mask is not None:
            keep = keep & spans_or_mask
        return fixed_window_span_ids(keep, span_len)
    ids = spans_or_mask.long()
    return torch.where(keep, ids, torch.full_like(ids, -1))


def _pair_rows(s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
               temperature: float, distance: str) -> torch.Tensor:
    """Sum over pairs of the distance between log(p_a ⊙ p_b) of teacher and student [P, V]."""
    def log_hadamard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        la = torch.log_softmax(a.float() / temperature, dim=-1).clamp_min(_FLOOR)
        lb = torch.log_softmax(b.float() / temperature, dim=-1).clamp_min(_FLOOR)
        return (la + lb).clamp_min(_FLOOR)

    ls, lt = log_hadamard(s_a, s_b), log_hadamard(t_a, t_b)
    if distance == "l2":
        return (lt.exp() - ls.exp()).square().sum()
    ls = ls - ls.logsumexp(-1, keepdim=True)
    lt = lt - lt.logsumexp(-1, keepdim=True)
    return kl_rows(lt.clamp_min(_FLOOR), ls.clamp_min(_FLOOR)).sum()


def span_correlation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                          spans_or_mask: torch.Tensor | None = None, *,
                          mask: torch.Tensor | None = None, temperature: float = 1.0,
                          span_len: int = 4, distance: str = "l2",
                          chunk_size: int | None = None) -> torch.Tensor:
    """MGSR span-level correlation consistency (Eq. 10, distance [ours]).

    For adjacent tokens i, i+1 of one span, r = p_i ⊙ p_{i+1} ∈ R^V (Hadamard product);
    ``"l2"``: Σ_v (r^t_v − r^s_v)²; ``"kl"``: KL between r^t/Σr^t and r^s/Σr^s. Mean over all
    in-span adjacent pairs of the batch. ``spans_or_mask`` [B, S]: long span ids (-1 = none;
    adjacent tokens with equal ids share a span), or a bool mask (fixed windows of
    ``span_len`` masked-in tokens), or None (windows over ``mask``). Memory O(pairs·V);
    ``chunk_size`` pairs at a time with recomputation in backward. Returns a 0-dim float32.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError(f"logits must both be [batch, seq, vocab], got {tuple(student_logits.shape)}"
                         f" and {tuple(teacher_logits.shape)}")
    if temperature <= 0 or distance not in ("l2", "kl"):
        raise ValueError(f"need temperature > 0 and distance 'l2' or 'kl', got "
                         f"{temperature}, {distance!r}")
    ids = _span_ids(spans_or_mask, mask, student_logits.shape[:-1], span_len,
                    student_logits.device)
    pair = (ids[:, :-1] == ids[:, 1:]) & (ids[:, :-1] >= 0)
    b, i = pair.nonzero(as_tuple=True)
    n_pairs = b.numel()
    if n_pairs == 0:
        warnings.warn("span loss over an empty mask (no adjacent in-span pairs): returning 0",
                      stacklevel=2)
        return student_logits.float().sum() * 0.0
    args = (student_logits[b, i], student_logits[b, i + 1],
            teacher_logits[b, i], teacher_logits[b, i + 1])
    if chunk_size is None or chunk_size >= n_pairs:
        total = _pair_rows(*args, temperature, distance)
    else:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        total = student_logits.new_zeros((), dtype=torch.float32)
        for chunk in zip(*(torch.split(a, chunk_size) for a in args), strict=True):
            total = total + checkpoint(_pair_rows, *chunk, temperature, distance,
                                       use_reentrant=False)
    return total / n_pairs


@torch.no_grad()
def scrg_correction(student_tokens: torch.Tensor, student_logits: torch.Tensor,
                    teacher_logits: torch.Tensor, mask: torch.Tensor | None = None, *,
                    temperature: float = 1.0, require_disagreement: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCRG error detection (Eq. 3): per sequence, the masked-in position of maximal
    KL(p_t ‖ p_s) among those where the student's token differs from the teacher's argmax.

    ``student_tokens`` [B, S] long, aligned with the logits [B, S, V]: logits[:, i] is the
    distribution that produced student_tokens[:, i] (shift HF logits by one first); ``mask``
    [B, S] bool (the generated response). Returns ``positions`` [B] long, ``teacher_tokens``
    [B] long (teacher argmax there) and ``divergence`` [B] float32; a row with no candidate
    gets -1, -1, 0. The caller keeps student_tokens[b, :j], appends teacher_tokens[b] and
    lets the student re-generate the rest (once per sample in the paper).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError("logits must both be [batch, seq, vocab] of one shape")
    if student_tokens.shape != student_logits.shape[:-1]:
        raise ValueError(f"student_tokens {tuple(student_tokens.shape)} must be "
                         f"{tuple(student_logits.shape[:-1])}")
    keep = torch.ones_like(student_tokens, dtype=torch.bool) if mask is None else mask.bool()
    teacher_argmax = teacher_logits.argmax(-1)
    divergence = torch.stack([  # one sequence at a time: [S, V] float32 at most
        kl_rows(torch.log_softmax(teacher_logits[b].float() / temperature, -1).clamp_min(_FLOOR),
                torch.log_softmax(student_logits[b].float() / temperature, -1).clamp_min(_FLOOR))
        for b in range(student_logits.shape[0])])
    candidate = keep & (student_tokens != teacher_argmax) if require_disagreement else keep
    best, pos = torch.where(candidate, divergence, float("-inf")).max(dim=-1)
    found = candidate.any(dim=-1)
    none = torch.full_like(pos, -1)
    tokens = teacher_argmax.gather(1, pos.unsqueeze(1)).squeeze(1)
    return (torch.where(found, pos, none), torch.where(found, tokens, none),
            torch.where(found, best, torch.zeros_like(best)))


def mgsr_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
              labels: torch.Tensor | None = None, mask: torch.Tensor | None = None,
              clip_net: DACClipNet | None = None, spans: torch.Tensor | None = None,
              temperature: float = 1.0, sft_weight: float = 1.0, dac_weight: float = 1.0,
              span_weight: float = 1.0, span_len: int = 4, span_distance: str = "l2",
              chunk_size: int | None = None, ignore_index: int = -100,
              sft: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = w_sft·L_SFT + w_dac·L_DAC-KL + w_span·L_span (paper: all weights 1).

    ``labels`` [B, S] long aligned with the logits (ignore_index skipped; None → no SFT
    term); ``sft`` instead passes an SFT term computed elsewhere (0-dim): the recipe's,
    taken on the full vocabulary of the sequence before SCRG revised it, while the logits
    here are the top-k support of the revised one. ``mask`` [B, S] selects the distilled
    tokens; ``spans`` as in :func:`span_correlation_loss`. Returns (total 0-dim, detached
    parts {"sft", "dac_kl", "span"}). On SCRG-revised sequences, run
    :func:`scrg_correction` and re-generate first.
    """
    if sft is not None and labels is not None:
        raise ValueError("mgsr_loss: pass labels or a precomputed sft term, not both")
    zero = student_logits.float().sum() * 0.0
    sft = zero if sft is None else sft
    if labels is not None:
        valid = labels != ignore_index
        if valid.any():
            sft = F.cross_entropy(student_logits[valid].float(), labels[valid])
    dac = dac_kl(student_logits, teacher_logits, clip_net, mask=mask, temperature=temperature,
                 chunk_size=chunk_size)
    span = span_correlation_loss(student_logits, teacher_logits, spans, mask=mask,
                                 temperature=temperature, span_len=span_len,
                                 distance=span_distance, chunk_size=chunk_size)
    total = sft_weight * sft + dac_weight * dac + span_weight * span
    return total, {"sft": sft.detach(), "dac_kl": dac.detach(), "span": span.detach()}
