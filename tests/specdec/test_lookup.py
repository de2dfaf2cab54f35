"""Prompt lookup decoding: the lookup rule, losslessness, and transformers' own PLD and
assisted generation as references."""

import pytest
import torch
from conftest import tiny_llama

from bench.specdec import LMDraft, autoregressive, speculative
from bench.specdec.lookup import PromptLookupDraft, lookup_continuation
from bench.specdec.sampling import speculative_step_distribution


@pytest.mark.parametrize("context, k, n, expect", [
    ([1, 2, 3, 4, 1, 2], 2, 3, [3, 4]),          # last bigram 1 2 recurs: what followed
    ([1, 2, 3, 1, 2, 9, 1, 2], 3, 3, [3, 1, 2]),  # the FIRST earlier occurrence, as HF
    ([5, 6, 7, 5, 6, 8, 6], 4, 3, [7, 5, 6, 8]),  # no trigram/bigram: the unigram 6
    ([1, 2, 3], 5, 3, []),                        # nothing recurs: no proposal
    ([4, 4, 4, 4], 2, 2, [4, 4]),
    ([7, 8, 7, 8], 10, 1, [7, 8]),                # n=1: 8 first occurs at position 1
])
def test_lookup_continuation(context, k, n, expect):
    assert lookup_continuation(context, k, max_ngram=n) == expect


def test_lookup_rejects_bad_sizes():
    with pytest.raises(ValueError):
        lookup_continuation([1, 2], 0)
    with pytest.raises(ValueError):
        PromptLookupDraft(10, max_ngram=0)


@pytest.fixture(scope="module")
def target():
    return tiny_llama(64, layers=3, seed=0, init=0.2, isolate_rng=True).double()


REPEATING = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 14, 15, 9, 2, 6, 5, 3, 5, 14, 15], list(range(4, 20))]


@pytest.mark.parametrize("prompt", REPEATING)
def test_pld_greedy_is_plain_decoding_and_transformers_pld(target, prompt):
    draft = PromptLookupDraft(64, max_ngram=3)
    ours = speculative(target, draft, prompt, 16, k=10, temperature=0.0)
    plain = autoregressive(target, prompt, 16).tokens
    assert ours.tokens == plain
    ids = torch.tensor([prompt])
    theirs = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                             min_new_tokens=16, do_sample=False, prompt_lookup_num_tokens=10,
                             pad_token_id=0)
    assert theirs[0, len(prompt):].tolist() == ours.tokens


def test_draft_lm_greedy_equals_transformers_assisted_generation(target):
    assistant = tiny_llama(64, layers=1, seed=1, init=0.2, isolate_rng=True).double()
    prompt = [3, 14, 15, 9, 2, 6]
    ours = speculative(target, LMDraft(assistant), prompt, 12, k=3, temperature=0.0)
    ids = torch.tensor([prompt])
    theirs = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             min_new_tokens=12, do_sample=False, assistant_model=assistant,
                             pad_token_id=0)
    assert theirs[0, len(prompt):].tolist() == ours.tokens == \
        autoregressive(target, prompt, 12).tokens


def test_a_point_mass_draft_leaves_the_target_distribution_unchanged():
    p = torch.tensor([0.1, 0.5, 0.3, 0.1], dtype=torch.float64)
    for token in range(4):
        q = torch.zeros(4, dtype=torch.float64)
        q[token] = 1.0
        torch.testing.assert_close(speculative_step_distribution(p, q), p)


def test_pld_sampling_proposals_carry_point_masses():
    draft = PromptLookupDraft(10, max_ngram=2)
    proposal = draft.propose([1, 2, 3, 1, 2], 3, temperature=1.0)
    assert proposal.tokens == [3, 1, 2]
    assert proposal.probs.shape == (3, 10) and proposal.probs[0, 3] == 1.0
    assert draft.propose([1, 2, 3], 3, temperature=1.0).tokens == []


def test_pld_with_a_tree_is_refused_before_any_work():
    from bench.contracts import resolve_recipe
    from bench.errors import UsageError
    from bench.suite import SUITES, RunOptions

    suite, recipe = SUITES.get("specbench")(), resolve_recipe("pld", "specbench")
    assert suite.resolve_settings(RunOptions(method="pld"), recipe)["k"] == 10
    assert suite.resolve_settings(RunOptions(method="pld", preset="full"), recipe)["tree"] is None
    with pytest.raises(UsageError, match="tree=6,2,2: pld proposes one chain"):
        suite.resolve_settings(RunOptions(method="pld", overrides={"tree": "6,2,2"}), recipe)
    with pytest.raises(UsageError, match="max_ngram=0"):
        suite.resolve_settings(RunOptions(method="pld", overrides={"max_ngram": 0}), recipe)
    with pytest.raises(UsageError, match="k=0"):
        suite.resolve_settings(RunOptions(method="pld", overrides={"k": 0}), recipe)
