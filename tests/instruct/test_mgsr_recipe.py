"""The MGSR recipe around the pure losses: word spans per example and SCRG revision."""

import torch

from methods.instruct.mgsr import scrg_revise, span_ids
from methods.instruct.token_kd import TrainExample


def test_span_ids_never_join_two_examples(tiny_chat_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    a = TrainExample([4], tok.encode("the cat sat", add_special_tokens=False))
    b = TrainExample([4], tok.encode("dog ran", add_special_tokens=False))
    ids = span_ids(tok, [a, b])[0].tolist()
    assert len(ids) == 5
    # no space markers in this word-level vocabulary: each example is one "word" span,
    # and the two examples' spans differ
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]


def test_scrg_revise_returns_examples_with_teacher_topk(tiny_chat_model_dir):
    from bench.core.assets import load_causal_lm

    teacher, tok = load_causal_lm(str(tiny_chat_model_dir))
    torch.manual_seed(3)
    student, _ = load_causal_lm(str(tiny_chat_model_dir))
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5 * torch.randn_like(p))
    prompts = [tok.encode("the cat :", add_special_tokens=False),
               tok.encode("a dog sat on the mat :", add_special_tokens=False)]
    revised, corrections = scrg_revise(student, teacher, tok, prompts, max_new_tokens=5, topk=4)
    assert 0 <= corrections <= 2 and len(revised) == 2
    for e, p in zip(revised, prompts, strict=True):
        assert e.prompt_ids == p and 1 <= len(e.response_ids) <= 5
        assert e.topk_values.shape == e.topk_indices.shape == (len(e.response_ids), 4)
