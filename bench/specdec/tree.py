"""EAGLE-2 dynamic draft trees: construction, tree attention masks, greedy acceptance.

Construction (Li et al. 2024, EAGLE-2, arXiv:2406.16858, section 4; official
``topK_genrate``): the root is the last committed token (not yet seen by the target).
Its ``top_k`` draft tokens form depth 1 and are all expanded; then, ``depth`` times, each
node of the current frontier proposes its ``top_k`` children, every child is scored by its
*cumulative* draft log-probability (sum along the path, the "value" of EAGLE-2), all
``frontier x top_k`` children become candidates, and the ``top_k`` best of them are the
next frontier. Finally the ``total_tokens`` best candidates over the whole tree are kept.
A child never scores above its parent (log-probabilities are <= 0) and ties are broken by
depth, so the kept set is closed under taking parents. Convention, as in the official
code: ``depth`` counts expansion rounds after the first level, so a tree has up to
``depth + 1`` draft levels (official defaults 60 / 5 / 10: up to 6 accepted draft tokens
plus the bonus per pass).

Verification (EAGLE, Medusa, SpecInfer): the target runs once over ``[root, nodes...]``
with position ids ``prefix + depth`` and a mask letting each node attend to the prefix,
the root, its ancestors and itself. Greedy acceptance walks from the root: while the
target's argmax at the current node equals one of its children's tokens, move to that
child; the target's argmax at the last node is the correction/bonus token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TreeConfig:
    """EAGLE-2 dynamic tree shape (official defaults: 60 tokens, depth 5, top-k 10)."""

    total_tokens: int = 60
    depth: int = 5
    top_k: int = 10

    def __post_init__(self) -> None:
        for name in ("total_tokens", "depth", "top_k"):
            value = getattr(self, name)
            least = 0 if name == "depth" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


@dataclass
class DraftTree:
    """Draft nodes in an order where every parent precedes its children.

    ``parents[i]`` is the index of node ``i``'s parent, or -1 for a child of the root;
    ``depths[i]`` is 1 for the root's children; ``scores[i]`` the cumulative draft
    log-probability of the path to node ``i``.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestors(self, i: int) -> list[int]:
        """Node ``i`` and its ancestors (excluding the root), nearest first."""
        out = []
        while i >= 0:
            out.append(i)
            i = self.parents[i]
        return out

    def truncated(self, max_depth: int) -> DraftTree:
        """The nodes at depth <= ``max_depth`` (still parent-closed), re-indexed."""
        keep = [i for i, d in enumerate(self.depths) if d <= max_depth]
        new = {old: j for j, old in enumerate(keep)}
        return DraftTree([self.tokens[i] for i in keep],
                         [new[self.parents[i]] if self.parents[i] >= 0 else -1 for i in keep],
                         [self.depths[i] for i in keep], [self.scores[i] for i in keep])

    def verify_mask(self) -> torch.Tensor:
        """Bool ``[n + 1, n + 1]`` over ``[root, nodes...]``: who may attend to whom."""
        n = len(self)
        allowed = torch.zeros(n + 1, n + 1, dtype=torch.bool)
        allowed[:, 0] = True
        for i in range(n):
            allowed[i + 1, [a + 1 for a in self.ancestors(i)]] = True
        return allowed


Expand = Callable[[DraftTree, list[int]], torch.Tensor]


def build_dynamic_tree(root_logprobs: torch.Tensor, expand: Expand, config: TreeConfig,
                       ) -> DraftTree:
    """Grow an EAGLE-2 dynamic tree (see the module docstring).

    ``root_logprobs``: the draft's next-token log-probabilities after the root ``[V]``.
    ``expand(tree, idx)`` returns the draft's next-token log-probabilities ``[len(idx), V]``
    after each node ``idx`` of the tree built so far (nodes in ``idx`` are children of
    nodes expanded earlier, so a draft with a KV cache can feed them level by level).
    """
    k = min(config.top_k, root_logprobs.shape[-1])
    top = torch.topk(root_logprobs.float(), k)
    tree = DraftTree(top.indices.tolist(), [-1] * k, [1] * k, top.values.tolist())
    frontier = list(range(k))
    for _ in range(config.depth):
        logprobs = expand(tree, frontier).float()
        top = torch.topk(logprobs, k, dim=-1)
        base = torch.tensor([tree.scores[i] for i in frontier])[:, None]
        cum = (base + top.values.cpu()).reshape(-1)
        tokens = top.indices.reshape(-1).tolist()
        start = len(tree)
        for j, (token, score) in enumerate(zip(tokens, cum.tolist(), strict=True)):
            parent = frontier[j // k]
            tree.tokens.append(token)
            tree.parents.append(parent)
            tree.depths.append(tree.depths[parent] + 1)
            tree.scores.append(score)
        best = torch.topk(cum, min(k, cum.numel())).indices.tolist()
        frontier = sorted(start + j for j in best)
    order = sorted(range(len(tree)), key=lambda i: (-tree.scores[i], tree.depths[i], i))
    keep = sorted(order[: config.total_tokens], key=lambda i: (tree.depths[i], i))
    new = {old: j for j, old in enumerate(keep)}
    if any(tree.parents[i] >= 0 and tree.parents[i] not in new for i in keep):
        raise AssertionError("draft tree selection is not closed under parents")
    return DraftTree([tree.tokens[i] for i in keep],
                     [new[tree.parents[i]] if tree.parents[i] >= 0 else -1 for i in keep],
                     [tree.depths[i] for i in keep], [tree.scores[i] for i in keep])


def greedy_accept(tree: DraftTree, target_argmax: list[int]) -> tuple[list[int], int]:
    """Longest path whose tokens the target would have chosen greedily.

    ``target_argmax[j]`` is the target's argmax after input position ``j`` of
    ``[root, nodes...]``. Returns (accepted node indices root to leaf, the
    correction/bonus token emitted after them).
    """
    children: dict[int, dict[int, int]] = {}
    for i, parent in enumerate(tree.parents):
        children.setdefault(parent, {})[tree.tokens[i]] = i
    path: list[int] = []
    node = -1
    while True:
        choice = target_argmax[node + 1]
        nxt = children.get(node, {}).get(choice)
        if nxt is None:
            return path, choice
        path.append(nxt)
        node = nxt
