"""Skip-Thinking chunkers (AC, SBC), chunk-wise examples and the skippability criterion."""

from __future__ import annotations

import pytest
import torch

from methods.reasoning.skip_thinking_chunks import (
    average_chunks,
    average_sizes,
    chunk_training_examples,
    lm_chunk_cost,
    search_chunks,
    search_cuts,
    skip_chunks,
    skippable_chunks,
)

RATIONALE = [
    "Tom has 3 boxes of 12 pens.",  # step A
    "3 * 12 = 36 pens.",  # step A
    "Let us now think about the gift.",  # transition
    "He gives away 10 pens.",  # step B
    "36 - 10 = 26.",  # step B
    "So the answer is 26.",  # summary
    "#### 26",
]


def test_average_chunks_sizes_and_order():
    assert average_chunks(RATIONALE, 3) == [RATIONALE[0:3], RATIONALE[3:5], RATIONALE[5:7]]
    assert [len(c) for c in average_chunks(list(range(10)), 4)] == [3, 3, 2, 2]
    assert average_chunks(list(range(10)), chunk_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert average_chunks([1, 2], 5) == [[1], [2]]  # never an empty chunk
    assert average_chunks([], 3) == []
    for n in range(1, 30):
        for k in range(1, 8):
            chunks = average_chunks(list(range(n)), k)
            assert [x for c in chunks for x in c] == list(range(n))
            assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    with pytest.raises(ValueError):
        average_sizes(5, 2, chunk_size=2)
    with pytest.raises(ValueError):
        average_sizes(5)


# Hand-made rationale in "tokens": each token tagged with the reasoning step it belongs to.
STEPS = ["a", "a", "b", "b", "b", "b", "b", "c", "c", "c"]  # step lengths 2, 5, 3


def coherence_cost(context, chunk):
    """Lower is better: one step per chunk costs 0, each extra step in a chunk costs 1."""
    return float(len(set(chunk)) - 1)


def test_search_chunks_moves_boundaries_to_step_boundaries():
    assert average_chunks(STEPS, 3) == [STEPS[0:4], STEPS[4:7], STEPS[7:10]]  # AC mixes steps
    result = search_cuts(STEPS, 3, coherence_cost, max_shift=3)
    assert result.cuts == (2, 7)
    assert result.chunks == [["a", "a"], ["b"] * 5, ["c"] * 3]
    assert result.initial_cost == 1.0 and result.cost == 0.0 and result.moves >= 1
    assert search_chunks(STEPS, 3, coherence_cost, max_shift=3) == result.chunks


def test_search_chunks_never_worse_than_average_and_respects_sizes():
    units = list("aaabbbbbbbccddddddde")
    result = search_cuts(units, 4, coherence_cost, min_size=2, max_size=8)
    assert result.cost <= result.initial_cost
    assert all(2 <= len(c) <= 8 for c in result.chunks)
    assert [u for c in result.chunks for u in c] == units
    # a cost that is already minimal at AC: no move
    flat = search_cuts(units, 4, lambda ctx, ch: 0.0)
    assert flat.chunks == average_chunks(units, 4) and flat.moves == 0
    with pytest.raises(ValueError):
        search_cuts(units, 4, coherence_cost, max_size=4)  # 4 chunks of <= 4 cannot hold 20


def test_search_chunks_passes_context_and_memoizes():
    seen = []

    def cost(context, chunk):
        seen.append((len(context), len(chunk)))
        assert list(context) + list(chunk) == STEPS[: len(context) + len(chunk)]
        return coherence_cost(context, chunk)

    result = search_cuts(STEPS, 3, cost, max_shift=3)
    assert len(seen) == len(set(seen)) == result.evaluations


def test_search_on_sentences_groups_a_step():
    step = {0: "A", 1: "A", 2: "T", 3: "B", 4: "B", 5: "S", 6: "S"}  # summary + answer together
    units = list(range(len(RATIONALE)))
    chunks = search_chunks(units, 3, lambda ctx, ch: float(len({step[i] for i in ch}) - 1),
                           max_shift=2)
    assert [u for c in chunks for u in c] == units
    assert all(len({step[i] for i in c}) <= 2 for c in chunks)


class _BigramLM(torch.nn.Module):
    """Logits depend only on the previous token: next = previous + 1 is very likely."""

    def __init__(self, vocab: int = 12) -> None:
        super().__init__()
        table = torch.full((vocab, vocab), -4.0)
        for i in range(vocab):
            table[i, (i + 1) % vocab] = 4.0
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_lm_chunk_cost_is_mean_nll_given_prompt_and_context():
    model = _BigramLM()
    cost = lm_chunk_cost(model, prompt_ids=[0])
    logp = torch.log_softmax(model.table.detach(), -1)
    # chunk [3, 4] after prompt [0] and context [1, 2]: predicted from 2 and 3
    expected = -(logp[2, 3] + logp[3, 4]) / 2
    assert cost([1, 2], [3, 4]) == pytest.approx(float(expected), rel=1e-5)
    assert cost([1, 2], [3, 4]) < cost([1, 2], [5, 9])  # the predictable chunk is cheaper
    units = [1, 2, 3, 7, 8, 9, 4, 5]  # runs 1-3, 7-9, 4-5: jumps are costly
    result = search_cuts(units, 3, cost, max_shift=2)
    assert result.cost <= result.initial_cost


def test_chunk_training_examples_one_chunk_per_example():
    chunks = average_chunks(RATIONALE, 3)
    examples = chunk_training_examples("Q?", chunks)
    assert [e.index for e in examples] == [0, 1, 2] and all(e.n_chunks == 3 for e in examples)
    assert examples[0].context == [] and examples[0].target == chunks[0]
    assert examples[2].context == chunks[0] + chunks[1] and examples[2].target == chunks[2]
    assert all(e.question == "Q?" for e in examples)


def _stub_student(needed: set[str]):
    """A stub model: answers 26 iff every sentence in ``needed`` is in its context."""
    calls = []

    def answer(question: str, kept: list[list[str]]) -> str:
        calls.append(kept)
        text = [s for chunk in kept for s in chunk]
        return "The answer is 26.\n#### 26" if needed <= set(text) else "#### 36"

    return answer, calls


def test_skippable_chunks_on_stub_model():
    chunks = [[s] for s in RATIONALE]  # one sentence per chunk
    fn, calls = _stub_student({"3 * 12 = 36 pens.", "36 - 10 = 26."})
    skippable = skippable_chunks(fn, "How many pens are left?", chunks, "26")
    # middle chunks only; the ones whose removal keeps the answer right
    assert skippable == [2, 3, 5]
    assert skip_chunks(chunks, skippable) == [[RATIONALE[0]], [RATIONALE[1]], [RATIONALE[4]],
                                              [RATIONALE[6]]]
    assert len(calls) == 1 + (len(chunks) - 2)  # full rationale once, then each candidate
    # the accepted removals accumulate: the last call already lacks chunks 2, 3 and 5
    assert [RATIONALE[2]] not in calls[-1] and [RATIONALE[3]] not in calls[-1]


def test_skippable_cumulative_vs_independent():
    # chunks 1 and 2 are redundant copies of one fact: either may go, not both
    chunks = [["q"], ["fact"], ["fact"], ["#### 5"]]

    def fn(question, kept):
        return "#### 5" if ["fact"] in kept else "#### 0"

    assert skippable_chunks(fn, "Q", chunks, "5") == [1]
    assert skippable_chunks(fn, "Q", chunks, "5", cumulative=False) == [1, 2]


def test_nothing_skippable_when_student_is_wrong_or_chunks_few():
    chunks = [[s] for s in RATIONALE]
    assert skippable_chunks(lambda q, k: "#### 36", "Q", chunks, "26") == []
    assert skippable_chunks(lambda q, k: "#### 26", "Q", chunks[:2], "26") == []
    assert skippable_chunks(lambda q, k: "#### 26", "Q", chunks, "26") == [1, 2, 3, 4, 5]
    custom = skippable_chunks(lambda q, k: "twenty-six", "Q", chunks, "26",
                              is_correct=lambda gen, gold: gen == "twenty-six")
    assert custom == [1, 2, 3, 4, 5]
