"""Property tests and golden values for every token-level distillation loss."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.losses import LOSSES, get_loss

NAMES = ["fkl", "rkl", "jsd", "skew_fkl", "skew_rkl", "tvd"]


def reference(name, s_logits, t_logits, mask=None, T=1.0, beta=0.5, alpha=0.1):
    """Independent float64 numpy implementation of each definition."""
    s = np.asarray(s_logits, dtype=np.float64) / T
    t = np.asarray(t_logits, dtype=np.float64) / T
    q = np.exp(s - s.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    p = np.exp(t - t.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)

    def kl(a, b):
        return np.sum(a * (np.log(a) - np.log(b)), -1)

    if name == "fkl":
        rows = kl(p, q)
    elif name == "rkl":
        rows = kl(q, p)
    elif name == "jsd":
        m = beta * p + (1 - beta) * q
        rows = beta * kl(p, m) + (1 - beta) * kl(q, m)
    elif name == "skew_fkl":
        rows = kl(p, alpha * p + (1 - alpha) * q)
    elif name == "skew_rkl":
        rows = kl(q, alpha * q + (1 - alpha) * p)
    else:
        rows = 0.5 * np.abs(p - q).sum(-1)
    if mask is not None:
        return rows[np.asarray(mask, dtype=bool)].mean()
    return rows.mean()


def logits_pair(seed, shape=(2, 5, 11), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


def test_registry_has_exactly_the_token_losses():
    assert set(NAMES) <= set(LOSSES.names())
    for name in NAMES:
        assert callable(get_loss(name))
        assert LOSSES.entry(name).citation


@pytest.mark.parametrize("name", NAMES)
def test_golden_values_against_float64_reference(name):
    s, t = logits_pair(0)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    for T in (1.0, 2.0):
        got = get_loss(name)(s, t, mask=mask, temperature=T).item()
        want = reference(name, s.numpy(), t.numpy(), mask.numpy(), T=T)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_golden_numbers_fixed():
    """Hand-checkable 2-token case pinned to numbers (guards the reference too)."""
    s = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    # token 1: p = (3/4, 1/4), q = (1/2, 1/2); token 2: p = (1/2, 1/2), q = (e/(1+e), 1/(1+e))
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    qa = math.e / (1 + math.e)
    kl2 = 0.5 * math.log(0.5 / qa) + 0.5 * math.log(0.5 / (1 - qa))
    assert get_loss("fkl")(s, t).item() == pytest.approx((kl1 + kl2) / 2, rel=1e-6)
    assert get_loss("tvd")(s, t).item() == pytest.approx((0.25 + (qa - 0.5)) / 2, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_zero_on_identical_inputs(name):
    s, _ = logits_pair(1)
    assert get_loss(name)(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 30.0),
       T=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_non_negative_and_finite_gradients(seed, scale, T):
    s, t = logits_pair(seed, scale=scale)
    for name in NAMES:
        student = s.clone().requires_grad_(True)
        loss = get_loss(name)(student, t, temperature=T)
        assert loss.item() >= 0.0
        loss.backward()
        assert torch.isfinite(student.grad).all()


def test_tvd_bounded_by_one():
    s = torch.tensor([[[50.0, -50.0]]])
    t = torch.tensor([[[-50.0, 50.0]]])
    assert get_loss("tvd")(s, t).item() == pytest.approx(1.0, abs=1e-6)


def test_jsd_symmetric_at_half():
    s, t = logits_pair(2)
    jsd = get_loss("jsd")
    assert jsd(s, t, beta=0.5).item() == pytest.approx(jsd(t, s, beta=0.5).item(), rel=1e-6)
    assert jsd(s, t, beta=0.3).item() != pytest.approx(jsd(t, s, beta=0.3).item(), rel=1e-3)


def test_jsd_bounded_by_log2():
    s = torch.tensor([[[60.0, -60.0]]])
    t = torch.tensor([[[-60.0, 60.0]]])
    assert get_loss("jsd")(s, t).item() == pytest.approx(math.log(2), rel=1e-5)


def test_skew_limits():
    s, t = logits_pair(3)
    assert get_loss("skew_fkl")(s, t, alpha=0.0).item() == pytest.approx(
        get_loss("fkl")(s, t).item(), rel=1e-6)
    assert get_loss("skew_rkl")(s, t, alpha=0.0).item() == pytest.approx(
        get_loss("rkl")(s, t).item(), rel=1e-6)
    assert get_loss("skew_fkl")(s, t, alpha=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_skew_reduces_divergence():
    s, t = logits_pair(4)
    assert get_loss("skew_fkl")(s, t, alpha=0.5).item() < get_loss("fkl")(s, t).item()


@pytest.mark.parametrize("name", NAMES)
def test_mask_mean_over_whole_batch(name):
    """The mean is over all masked-in tokens of the batch, not a mean of per-row means."""
    s, t = logits_pair(5, shape=(2, 4, 6))
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    fn = get_loss(name)
    tokens = [fn(s[b:b + 1, i:i + 1], t[b:b + 1, i:i + 1]).item()
              for b in range(2) for i in range(4) if mask[b, i]]
    assert fn(s, t, mask=mask).item() == pytest.approx(sum(tokens) / len(tokens), rel=1e-5)
    # Masked-out tokens do not influence the value, even when they are huge.
    s2 = s.clone()
    s2[~mask] = 1e4
    assert fn(s2, t, mask=mask).item() == pytest.approx(fn(s, t, mask=mask).item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_all_false_mask_gives_zero_with_warning(name):
    s, t = logits_pair(6)
    student = s.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="empty mask"):
        loss = get_loss(name)(student, t, mask=torch.zeros(2, 5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_chunked_equals_plain(name, chunk_size):
    s, t = logits_pair(7, shape=(3, 5, 50))
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    fn = get_loss(name)
    a = s.clone().requires_grad_(True)
    b = s.clone().requires_grad_(True)
    ta = t.clone().requires_grad_(True)
    tb = t.clone().requires_grad_(True)
    plain = fn(a, ta, mask=mask, temperature=2.0)
    chunked = fn(b, tb, mask=mask, temperature=2.0, chunk_size=chunk_size)
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-5)
    plain.backward()
    chunked.backward()
    torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tb.grad, ta.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", [1, 4])
def test_fused_chunks_with_a_constant_teacher_equal_plain(name, chunk_size):
    """The usual case (teacher detached) takes the fused path: value and gradient in one
    pass per chunk, nothing recomputed."""
    s, t = logits_pair(9, shape=(2, 6, 40))
    mask = torch.rand(2, 6, generator=torch.Generator().manual_seed(2)) > 0.4
    fn = get_loss(name)
    a = s.clone().requires_grad_(True)
    b = s.clone().requires_grad_(True)
    plain = fn(a, t, mask=mask, temperature=1.5)
    chunked = fn(b, t, mask=mask, temperature=1.5, chunk_size=chunk_size)
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-6)
    (3.0 * plain).backward()
    (3.0 * chunked).backward()  # the upstream gradient is applied, not assumed 1
    torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert fn(s, t, chunk_size=chunk_size).item() == pytest.approx(fn(s, t).item(),
                                                                       abs=1e-6)


def test_fused_chunks_refuse_a_second_backward_clearly():
    s, t = logits_pair(10)
    student = s.clone().requires_grad_(True)
    loss = get_loss("fkl")(student, t, chunk_size=2)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_bf16_logits_computed_in_float32():
    s, t = logits_pair(8)
    got = get_loss("fkl")(s.bfloat16(), t.bfloat16())
    assert got.dtype == torch.float32
    want = reference("fkl", s.bfloat16().float().numpy(), t.bfloat16().float().numpy())
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_neg_inf_logits_do_not_produce_nan():
    s = torch.tensor([[[1.0, 2.0, float("-inf")]]], requires_grad=True)
    t = torch.tensor([[[2.0, 1.0, float("-inf")]]])
    for name in NAMES:
        loss = get_loss(name)(s, t)
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(grad).all(), name


def test_ranking_shape_and_errors():
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    assert get_loss("fkl")(s, t, mask=torch.tensor([1, 1, 0, 1], dtype=torch.bool)) >= 0
    with pytest.raises(ValueError, match="share the vocabulary"):
        get_loss("fkl")(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="mask"):
        get_loss("fkl")(torch.randn(2, 3, 5), torch.randn(2, 3, 5), mask=torch.ones(3, 2))
    with pytest.raises(ValueError, match="beta"):
        get_loss("jsd")(s, t, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        get_loss("fkl")(s, t, temperature=0.0)


def test_no_warning_on_normal_mask():
    s, t = logits_pair(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_loss("rkl")(s, t, mask=torch.ones(2, 5, dtype=torch.bool))
