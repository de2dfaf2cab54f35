"""Feature-level draft heads (EAGLE, FSPAD) and the engine-facing :class:`FeatureDraft`.

Both heads read, per position ``t``, the target's feature ``f_t`` (last hidden state after
the final norm, the LM head's input) and the embedding ``e_{t+1}`` of the next token, and
run **one** Llama-style decoder layer over the fused sequence (causal attention with RoPE
at position ``t``; the layer has no input norm, as the official ``index == 0`` layer):

- :class:`EagleHead` (Li et al. 2024, EAGLE, arXiv:2401.15077; EAGLE-2,
  arXiv:2406.16858; official ``model/cnets.py``): ``x = W_fc [e_{t+1}; f_t]`` (with bias),
  then the layer; its output ``h`` is both the next feature and, through the target's LM
  head, the next-token logits.
- :class:`FSPADHead` (Gui et al. 2024, FSPAD, arXiv:2408.15562; official
  ``model/cnets_fspad.py``): *feature sampling* ``x = W_fc [e; f]``, ``z = x +
  W_down(SiLU(W_gate e) * W_up RMSNorm(x))`` (the next token's embedding gates the fused
  feature, SwiGLU style), then the layer whose MLP projects to ``2H`` with the residual
  duplicated, ``[h; h] + MLP(norm(h))``. The first half is the *logit* half (read by the
  LM head), the second the *feature* half, fed back as ``f`` at the next draft step
  (official ``topK_genrate``: ``head(out_hidden)``, ``input_hidden = out_regress``).

The target's embedding and LM head are frozen and reused, never copied into the head's
parameters (so checkpoints hold only the head). :class:`FeatureDraft` implements the
engine's ``Draft`` protocol (:mod:`bench.specdec.drafts`): it keeps a KV cache over the
(feature, next token) pairs of committed positions computed from *true* target features,
drops its own rolled-out pairs on the next call, and drafts chains or EAGLE-2 trees.

``draft_vocab`` (optional, off by default): the draft's logits are restricted to a subset
of token ids (e.g. the most frequent tokens of the training responses, FR-Spec, Zhao et
al. 2025, arXiv:2502.14856), which makes the LM head of a draft step proportionally
cheaper; lossless either way (verification uses the target's full distribution).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from bench.core import hf
from bench.specdec.sampling import is_greedy, probs, sample
from bench.specdec.tree import DraftTree, TreeConfig, build_dynamic_tree


@dataclass(frozen=True)
class HeadConfig:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    fc_bias: bool = True  # EAGLE's Model(bias=True)
    # The target's RoPE scaling (e.g. Llama-3.x's ``llama3`` type), None for plain RoPE;
    # heads saved before this field existed load as plain RoPE, which they were.
    rope_scaling: dict[str, Any] | None = None

    @classmethod
    def from_target(cls, config: Any) -> HeadConfig:
        """The head's shape from the target's config (one layer of the target's size)."""
        heads = int(config.num_attention_heads)
        rope = hf.rope_parameters(config)
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        return cls(hidden_size=int(config.hidden_size), num_heads=heads,
                   num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
                   head_dim=int(getattr(config, "head_dim", None)
                                or config.hidden_size // heads),
                   intermediate_size=int(config.intermediate_size),
                   rms_eps=float(getattr(config, "rms_norm_eps", 1e-6)),
                   rope_theta=float(rope["rope_theta"]),
                   rope_scaling=scaling if scaling.get("rope_type") != "default" else None)

    def rope(self) -> dict[str, Any]:
        """The RoPE parameters in :func:`bench.core.hf.rope_parameters` form."""
        return {"rope_type": "default", **(self.rope_scaling or {}),
                "rope_theta": self.rope_theta}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Llama's own norm (float32 inside, cast back): the head is one layer of its target.
RMSNorm = LlamaRMSNorm


KV = tuple[torch.Tensor, torch.Tensor]


class DraftLayer(nn.Module):
    """One Llama decoder layer without input norm; ``out_mult`` 2 is FSPAD's doubled MLP."""

    def __init__(self, cfg: HeadConfig, out_mult: int = 1) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.cfg, self.out_mult = cfg, out_mult
        self.q_proj = nn.Linear(h, cfg.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_eps)
        self.gate_proj = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, h * out_mult, bias=False)
        # transformers' rotary embedding with the target's scaling (no weights: inv_freq
        # is a non-persistent buffer, so saved heads load unchanged).
        self.rotary = hf.rotary_embedding(cfg.rope(), hidden_size=h, num_heads=cfg.num_heads,
                                          head_dim=d)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor | None = None, past: KV | None = None,
                ) -> tuple[torch.Tensor, KV]:
        """``x`` ``[B, T, H]`` at ``positions`` ``[B, T]``; ``mask``: additive ``[B|1, 1, T,
        S]`` over past + new keys, or None for causal attention without a past. Returns the
        output ``[B, T, out_mult * H]`` and the keys/values including ``past``."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        cos, sin = self.rotary(q, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        rep = cfg.num_heads // cfg.num_kv_heads
        kk, vv = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None and past is None:
            attn = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
        else:
            attn = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        h = x + self.o_proj(attn.transpose(1, 2).reshape(b, t, -1))
        normed = self.post_attention_layernorm(h)
        mlp = self.down_proj(F.silu(self.gate_proj(normed)) * self.up_proj(normed))
        residual = h if self.out_mult == 1 else torch.cat([h] * self.out_mult, dim=-1)
        return residual + mlp, (k, v)


class EagleHead(nn.Module):
    """EAGLE's draft head: ``fc([e; f])`` then one decoder layer; one output vector."""

    kind = "eagle"

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=cfg.fc_bias)
        self.layer = DraftLayer(cfg, out_mult=self._out_mult())

    @staticmethod
    def _out_mult() -> int:
        return 1

    def fuse(self, feature: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([embed, feature], dim=-1))

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit hidden, next feature) from the layer output."""
        return out, out

    def forward(self, feature: torch.Tensor, embed: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor | None = None, past: KV | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, KV]:
        """``feature`` ``f_t`` and ``embed`` ``e_{t+1}`` ``[B, T, H]`` -> (logit hidden
        ``[B, T, H]``, next feature ``[B, T, H]``, keys/values)."""
        out, kv = self.layer(self.fuse(feature, embed), positions, mask, past)
        logit_hidden, next_feature = self.split(out)
        return logit_hidden, next_feature, kv


class FSPADHead(EagleHead):
    """FSPAD: feature sampling (embedding-gated SwiGLU on the fused feature) and a layer
    whose output has a logit half and a feature half (partial alignment distillation)."""

    kind = "fspad"

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__(cfg)
        h, m = cfg.hidden_size, cfg.intermediate_size
        self.fs_norm = RMSNorm(h, cfg.rms_eps)
        self.fs_gate = nn.Linear(h, m, bias=False)
        self.fs_up = nn.Linear(h, m, bias=False)
        self.fs_down = nn.Linear(m, h, bias=False)

    @staticmethod
    def _out_mult() -> int:
        return 2

    def fuse(self, feature: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.cat([embed, feature], dim=-1))
        return x + self.fs_down(F.silu(self.fs_gate(embed)) * self.fs_up(self.fs_norm(x)))

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cfg.hidden_size
        return out[..., :h], out[..., h:]


HEADS: dict[str, type[EagleHead]] = {"eagle": EagleHead, "fspad": FSPADHead}


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


class FeatureDraft:
    """A feature-level head as the engine's ``Draft`` (``needs_hidden = True``).

    ``embed_weight`` ``[V, H]`` and ``head_weight`` ``[V, H]`` (+ ``head_bias``) are the
    target's, frozen. Pair ``t`` = (``f_t``, ``e_{t+1}``) sits at position ``t`` (the
    official code drops the first token and numbers the pairs from 0), so for a context of
    ``n`` tokens the committed pairs are ``t = 0..n-2`` and the root's pair is ``n - 2``.
    A one-token context has no target feature: its pair uses a zero feature.
    """

    needs_hidden = True

    def __init__(self, head: EagleHead, embed_weight: torch.Tensor, head_weight: torch.Tensor,
                 head_bias: torch.Tensor | None = None,
                 vocab_subset: torch.Tensor | None = None) -> None:
        self.head = head.eval()
        self.embed_weight = embed_weight.detach()
        self.subset = None if vocab_subset is None else vocab_subset.long()
        w = head_weight.detach()
        self.head_weight = w if self.subset is None else w[self.subset].contiguous()
        b = None if head_bias is None else head_bias.detach()
        self.head_bias = b if b is None or self.subset is None else b[self.subset]
        self.vocab = int(head_weight.shape[0])
        self.kv: KV | None = None
        self.pair_tokens: list[int] = []  # next-token ids of the true pairs in ``kv``

    def reset(self) -> None:
        self.kv, self.pair_tokens = None, []

    def cast(self, dtype: torch.dtype) -> None:
        """Decode in ``dtype`` (the suite's decoding dtype): the head and the copies of the
        target's embedding and LM head it holds (the target's own cast does not reach
        them: they are detached tensors of the weights as they were)."""
        self.head.to(dtype)
        self.embed_weight = self.embed_weight.to(dtype)
        self.head_weight = self.head_weight.to(dtype)
        self.head_bias = None if self.head_bias is None else self.head_bias.to(dtype)
        self.reset()

    # -- pieces ----------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return self.head.fc.weight.dtype

    def _device(self) -> torch.device:
        return self.head.fc.weight.device

    def logprobs(self, logit_hidden: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Full-vocabulary draft log-probabilities ``[..., V]`` (-inf outside a subset)."""
        # A half-precision LM head multiplies in its own dtype (a float32 copy of a bf16
        # head per draft step would cost more than the step); otherwise float32 as ever.
        # The softmax runs in float32 either way.
        w = self.head_weight
        dtype = w.dtype if w.dtype in (torch.bfloat16, torch.float16) else torch.float32
        logits = F.linear(logit_hidden.to(dtype), w.to(dtype),
                          None if self.head_bias is None else self.head_bias.to(dtype)
                          ).float()
        t = temperature if temperature > 0 else 1.0
        logp = torch.log_softmax(logits / t, dim=-1)
        if self.subset is None:
            return logp
        full = logp.new_full((*logp.shape[:-1], self.vocab), float("-inf"))
        full[..., self.subset.to(full.device)] = logp
        return full

    def _run(self, features: torch.Tensor, tokens: list[int], positions: list[int],
             mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        device, dtype = self._device(), self._dtype()
        ids = torch.tensor(tokens, dtype=torch.long, device=device)
        embed = F.embedding(ids, self.embed_weight).to(dtype)[None]
        pos = torch.tensor([positions], dtype=torch.long, device=device)
        logit_h, feat, self.kv = self.head(features.to(device, dtype)[None], embed, pos, mask,
                                           self.kv)
        return logit_h[0], feat[0]

    def _crop(self, length: int) -> None:
        if length <= 0:
            self.kv = None
        elif self.kv is not None:
            self.kv = (self.kv[0][:, :, :length], self.kv[1][:, :, :length])

    def _sync(self, context: list[int], target_hidden: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache the true pairs of ``context``; (logit hidden, feature) at the root pair."""
        n_pairs = max(1, len(context) - 1)
        fallback = len(context) < 2 or target_hidden is None or target_hidden.shape[0] == 0
        if fallback:
            features = self.embed_weight.new_zeros(1, self.embed_weight.shape[1])
            tokens = context[-1:]
            self.pair_tokens = []
        else:
            if target_hidden.shape[0] != len(context) - 1:
                raise ValueError(f"target_hidden has {target_hidden.shape[0]} rows for a "
                                 f"context of {len(context)} tokens (need len - 1)")
            features, tokens = target_hidden, context[1:]
        keep = 0
        for a, b in zip(self.pair_tokens, tokens[: n_pairs - 1], strict=False):
            if a != b:
                break
            keep += 1
        self._crop(keep)
        new_positions = list(range(keep, n_pairs))
        mask = None
        if keep > 0:
            q = n_pairs - keep
            allowed = torch.ones(q, n_pairs, dtype=torch.bool, device=self._device())
            allowed[:, keep:] = torch.ones(q, q, dtype=torch.bool).tril().to(self._device())
            mask = _additive(allowed, self._dtype())
        logit_h, feat = self._run(features[keep:n_pairs], tokens[keep:n_pairs], new_positions,
                                  mask)
        # a zero-feature pair is never reused: -1 matches no token
        self.pair_tokens = [-1] if fallback else list(tokens[:n_pairs])
        return logit_h[-1], feat[-1]

    # -- the Draft protocol ------------------------------------------------------------
    @torch.no_grad()
    def propose(self, context: list[int], k: int, *, temperature: float,
                generator: torch.Generator | None = None,
                target_hidden: torch.Tensor | None = None) -> Any:
        from bench.specdec.drafts import Proposal

        logit_h, feat = self._sync(context, target_hidden)
        position = len(self.pair_tokens)
        tokens: list[int] = []
        dists: list[torch.Tensor] = []
        for i in range(k):
            if is_greedy(temperature):
                token = int(self.logprobs(logit_h).argmax().item())
            else:
                q = probs(self.logprobs(logit_h, temperature), 1.0)  # already tempered
                token = sample(q, generator)
                dists.append(q)
            tokens.append(token)
            if i + 1 < k:
                # one query over the whole cache: no mask needed
                out_h, out_f = self._run(feat[None], [token], [position + i], None)
                logit_h, feat = out_h[-1], out_f[-1]
        self._crop(len(self.pair_tokens))
        return Proposal(tokens, torch.stack(dists) if dists else None)

    @torch.no_grad()
    def propose_tree(self, context: list[int], config: TreeConfig, *,
                     target_hidden: torch.Tensor | None = None) -> DraftTree:
        logit_h, root_feat = self._sync(context, target_hidden)
        prefix = len(self.pair_tokens)  # pairs in the cache; the root pair is prefix - 1
        fed: dict[int, int] = {}  # tree node -> its slot after the prefix in the cache
        node_feat: dict[int, torch.Tensor] = {}

        def expand(tree: DraftTree, idx: list[int]) -> torch.Tensor:
            m, n_fed = len(idx), len(fed)
            allowed = torch.zeros(m, prefix + n_fed + m, dtype=torch.bool)
            allowed[:, :prefix] = True
            for row, node in enumerate(idx):
                allowed[row, prefix + n_fed + row] = True
                for anc in tree.ancestors(node)[1:]:
                    allowed[row, prefix + fed[anc]] = True
            feats = torch.stack([node_feat[tree.parents[i]] if tree.parents[i] >= 0
                                 else root_feat for i in idx])
            positions = [prefix - 1 + tree.depths[i] for i in idx]
            out_h, out_f = self._run(feats, [tree.tokens[i] for i in idx], positions,
                                     _additive(allowed.to(self._device()), self._dtype()))
            for row, node in enumerate(idx):
                fed[node] = n_fed + row
                node_feat[node] = out_f[row]
            return self.logprobs(out_h)

        try:
            return build_dynamic_tree(self.logprobs(logit_h), expand, config)
        finally:
            self._crop(prefix)


def head_param_count(head: nn.Module) -> int:
    return sum(p.numel() for p in head.parameters())


def uniform_feature_noise(features: torch.Tensor, lengths: torch.Tensor, std: float = 0.2,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """EAGLE's training noise on the input features (official ``AddUniformNoise``):
    ``(U[0, 1) - 0.5) * std * 512 / L`` per element, ``L`` the sequence's length (the
    official transform divides by ``tensor.shape[1]`` of a ``[1, L, H]`` sample).

    Shapes: ``features`` ``[B, T, H]``, ``lengths`` ``[B]`` -> ``[B, T, H]``.
    """
    if std <= 0:
        return features
    u = torch.rand(features.shape, generator=generator, dtype=torch.float32)
    scale = (std * 512.0 / lengths.clamp_min(1).float())[:, None, None]
    return features + ((u - 0.5) * scale).to(features.device, features.dtype)
