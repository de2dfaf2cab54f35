"""Bits per byte: a hand computation on a tiny model, the prefix token, the windows, and the
training segments and splits of the ``lm`` suite's data."""

import math

import pytest
import torch
from conftest import tiny_llama, word_tokenizer
from tiny import char_tokenizer

from bench.lm.bpb import prefix_id, score_documents, summary, windows


def _hand_bits(model, ids):
    """Σ −log2 p(ids[j] | ids[:j]) for j ≥ 1, one full forward."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return -sum(logp[j - 1, ids[j]].item() for j in range(1, len(ids))) / math.log(2)


def test_bits_per_byte_equals_a_hand_computation():
    tok = char_tokenizer()
    model = tiny_llama(len(tok), init=0.5, max_positions=512)
    texts = ["the cat sat on the mat", "é!"]
    scores, seconds = score_documents(model, tok, texts, window=64, stride=32, progress=False)
    for text, score in zip(texts, scores, strict=True):
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        assert score.bytes == len(text.encode("utf-8"))  # "é" is 2 bytes
        assert score.tokens == len(text)
        assert score.bpb == pytest.approx(_hand_bits(model, ids) / score.bytes, rel=1e-5)
    metrics = summary(scores, seconds)
    assert metrics["bits_per_byte"] == pytest.approx((scores[0].bpb + scores[1].bpb) / 2)
    assert metrics["bits_per_byte_pooled"] == pytest.approx(
        (scores[0].bits + scores[1].bits) / (22 + 3))
    assert metrics["tokens_per_byte"] == pytest.approx(24 / 25)


def test_long_documents_are_scored_in_windows_each_token_once():
    assert windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    for n, window, stride in ((1, 4, 2), (5, 8, 3), (37, 8, 3), (100, 16, 15)):
        scored = [t for _, end, first in windows(n, window, stride) for t in range(first, end)]
        assert scored == list(range(1, n))
        for begin, end, first in windows(n, window, stride):
            assert end - begin <= window and (first == 1 or first - begin >= window - stride)
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 4)
    # windowed scoring equals the sum of each window's own hand-computed terms
    tok = char_tokenizer()
    model = tiny_llama(len(tok), init=0.5, max_positions=512)
    text = "a dog ran in the park today"
    ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
    expected = 0.0
    for begin, end, first in windows(len(ids), 8, 3):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids[begin:end]])).logits[0]
                                     .double(), -1)
        expected -= sum(logp[t - begin - 1, ids[t]].item() for t in range(first, end))
    (score,), _ = score_documents(model, tok, [text], window=8, stride=3, batch_size=3,
                                  progress=False)
    assert score.bits == pytest.approx(expected / math.log(2), rel=1e-5)
    (whole,), _ = score_documents(model, tok, [text], window=64, stride=8, progress=False)
    assert whole.bits == pytest.approx(_hand_bits(model, ids), rel=1e-5)
    assert whole.bits != pytest.approx(score.bits, rel=1e-6)  # less context, other value


def test_prefix_is_bos_when_the_tokenizer_adds_one_else_eos():
    assert prefix_id(char_tokenizer()) == 2  # adds <bos> to every text, like Gemma
    assert prefix_id(word_tokenizer(["a"])) == 2  # <eos> (lm-eval's rolling convention)
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        prefix_id(word_tokenizer(["a"], eos=False))


def test_splits_are_fixed_and_segments_cut_on_student_token_boundaries():
    from bench.instruct.suite import split
    from bench.lm.data import Document, offline_documents, segments

    docs = offline_documents("aci-bench")
    assert len(docs) == 40 and len({d.id for d in docs}) == 40
    train, test = split(docs)
    assert (train, test) == split(list(reversed(docs))) and len(test) == 12
    assert not {d.id for d in train} & {d.id for d in test}
    tok = word_tokenizer("the cat sat on mat".split())
    doc = Document("d", "the cat  sat on the mat the cat sat")
    segs = segments([doc], tok, 4, limit=10)
    assert [s.text for s in segs] == ["the cat  sat on", "the mat the cat"]  # scrap dropped
    assert all(s.text in doc.text for s in segs)
    assert len(segments([doc], tok, 4, limit=1)) == 1


def test_online_datasets_need_online_mode(monkeypatch):
    from bench.errors import UsageError
    from bench.lm.data import hf_documents

    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    with pytest.raises(UsageError, match="DISTILLBENCH_ONLINE=1"):
        hf_documents("hf:Salesforce/wikitext:wikitext-103-raw-v1", "test", "text", 200, 10)
