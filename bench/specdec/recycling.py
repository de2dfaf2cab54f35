"""Token Recycling: a training-free draft made of the target's own discarded candidates.

Luo et al. 2024/2025, "Turning Trash into Treasure: Accelerating Inference of Large
Language Models with Token Recycling" (arXiv:2408.08696, ACL 2025); Spec-Bench's
"Recycling" row. Every target forward gives, at each input position, a distribution over
the next token whose top-``m`` tokens ("candidate tokens") are normally thrown away. They
are kept in an adjacency matrix ``M [V, m]``: row ``t`` holds the candidates the target
last produced after token ``t`` (a new pass overwrites the row, as in the paper). A draft
starts at the last committed token and walks the matrix:

- chain (the engine's ``k``): the first candidate, ``k`` times;
- tree (``--set tree=total,depth,top_k``, greedy only): the engine's EAGLE-2 construction
  (:func:`bench.specdec.tree.build_dynamic_tree`) over the matrix, a node's children being
  its row's first ``top_k`` candidates scored by their rank (candidate ``r`` of a row gets
  log-probability ``log(1 / (r + 1)) - log(H_m)``, a fixed prior in place of probabilities
  the matrix does not keep). The paper grows a *static* 80-node BFS template; this
  breadth-first growth by rank is the same walk with the engine's tree shape settings.

The matrix is updated from every verification pass (all its input positions: the root, the
accepted and the rejected draft tokens, which is where the "trash" comes from; the prompt's
prefill computes the last position's logits only, so it adds nothing), and it is kept
across prompts of a run (the paper's "hot start"); rows never seen propose nothing, so
early passes are plain decoding steps. The engine counts the update as draft time.

Verification is the engine's: greedy output is token-exact with plain decoding. For
speculative sampling a proposed chain's draft distribution is a point mass per token (as
for :mod:`bench.specdec.lookup`), so the rejection rule keeps the target's distribution.
"""

from __future__ import annotations

import math

import torch

from bench.specdec.drafts import Proposal
from bench.specdec.sampling import is_greedy
from bench.specdec.tree import DraftTree, TreeConfig, build_dynamic_tree


class RecyclingDraft:
    """The :class:`bench.specdec.drafts.Draft` of Token Recycling (state: the matrix)."""

    needs_hidden = False

    def __init__(self, vocab_size: int, *, candidates: int = 8) -> None:
        if vocab_size < 1 or candidates < 1:
            raise ValueError("token recycling needs a vocabulary and >= 1 candidate per token")
        self.vocab_size, self.candidates = vocab_size, candidates
        self.matrix = torch.full((vocab_size, candidates), -1, dtype=torch.long)
        harmonic = sum(1.0 / (r + 1) for r in range(candidates))
        self._rank_logprob = torch.tensor([math.log(1.0 / (r + 1) / harmonic)
                                           for r in range(candidates)])

    def reset(self) -> None:
        """Keep the matrix: candidates carry over between prompts (the paper's hot start)."""

    def observe(self, tokens: list[int], logits: torch.Tensor) -> None:
        """Row ``tokens[i]`` := the top candidates of ``logits[i]`` (``[len(tokens), V]``)."""
        if not tokens:
            return
        m = min(self.candidates, logits.shape[-1])
        top = torch.topk(logits[: len(tokens)].float(), m, dim=-1).indices.cpu()
        rows = torch.tensor(tokens, dtype=torch.long)
        self.matrix[rows, :m] = top  # a token seen twice in one pass keeps its later row

    def chain(self, last: int, k: int) -> list[int]:
        """Up to ``k`` tokens following first candidates from ``last``; stops at an unseen row."""
        out: list[int] = []
        token = last
        for _ in range(k):
            token = int(self.matrix[token, 0])
            if token < 0:
                break
            out.append(token)
        return out

    def propose(self, context: list[int], k: int, *, temperature: float,
                generator: torch.Generator | None = None,
                target_hidden: torch.Tensor | None = None) -> Proposal:
        tokens = self.chain(context[-1], k)
        if is_greedy(temperature) or not tokens:
            return Proposal(tokens, None)
        point_masses = torch.zeros(len(tokens), self.vocab_size)
        point_masses[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
        return Proposal(tokens, point_masses)

    def _row_logprobs(self, token: int) -> torch.Tensor:
        """A ``[V]`` vector: the row's candidates at their rank prior, -inf elsewhere."""
        out = torch.full((self.vocab_size,), -math.inf)
        row = self.matrix[token]
        seen = row >= 0
        out[row[seen]] = self._rank_logprob[: int(seen.sum())]
        return out

    def propose_tree(self, context: list[int], config: TreeConfig, *,
                     target_hidden: torch.Tensor | None = None) -> DraftTree:
        root = self._row_logprobs(context[-1])
        if not torch.isfinite(root).any():
            return DraftTree([], [], [], [])

        def expand(tree: DraftTree, idx: list[int]) -> torch.Tensor:
            return torch.stack([self._row_logprobs(tree.tokens[i]) for i in idx])

        tree = build_dynamic_tree(root, expand, config)
        keep = [i for i, score in enumerate(tree.scores) if math.isfinite(score)]
        # Candidates beyond a row's filled part score -inf; drop them (parents stay finite
        # whenever a child is, so the kept set is closed under parents).
        new = {old: j for j, old in enumerate(keep)}
        return DraftTree([tree.tokens[i] for i in keep],
                         [new[tree.parents[i]] if tree.parents[i] >= 0 else -1 for i in keep],
                         [tree.depths[i] for i in keep], [tree.scores[i] for i in keep])
