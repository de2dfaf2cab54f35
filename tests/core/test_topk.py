"""Top-k teacher logits: exact at k = V, close for a peaked teacher, cached round trip."""

import pytest
import torch

from bench.core.topk import topk_of, topk_support
from methods.losses import get_loss


def logits(seed, shape=(2, 3, 50), scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd"])
def test_full_support_equals_full_vocabulary_loss(name):
    s, t = logits(0)
    values, indices = torch.topk(t, k=t.shape[-1], dim=-1)
    s_k, t_k = topk_support(s, values, indices, torch.logsumexp(t, -1))
    assert s_k.shape[-1] == t.shape[-1] + 1  # k ids and the rest class
    assert get_loss(name)(s_k, t_k).item() == pytest.approx(get_loss(name)(s, t).item(),
                                                            rel=1e-5)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd"])
def test_topk_loss_is_the_loss_of_the_coarse_grained_distributions(name):
    """k < V: the value is the divergence between teacher and student with all ids outside
    the teacher's top k merged into one class (hand-built here), a lower bound of the full
    divergence."""
    s, t = logits(4)
    k = 6
    values, indices = torch.topk(t, k=k, dim=-1)
    s_k, t_k = topk_support(s, values, indices, torch.logsumexp(t, -1))

    def coarse(x):
        p = torch.softmax(x, -1)
        top = torch.gather(p, -1, indices)
        return torch.cat([top, 1 - top.sum(-1, keepdim=True)], -1).log()

    got = get_loss(name)(s_k, t_k).item()
    assert got == pytest.approx(get_loss(name)(coarse(s), coarse(t)).item(), rel=1e-4)
    assert got <= get_loss(name)(s, t).item() + 1e-6


def test_student_mass_outside_the_teacher_support_is_penalised():
    s, t = logits(5)
    values, indices = topk_of(t, 8)
    lse = torch.logsumexp(t, -1)
    outside = torch.ones_like(s, dtype=torch.bool).scatter(-1, indices.long(), False)
    leaky = s.clone()
    leaky[outside] += 5.0  # same logits on the support, more mass elsewhere
    for name in ("fkl", "rkl"):
        base = get_loss(name)(*topk_support(s, values, indices, lse)).item()
        assert get_loss(name)(*topk_support(leaky, values, indices, lse)).item() > base


def test_peaked_teacher_topk_is_close_and_differentiable():
    s, t = logits(1)
    t[..., 7] += 30.0  # nearly all teacher mass on one id
    student = s.clone().requires_grad_(True)
    values, indices = topk_of(t, 8)
    s_k, t_k = topk_support(student, values.float(), indices, torch.logsumexp(t, -1))
    approx = get_loss("fkl")(s_k, t_k)
    approx.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert approx.item() == pytest.approx(get_loss("fkl")(s, t).item(), rel=1e-2)


def test_shape_mismatch_rejected():
    s, t = logits(3)
    values, indices = topk_of(t, 4)
    with pytest.raises(ValueError, match="same shape"):
        topk_support(s, values, indices[..., :3])
