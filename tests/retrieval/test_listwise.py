"""Permutation parsing: exact on valid output, always a permutation, repairs counted."""

from hypothesis import given, settings
from hypothesis import strategies as st

from methods.retrieval.listwise import (
    format_permutation,
    parse_permutation,
    target_text,
    window_messages,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 25).flatmap(lambda n: st.tuples(st.just(n), st.permutations(range(n)))))
def test_valid_permutations_round_trip(case):
    n, order = case
    parsed = parse_permutation(format_permutation(order), n)
    assert parsed.order == list(order)
    assert parsed.repairs.as_dict() == {"windows": 1, "out_of_range": 0, "duplicates": 0,
                                        "missing": 0, "unparsable": 0}


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20), st.text(max_size=200),
       st.lists(st.integers(0, 30), max_size=40))
def test_any_text_gives_a_permutation(n, noise, ids):
    text = noise + " > ".join(f"[{i}]" for i in ids)
    parsed = parse_permutation(text, n)
    assert sorted(parsed.order) == list(range(n))
    r = parsed.repairs
    if "[" not in noise and "</think>" not in noise:
        valid = [i - 1 for i in ids if 1 <= i <= n]
        assert r.out_of_range == len(ids) - len(valid)
        assert r.duplicates == len(valid) - len(set(valid))
        assert r.missing == (n - len(set(valid)) if ids else 0)
        assert r.unparsable == (0 if ids else 1)


def test_repairs_are_deterministic_and_counted():
    parsed = parse_permutation("[3] > [3] > [9] > [1]", 4)
    assert parsed.order == [2, 0, 1, 3]  # duplicates dropped, missing appended in order
    assert parsed.repairs.duplicates == 1
    assert parsed.repairs.out_of_range == 1
    assert parsed.repairs.missing == 2
    empty = parse_permutation("I cannot rank these.", 3)
    assert empty.order == [0, 1, 2] and empty.repairs.unparsable == 1


def test_rationale_numbers_are_ignored():
    text = target_text([1, 0, 2], rationale="Step [3] mentions 1999; passage [2] answers.")
    assert text.startswith("<think>") and text.endswith("[2] > [1] > [3]")
    assert parse_permutation(text, 3).order == [1, 0, 2]


def test_window_prompt_numbers_passages():
    messages = window_messages("who wrote hamlet", ["a", "b"])
    assert "[1] a\n[2] b" in messages[-1]["content"]
    assert messages[0]["role"] == "system"
