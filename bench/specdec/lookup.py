"""Prompt lookup decoding (PLD): a training-free draft that copies from the context.

Saxena 2023 (github apoorvumang/prompt-lookup-decoding), the ``pld`` row of Spec-Bench
(Xia et al. 2024, arXiv:2401.07851) and transformers' ``prompt_lookup_num_tokens``: the
draft is what followed the *first* earlier occurrence of the context's last n-gram,
trying n = ``max_ngram`` down to ``min_ngram``, as transformers'
``PromptLookupCandidateGenerator`` does; up to ``k`` tokens are proposed, none when no
n-gram recurs (the pass is then a plain decoding step).
Summaries, RAG answers and multi-turn replies copy from their prompt, which is where this
pays.

Verification is the engine's: greedy output is token-exact with plain decoding. For
speculative sampling the draft distribution of each proposed token is a point mass, so the
rejection rule accepts it with probability p(token) and otherwise resamples from p
without it: lossless too. No trees (a lookup proposes one chain).
"""

from __future__ import annotations

import torch

from bench.specdec.drafts import Proposal
from bench.specdec.sampling import is_greedy
from bench.specdec.tree import DraftTree, TreeConfig


def lookup_continuation(context: list[int], k: int, *, max_ngram: int = 3,
                        min_ngram: int = 1) -> list[int]:
    """Up to ``k`` tokens that followed the first earlier occurrence of the context's last
    n-gram, for n from ``max_ngram`` down to ``min_ngram``; [] when none recurs."""
    if k < 1 or min_ngram < 1 or max_ngram < min_ngram:
        raise ValueError("lookup needs k >= 1 and 1 <= min_ngram <= max_ngram")
    length = len(context)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        tail = context[length - n:]
        for start in range(length - n):  # windows that end before the tail itself
            if context[start:start + n] == tail:
                follow = context[start + n:start + n + k]
                if follow:
                    return follow
    return []


class PromptLookupDraft:
    """The :class:`bench.specdec.drafts.Draft` of prompt lookup decoding (stateless)."""

    needs_hidden = False

    def __init__(self, vocab_size: int, *, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if max_ngram < min_ngram or min_ngram < 1:
            raise ValueError("prompt lookup needs 1 <= min_ngram <= max_ngram")
        self.vocab_size, self.max_ngram, self.min_ngram = vocab_size, max_ngram, min_ngram

    def reset(self) -> None:
        """Nothing to forget: every proposal is read off the context."""

    def propose(self, context: list[int], k: int, *, temperature: float,
                generator: torch.Generator | None = None,
                target_hidden: torch.Tensor | None = None) -> Proposal:
        tokens = lookup_continuation(context, k, max_ngram=self.max_ngram,
                                     min_ngram=self.min_ngram)
        if is_greedy(temperature) or not tokens:
            return Proposal(tokens, None)
        point_masses = torch.zeros(len(tokens), self.vocab_size)
        point_masses[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
        return Proposal(tokens, point_masses)

    def propose_tree(self, context: list[int], config: TreeConfig, *,
                     target_hidden: torch.Tensor | None = None) -> DraftTree:
        raise NotImplementedError("prompt lookup proposes one chain; use --set tree=none")
