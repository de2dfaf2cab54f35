"""Cross-tokenizer alignment (spans, merges, splits, unicode), chain-rule merging, the
exact-match vocabulary map, and the hybrid ULD loss."""

import pytest
import torch

from methods.losses import get_loss
from methods.losses.uld import sorted_l1_rows, uld
from methods.losses.xtoken import (
    align_spans,
    exact_match_map,
    hybrid_rows,
    hybrid_topk_rows,
    merge_groups,
    token_texts,
    uld_hybrid,
)


def test_one_to_one_tokens_align_one_to_one():
    offsets = [(0, 3), (3, 7), (7, 8)]
    assert align_spans(offsets, offsets) == [([0], [0]), ([1], [1]), ([2], [2])]


def test_a_merge_and_a_split_make_many_to_one_groups():
    # text "the cat": student "the", " cat"; teacher "t", "he", " c", "at"
    student = [(0, 3), (3, 7)]
    teacher = [(0, 1), (1, 3), (3, 5), (5, 7)]
    assert align_spans(student, teacher) == [([0], [0, 1]), ([1], [2, 3])]
    # crossing boundaries: student "ab|cd|ef", teacher "abc|def" -> one group of all
    assert align_spans([(0, 2), (2, 4), (4, 6)], [(0, 3), (3, 6)]) == [([0, 1, 2], [0, 1])]


def test_a_character_split_into_byte_tokens_is_never_cut_inside():
    # "é!" : a byte-level tokenizer splits "é" into two tokens that both carry the
    # character's offsets (0, 1); the other side has one token for it
    student = [(0, 1), (0, 1), (1, 2)]
    teacher = [(0, 1), (1, 2)]
    assert align_spans(student, teacher) == [([0, 1], [0]), ([2], [1])]
    # a leading space outside one side's token offsets does not break the alignment
    assert align_spans([(0, 1), (1, 5)], [(0, 1), (2, 5)]) == [([0], [0]), ([1], [1])]


def test_alignment_of_two_real_tokenizations_covers_the_same_text():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "lm"))
    from conftest import word_tokenizer
    from tiny import char_tokenizer

    text = "the cat sat on the mat, today é"
    words = word_tokenizer(text.replace(",", " ,").split())
    s = words(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    t = char_tokenizer()(text, add_special_tokens=False,
                         return_offsets_mapping=True)["offset_mapping"]
    groups = align_spans(s, t)
    assert len(groups) == len(s)  # every word is one group of characters
    end = 0
    for sg, tg in groups:  # same end; the teacher's group starts where the last one ended
        assert s[sg[-1]][1] == t[tg[-1]][1] and t[tg[0]][0] == end
        end = t[tg[-1]][1]
    assert sorted(i for sg, _ in groups for i in sg) == list(range(len(s)))


def test_merge_multiplies_the_first_distribution_by_the_later_tokens():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]]))
    targets = torch.tensor([0, 1, 2])
    merged = merge_groups(logp, targets, [[0, 1], [2]]).exp()
    torch.testing.assert_close(merged, torch.tensor([[0.4, 0.24, 0.16], [0.6, 0.2, 0.2]]))
    logp.requires_grad_(True)
    merge_groups(logp, targets, [[0, 1, 2]]).sum().backward()
    assert logp.grad[1, 1] != 0 and logp.grad[2, 2] != 0 and logp.grad[1, 0] == 0


def test_exact_match_map_is_one_to_one_and_skips_specials():
    student = [None, "a", " the", "b", " the"]
    teacher = ["x", " the", None, "a", "a", ""]
    assert exact_match_map(student, teacher).tolist() == [-1, 2, -1, 1, -1, -1]


def test_space_markers_of_sentencepiece_and_byte_level_bpe_compare_equal():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    def tok(vocab, decoder):
        backend = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
        backend.decoder = decoder
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")

    spm = tok({"<unk>": 0, "▁the": 1, "the": 2, "<0xC3>": 3},
              decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                 decoders.Fuse()]))
    bpe = tok({"<unk>": 0, "Ġthe": 1, "Ã": 2}, decoders.ByteLevel())
    assert token_texts(spm) == [None, " the", "the", None]  # a lone byte is no text
    assert token_texts(bpe)[1] == " the"
    assert exact_match_map(token_texts(bpe), token_texts(spm)).tolist()[:3] == [-1, 1, -1]


def test_hybrid_hand_computed_and_its_limits():
    q = torch.tensor([[0.5, 0.3, 0.2]])  # student ids 0, 1, 2
    p = torch.tensor([[0.4, 0.1, 0.3, 0.2]])  # teacher ids 0..3
    vocab_map = torch.tensor([1, -1, -1, 0])  # teacher 0 is student 1, teacher 3 student 0
    # matched: |0.4 - 0.3| + |0.2 - 0.5| = 0.4; rest: teacher {0.1, 0.3} vs student {0.2}
    # sorted: (0.3, 0.1) vs (0.2, 0): 0.1 + 0.1
    assert hybrid_rows(q, p, vocab_map).item() == pytest.approx(0.6)
    assert hybrid_rows(q, p, None).item() == pytest.approx(sorted_l1_rows(q, p).item())
    identity = torch.arange(3)
    assert hybrid_rows(q, q.flip(-1), identity).item() == pytest.approx(0.6)  # sum |p - q|
    assert hybrid_rows(q, q, identity).item() == pytest.approx(0.0)


def test_topk_hybrid_equals_the_full_one_at_full_width():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), -1)
    p = torch.softmax(torch.randn(5, 10, generator=g, dtype=torch.float64), -1)
    vocab_map = torch.tensor([3, -1, 0, -1, -1, 6, -1, 1, -1, -1])
    full = hybrid_rows(q, p, vocab_map)
    top = torch.topk(p, 10, dim=-1)
    rest = torch.zeros(5, dtype=torch.float64)
    torch.testing.assert_close(hybrid_topk_rows(q, top.values, top.indices, rest, vocab_map,
                                                7), full)
    top3 = torch.topk(p, 3, dim=-1)
    approx = hybrid_topk_rows(q, top3.values, top3.indices, 1 - top3.values.sum(-1),
                              vocab_map, 3)
    assert (approx >= 0).all() and torch.isfinite(approx).all()


def test_registered_hybrid_loss_properties():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 4, 9, generator=g)
    assert get_loss("uld_hybrid") is uld_hybrid
    # nothing matched: ULD itself
    assert uld_hybrid(s, t).item() == pytest.approx(uld(s, t).item(), rel=1e-6)
    value = uld_hybrid(s, t, vocab_map=torch.tensor([0, 5, -1, 2, -1, -1, 1, -1, -1]))
    value.backward()
    assert value.item() >= 0 and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    same = torch.randn(1, 3, 5, generator=g)
    assert uld_hybrid(same, same, vocab_map=torch.arange(5)).item() == pytest.approx(0, abs=1e-7)
    chunked = uld_hybrid(s.detach(), t, chunk_size=3, vocab_map=torch.arange(6).repeat(2)[:9])
    plain = uld_hybrid(s.detach(), t, vocab_map=torch.arange(6).repeat(2)[:9])
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
