"""Token Recycling: the adjacency-matrix rule, losslessness on chains and trees, and what
the engine shows the draft."""

import pytest
import torch
from conftest import tiny_llama

from bench.specdec import autoregressive, speculative
from bench.specdec.recycling import RecyclingDraft
from bench.specdec.tree import TreeConfig


def test_observe_overwrites_rows_with_the_top_candidates_in_rank_order():
    draft = RecyclingDraft(6, candidates=3)
    logits = torch.tensor([[0.0, 5.0, 4.0, 3.0, 0.0, 0.0],
                           [9.0, 0.0, 0.0, 0.0, 8.0, 7.0]])
    draft.observe([2, 4], logits)
    assert draft.matrix[2].tolist() == [1, 2, 3]
    assert draft.matrix[4].tolist() == [0, 4, 5]
    assert draft.matrix[0].tolist() == [-1, -1, -1]  # never seen
    draft.observe([2], logits[1:])  # a later pass replaces the row
    assert draft.matrix[2].tolist() == [0, 4, 5]


def test_chain_follows_first_candidates_and_stops_at_an_unseen_row():
    draft = RecyclingDraft(8, candidates=2)
    draft.matrix[1] = torch.tensor([2, 7])
    draft.matrix[2] = torch.tensor([3, 7])
    assert draft.chain(1, 5) == [2, 3]  # row 3 was never filled
    assert draft.propose([0, 1], 1, temperature=0.0).tokens == [2]
    assert draft.propose([0, 5], 4, temperature=0.0).tokens == []
    sampled = draft.propose([0, 1], 2, temperature=1.0)
    assert sampled.tokens == [2, 3] and sampled.probs.shape == (2, 8)
    assert sampled.probs[0, 2] == 1.0 and sampled.probs[1, 3] == 1.0


def test_tree_holds_only_filled_candidates_and_is_closed_under_parents():
    draft = RecyclingDraft(10, candidates=3)
    draft.matrix[1] = torch.tensor([2, 3, -1])
    draft.matrix[2] = torch.tensor([4, 5, 6])
    tree = draft.propose_tree([0, 1], TreeConfig(total_tokens=20, depth=2, top_k=3))
    assert tree.tokens[:2] == [2, 3] and tree.parents[:2] == [-1, -1]
    assert sorted(tree.tokens[2:]) == [4, 5, 6] and set(tree.parents[2:]) == {0}
    assert all(p < i for i, p in enumerate(tree.parents))
    assert draft.propose_tree([0, 9], TreeConfig(10, 2, 3)).tokens == []


@pytest.fixture(scope="module")
def target():
    return tiny_llama(64, layers=3, seed=0, init=0.2, isolate_rng=True).double()


PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 14, 15, 9, 2, 6, 5, 3, 5, 14, 15]]


@pytest.mark.parametrize("tree", [None, TreeConfig(12, 3, 3)])
def test_greedy_is_plain_decoding_and_the_matrix_carries_over(target, tree):
    draft = RecyclingDraft(64)
    accepted = []
    for prompt in PROMPTS * 2:  # the second round starts from a warm matrix
        ours = speculative(target, draft, prompt, 24, k=4, temperature=0.0, tree=tree)
        assert ours.tokens == autoregressive(target, prompt, 24).tokens
        accepted.append(sum(ours.stats.accepted_per_pass))
    assert (draft.matrix[:, 0] >= 0).sum() > 5
    assert sum(accepted[2:]) > 0  # recycled candidates get accepted
    assert ours.stats.draft_time > 0  # the matrix update counts as draft time


def test_sampling_with_a_chain_runs_and_tree_sampling_is_refused(target):
    draft = RecyclingDraft(64)
    out = speculative(target, draft, PROMPTS[0], 12, k=3, temperature=1.0,
                      generator=torch.Generator().manual_seed(0))
    assert len(out.tokens) == 12
    with pytest.raises(NotImplementedError):
        speculative(target, draft, PROMPTS[0], 4, temperature=1.0, tree=TreeConfig(6, 2, 2))


def test_recipe_is_registered_partial_and_checks_its_setting():
    from bench.contracts import resolve_recipe
    from bench.errors import UsageError
    from bench.suite import SUITES, RunOptions

    suite, recipe = SUITES.get("specbench")(), resolve_recipe("recycling", "specbench")
    assert suite.resolve_settings(RunOptions(method="recycling", overrides={"candidates": 4}),
                                  recipe)["candidates"] == 4
    with pytest.raises(UsageError, match="candidates=0"):
        suite.resolve_settings(RunOptions(method="recycling", overrides={"candidates": 0}),
                               recipe)
