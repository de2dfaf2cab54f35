"""Draft models: the ``Draft`` protocol and ``LMDraft`` (a small causal LM, same tokenizer).

The protocol is what the engine (:mod:`bench.specdec.engine`) calls once per
verification pass. A draft is stateful (it may keep a KV cache between passes) but never
trusts its state: every call gets the full committed ``context`` (prompt + generated
tokens; the last one, the "root", has not been through the target yet), and the draft
reconciles its cache with it (longest common prefix, crop, feed the rest). Rollback after
a rejection therefore needs no separate call.

Feature-level drafts (EAGLE, Li et al. 2024, arXiv:2401.15077; EAGLE-2,
arXiv:2406.16858; FSPAD) predict from the target's features: set ``needs_hidden = True``
and the engine runs the target with ``output_hidden_states`` and passes
``target_hidden`` = the target's last-layer hidden states (after the final norm, i.e. the
LM head's input) for ``context[:-1]``, ``[len(context) - 1, H]``: row ``t`` is the
feature of token ``t``, whose successor token ``t + 1`` is known, so an EAGLE head can form
its (feature_t, embedding_{t+1}) pairs for every committed position and then roll out from
the root. Such a head holds a reference to the target and reuses its embedding and LM head
(frozen); the engine does not care how. Its ``propose``/``propose_tree`` must return the
same structures as :class:`LMDraft`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from bench.core import hf
from bench.specdec.sampling import is_greedy, probs, sample
from bench.specdec.tree import DraftTree, TreeConfig, build_dynamic_tree


@dataclass
class Proposal:
    """A chain of ``k`` draft tokens; ``probs[i]`` is the draft distribution ``q`` that
    token ``i`` was drawn from (after temperature), ``[k, V]``, or None when greedy."""

    tokens: list[int]
    probs: torch.Tensor | None = None


@runtime_checkable
class Draft(Protocol):
    """What the speculative engine needs from a draft.

    ``needs_hidden``: whether ``target_hidden`` must be supplied (feature-level drafts).
    ``reset()``: forget all state (called once per prompt).
    ``propose(context, k, ...)``: a chain of ``k`` tokens continuing ``context``, drawn
    greedily (temperature <= 0) or from the draft's tempered distribution, which it
    returns for the rejection rule (Leviathan et al. 2023, arXiv:2211.17192).
    ``propose_tree(context, config, ...)``: an EAGLE-2 dynamic tree rooted at
    ``context[-1]`` (see :func:`bench.specdec.tree.build_dynamic_tree`, which a draft
    only has to feed with next-token log-probabilities).
    Optional ``observe(tokens, logits)``: called after every verification pass with the
    pass's input tokens and the target's logits there (Token Recycling learns from them);
    its time counts as draft time.
    Optional ``cast(dtype)``: put the draft's floating-point weights in ``dtype`` (the
    suite's decoding ``dtype``, the target's); drafts without weights need none.
    """

    needs_hidden: bool

    def reset(self) -> None: ...

    def propose(self, context: list[int], k: int, *, temperature: float,
                generator: torch.Generator | None = None,
                target_hidden: torch.Tensor | None = None) -> Proposal: ...

    def propose_tree(self, context: list[int], config: TreeConfig, *,
                     target_hidden: torch.Tensor | None = None) -> DraftTree: ...


def _common_prefix(a: list[int], b: list[int]) -> int:
    m = min(len(a), len(b))
    if a[:m] == b[:m]:
        return m
    for i in range(m):
        if a[i] != b[i]:
            return i
    return m


class LMDraft:
    """A small causal LM as the draft (Leviathan et al. 2023; Chen et al. 2023), with its
    own KV cache. It must share the target's tokenizer (same token ids; the vocabulary
    dimension must match the target's logits for speculative sampling).

    Batch size 1. Tree drafting feeds each tree level into the draft's cache with a tree
    attention mask (one draft forward per level) and crops the nodes away afterwards.
    """

    needs_hidden = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: Any = None
        self.ids: list[int] = []  # the tokens whose keys/values ``cache`` holds

    def reset(self) -> None:
        self.cache, self.ids = None, []

    def cast(self, dtype: torch.dtype) -> None:
        """Decode in ``dtype`` (the target's), forgetting the cache of the old dtype."""
        self.model.to(dtype)
        self.reset()

    def _sync(self, context: list[int]) -> torch.Tensor:
        """Make the cache hold exactly ``context``; return the logits after it ``[V]``."""
        if not context:
            raise ValueError("the draft needs a non-empty context")
        if self.cache is None:
            self.cache, self.ids = hf.new_cache(self.model), []
        keep = min(_common_prefix(self.ids, context), len(context) - 1)
        hf.crop_to(self.cache, keep)
        logits, _ = hf.forward(self.model, context[keep:], self.cache, last_only=True)
        self.ids = list(context)
        return logits[-1]

    @torch.no_grad()
    def propose(self, context: list[int], k: int, *, temperature: float,
                generator: torch.Generator | None = None,
                target_hidden: torch.Tensor | None = None) -> Proposal:
        logits = self._sync(context)
        tokens: list[int] = []
        dists: list[torch.Tensor] = []
        for i in range(k):
            if is_greedy(temperature):
                token = int(logits.argmax().item())
            else:
                q = probs(logits, temperature)
                token = sample(q, generator)
                dists.append(q)
            tokens.append(token)
            if i + 1 < k:
                logits, _ = hf.forward(self.model, [token], self.cache)
                logits = logits[-1]
                self.ids.append(token)
        return Proposal(tokens, torch.stack(dists) if dists else None)

    @torch.no_grad()
    def propose_tree(self, context: list[int], config: TreeConfig, *,
                     target_hidden: torch.Tensor | None = None) -> DraftTree:
        hf.check_tree_attention(self.model)
        root = self._sync(context)
        prefix = len(context)
        fed: dict[int, int] = {}  # tree node -> its slot after the prefix in the cache
        dtype, device = hf.model_dtype(self.model), hf.model_device(self.model)

        def expand(tree: DraftTree, idx: list[int]) -> torch.Tensor:
            m, n_fed = len(idx), len(fed)
            allowed = torch.zeros(m, n_fed + m, dtype=torch.bool)
            for row, node in enumerate(idx):
                allowed[row, n_fed + row] = True
                for anc in tree.ancestors(node)[1:]:
                    allowed[row, fed[anc]] = True
            mask = hf.tree_attention_mask(allowed, prefix, dtype, device)
            positions = torch.tensor([prefix - 1 + tree.depths[i] for i in idx])
            logits, _ = hf.forward(self.model, [tree.tokens[i] for i in idx], self.cache,
                                   position_ids=positions, mask=mask)
            for row, node in enumerate(idx):
                fed[node] = n_fed + row
            return torch.log_softmax(logits, dim=-1)

        try:
            return build_dynamic_tree(torch.log_softmax(root, dim=-1), expand, config)
        finally:
            hf.crop_to(self.cache, prefix)
