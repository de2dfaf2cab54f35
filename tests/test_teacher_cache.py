"""Top-k teacher logits: exact at k = V, close for a peaked teacher, cached round trip."""

import pytest
import torch

from methods.losses import get_loss
from methods.teacher_cache import TopKLogitCache, topk_of, topk_support


def logits(seed, shape=(2, 3, 50), scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd"])
def test_full_support_equals_full_vocabulary_loss(name):
    s, t = logits(0)
    values, indices = torch.topk(t, k=t.shape[-1], dim=-1)
    s_k, t_k = topk_support(s, values, indices)
    assert get_loss(name)(s_k, t_k).item() == pytest.approx(get_loss(name)(s, t).item(),
                                                            rel=1e-5)


def test_peaked_teacher_topk_is_close_and_differentiable():
    s, t = logits(1)
    t[..., 7] += 30.0  # nearly all teacher mass on one id
    student = s.clone().requires_grad_(True)
    values, indices = topk_of(t, 8)
    s_k, t_k = topk_support(student, values.float(), indices)
    approx = get_loss("fkl")(s_k, t_k)
    approx.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    # Gradients only reach the ids in the teacher's support.
    outside = torch.ones_like(student, dtype=torch.bool).scatter(-1, indices.long(), False)
    assert student.grad[outside].abs().max().item() == 0.0


def test_cache_round_trip(tmp_path):
    _, t = logits(2)
    cache = TopKLogitCache(tmp_path, k=5)
    assert cache.get("example-1") is None
    values, indices = topk_of(t, 5)
    cache.put("example-1", values, indices)
    got_values, got_indices = cache.get("example-1")
    assert torch.equal(got_values, values) and torch.equal(got_indices, indices)
    assert got_values.dtype == torch.bfloat16 and got_indices.dtype == torch.int32
    assert TopKLogitCache(tmp_path, k=6).get("example-1") is None  # k is part of the key
    assert not list(tmp_path.rglob("*.tmp"))


def test_shape_mismatch_rejected():
    s, t = logits(3)
    values, indices = topk_of(t, 4)
    with pytest.raises(ValueError, match="same shape"):
        topk_support(s, values, indices[..., :3])
