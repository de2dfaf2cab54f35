"""Properties and golden values of DeAR's pointwise loss."""

import math

import pytest
import torch

from methods.losses import get_loss

dear = get_loss("dear_pointwise")


def scores(seed, shape=(3, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_kl_term_zero_when_student_equals_teacher():
    s, _ = scores(0)
    assert dear(s, s.clone(), alpha=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_ce_term_by_hand():
    s = torch.tensor([[2.0, 1.0, 0.0]])
    t = torch.zeros(1, 3)
    want = -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
    assert dear(s, t, alpha=0.0).item() == pytest.approx(want, rel=1e-6)


def test_alpha_limits_and_mixture():
    s, t = scores(1)
    ce = dear(s, t, alpha=0.0)
    kl_part = dear(s, t, alpha=1.0)
    mid = dear(s, t, alpha=0.3)
    assert mid.item() == pytest.approx(0.7 * ce.item() + 0.3 * kl_part.item(), rel=1e-6)
    T = 2.0
    p = torch.softmax(t / T, -1)
    kl = (p * (p.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    assert kl_part.item() == pytest.approx(T * T * kl.item(), rel=1e-5)


def test_ranknet_by_hand():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])

    def bce(logit, target):
        p = 1 / (1 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    sig = 1 / (1 + math.exp(2.0))  # sigmoid(t0 - t1)
    want = (bce(1.0, sig) + bce(-1.0, 1 - sig)) / 2
    assert dear(s, t, alpha=0.0, main="ranknet").item() == pytest.approx(want, rel=1e-6)
    both = dear(s, t, alpha=0.0, main="ce+ranknet").item()
    assert both == pytest.approx(want + dear(s, t, alpha=0.0).item(), rel=1e-6)


def test_positive_label_and_gradients():
    s, t = scores(2)
    student = s.clone().requires_grad_(True)
    loss = dear(student, t, main="ce+ranknet")
    loss.backward()
    assert torch.isfinite(student.grad).all()
    ce_only = s.clone().requires_grad_(True)
    dear(ce_only, t, alpha=0.0).backward()
    assert ce_only.grad[:, 0].lt(0).all()  # raising the positive's score lowers the CE
    lab = torch.tensor([1, 2, 3])
    assert dear(s, t, alpha=0.0, labels=lab).item() != pytest.approx(dear(s, t, alpha=0.0).item())


def test_invariant_to_score_shift_and_finite_for_large_scores():
    s, t = scores(3)
    a = dear(s, t, main="ce+ranknet").item()
    assert dear(s + 100.0, t - 50.0, main="ce+ranknet").item() == pytest.approx(a, rel=1e-5)
    big = dear(s * 1e4, t * 1e4, main="ce+ranknet")
    assert torch.isfinite(big)


def test_bad_arguments():
    s, t = scores(4)
    with pytest.raises(ValueError, match="main"):
        dear(s, t, main="listnet")
    with pytest.raises(ValueError, match="batch, n"):
        dear(s[0], t[0])
    with pytest.raises(ValueError, match="alpha"):
        dear(s, t, alpha=1.5)
