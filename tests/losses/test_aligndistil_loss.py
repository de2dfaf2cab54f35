"""AlignDistil teacher and loss against hand computations (plain python ``math``)."""

import math
import subprocess
import sys
import warnings

import pytest
import torch

from methods.losses import LOSSES, aligndistil_loss, aligndistil_teacher, get_loss
from methods.losses.aligndistil import MODES, extrapolation_coefficient, l1_distance

Z_DPO = [1.0, 0.0, -1.0]
Z_REV = [0.0, 0.5, 0.2]


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def hand_teacher(z1, z2, mode="adaptive", r=10.0, eps=1e-3, beta0=0.1, alpha=1.0):
    """(z*, alpha_t, beta_t) for one token, written out from the definitions."""
    if mode in ("adaptive", "theorem1_adaptive"):
        d = sum(abs(a - b) for a, b in zip(softmax(z1), softmax(z2), strict=True))
        a_t = r * d + eps
    else:
        a_t = alpha
    if mode in ("adaptive", "contrastive"):
        z_star = [x + a_t * (x - y) for x, y in zip(z1, z2, strict=True)]
    else:
        z_star = [a_t * x + (1 - a_t) * y for x, y in zip(z1, z2, strict=True)]
    return z_star, a_t, beta0 / a_t


def hand_loss(student, dpo, rev, mask, length_normalize=True, temperature=1.0, **hp):
    """Mean over non-empty sequences of sum_t beta_t KL(q_t || softmax(z*_t / T)) [/ len]."""
    per_sequence = []
    for b in range(len(student)):
        total, n = 0.0, 0
        for t in range(len(student[b])):
            if not mask[b][t]:
                continue
            z_star, _, beta_t = hand_teacher(dpo[b][t], rev[b][t], **hp)
            p = softmax([v / temperature for v in z_star])
            q = softmax([v / temperature for v in student[b][t]])
            total += beta_t * sum(qi * (math.log(qi) - math.log(pi))
                                  for qi, pi in zip(q, p, strict=True))
            n += 1
        if n:
            per_sequence.append(total / n if length_normalize else total)
    return sum(per_sequence) / len(per_sequence)


def triple(seed, shape=(2, 4, 5), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) * scale for _ in range(3))


def test_teacher_hand_computation_small_vocab():
    p1, p2 = softmax(Z_DPO), softmax(Z_REV)
    d = sum(abs(a - b) for a, b in zip(p1, p2, strict=True))  # L1, not 1/2 L1
    a_t = 10.0 * d + 1e-3
    want_z = [z1 + a_t * (z1 - z2) for z1, z2 in zip(Z_DPO, Z_REV, strict=True)]
    teacher, weights = aligndistil_teacher(torch.tensor([[Z_DPO]]), torch.tensor([[Z_REV]]),
                                           r=10.0, eps=1e-3, beta0=0.1)
    assert teacher.shape == (1, 1, 3) and weights.shape == (1, 1)
    assert teacher[0, 0].tolist() == pytest.approx(want_z, rel=1e-5)
    assert weights.item() == pytest.approx(0.1 / a_t, rel=1e-5)
    assert l1_distance(torch.tensor(Z_DPO), torch.tensor(Z_REV)).item() == pytest.approx(d, 1e-6)
    # Pinned numbers (guard the hand formula too): D ≈ 0.8137 (TVD would be 0.4069).
    assert d == pytest.approx(0.813703, abs=1e-5)
    assert a_t == pytest.approx(8.138026, abs=1e-5)


@pytest.mark.parametrize("mode,alpha", [("adaptive", 1.0), ("contrastive", 0.5),
                                        ("constant", 2.0), ("theorem1_adaptive", 1.0)])
def test_each_mode_alpha_beta_and_teacher(mode, alpha):
    z_star, a_t, beta_t = hand_teacher(Z_DPO, Z_REV, mode=mode, r=15.0, alpha=alpha)
    teacher, weights = aligndistil_teacher(torch.tensor([Z_DPO]), torch.tensor([Z_REV]), r=15.0,
                                           mode=mode, alpha=alpha)
    assert teacher[0].tolist() == pytest.approx(z_star, rel=1e-5, abs=1e-6)
    assert weights.item() == pytest.approx(beta_t, rel=1e-5)
    coef = extrapolation_coefficient(torch.tensor([Z_DPO]), torch.tensor([Z_REV]), r=15.0,
                                     mode=mode, alpha=alpha)
    assert coef.item() == pytest.approx(a_t, rel=1e-5)


def test_constant_modes_ignore_r_and_eps():
    z1, z2 = torch.tensor([Z_DPO]), torch.tensor([Z_REV])
    for mode in ("contrastive", "constant"):
        a = aligndistil_teacher(z1, z2, mode=mode, alpha=3.0, r=1.0, eps=0.5)
        b = aligndistil_teacher(z1, z2, mode=mode, alpha=3.0, r=20.0, eps=1e-3)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[1].item() == pytest.approx(0.1 / 3.0)


def test_constant_mode_alpha_one_is_the_dpo_model():
    """Theorem 1 with beta = beta0 (alpha = 1): the teacher is the DPO model itself."""
    z1, z2 = torch.tensor([Z_DPO]), torch.tensor([Z_REV])
    teacher, weights = aligndistil_teacher(z1, z2, mode="constant", alpha=1.0)
    assert torch.allclose(teacher, z1) and weights.item() == pytest.approx(0.1)


def test_alpha_lower_bound_eps_when_models_agree():
    z = torch.tensor([[Z_DPO, Z_REV]])
    teacher, weights = aligndistil_teacher(z, z.clone(), eps=1e-3, beta0=0.1)
    assert torch.allclose(teacher, z)
    assert weights[0].tolist() == pytest.approx([100.0, 100.0], rel=1e-5)  # beta0 / eps
    # D uses probabilities: a per-token shift of the logits changes nothing (up to float32
    # rounding of the probabilities: ~1e-7 each, times r = 10, against eps = 1e-3).
    _, weights = aligndistil_teacher(z, z + 7.0)
    assert weights[0].tolist() == pytest.approx([100.0, 100.0], rel=5e-3)
    assert extrapolation_coefficient(z, z + 7.0).min().item() >= 1e-3 - 1e-9


def test_alpha_upper_bound_is_two_r_plus_eps():
    """Disjoint distributions: L1 = 2 (the TVD would be 1), so alpha = 2r + eps."""
    z1 = torch.tensor([[60.0, -60.0]])
    z2 = torch.tensor([[-60.0, 60.0]])
    coef = extrapolation_coefficient(z1, z2, r=10.0, eps=1e-3)
    assert coef.item() == pytest.approx(20.001, rel=1e-6)


def test_extrapolation_on_logits_matches_log_prob_form():
    """Official code extrapolates raw logits; log-probabilities give the same softmax."""
    z1, z2, _ = triple(0)
    t_raw, _ = aligndistil_teacher(z1, z2)
    t_lp, _ = aligndistil_teacher(z1.log_softmax(-1), z2.log_softmax(-1))
    assert torch.allclose(t_raw.softmax(-1), t_lp.softmax(-1), atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length_normalize", [True, False])
def test_loss_against_hand_computation(mode, length_normalize):
    s, d, v = triple(1)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    for temperature in (1.0, 2.0):
        got = aligndistil_loss(s, d, v, mask=mask, mode=mode, alpha=1.7, r=10.0,
                               length_normalize=length_normalize, temperature=temperature)
        want = hand_loss(s.tolist(), d.tolist(), v.tolist(), mask.tolist(),
                         length_normalize=length_normalize, temperature=temperature,
                         mode=mode, alpha=1.7, r=10.0)
        assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_zero_when_student_equals_teacher():
    _, d, v = triple(2)
    teacher, _ = aligndistil_teacher(d, v)
    assert aligndistil_loss(teacher.clone(), d, v).item() == pytest.approx(0.0, abs=1e-6)
    # ... but not when the student is the DPO model (the teacher extrapolates beyond it).
    assert aligndistil_loss(d.clone(), d, v).item() > 1e-3
    # Models that agree: the teacher is the DPO model, so the DPO model scores 0.
    assert aligndistil_loss(d.clone(), d, d.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_default_is_registered_and_positive():
    assert "aligndistil" in LOSSES.names()
    assert "2503.02832" in LOSSES.entry("aligndistil").citation
    assert "reverse_logits" in LOSSES.entry("aligndistil").meta["signature"]
    assert get_loss("aligndistil") is aligndistil_loss
    s, d, v = triple(3)
    assert aligndistil_loss(s, d, v).item() > 0


def test_import_of_the_package_stays_torch_free():
    code = ("import sys, methods.losses as m; assert 'torch' not in sys.modules; "
            "m.LOSSES.names(); assert 'torch' not in sys.modules; "
            "from methods.losses import aligndistil_teacher; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    with pytest.raises(AttributeError):
        import methods.losses as pkg

        pkg.not_a_loss  # noqa: B018


def test_masked_tokens_do_not_matter():
    s, d, v = triple(4)
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    base = aligndistil_loss(s, d, v, mask=mask)
    s2, d2, v2 = s.clone(), d.clone(), v.clone()
    s2[~mask], d2[~mask], v2[~mask] = 1e4, -1e4, 3e3
    student = s2.requires_grad_(True)
    loss = aligndistil_loss(student, d2, v2, mask=mask)
    assert loss.item() == pytest.approx(base.item(), rel=1e-6)
    loss.backward()
    assert torch.all(student.grad[~mask] == 0)
    assert torch.isfinite(student.grad).all()


def test_length_normalisation():
    s, d, v = triple(5, shape=(1, 4, 6))
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    summed = aligndistil_loss(s, d, v, mask=mask, length_normalize=False)
    normed = aligndistil_loss(s, d, v, mask=mask, length_normalize=True)
    assert normed.item() == pytest.approx(summed.item() / 3, rel=1e-6)
    # Two sequences of different lengths: mean of the per-sequence (normalised) sums.
    s, d, v = triple(6, shape=(2, 4, 6))
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    per_seq = [aligndistil_loss(s[b:b + 1], d[b:b + 1], v[b:b + 1], mask=mask[b:b + 1],
                                length_normalize=False).item() for b in range(2)]
    got = aligndistil_loss(s, d, v, mask=mask).item()
    assert got == pytest.approx((per_seq[0] / 1 + per_seq[1] / 4) / 2, rel=1e-6)
    got = aligndistil_loss(s, d, v, mask=mask, length_normalize=False).item()
    assert got == pytest.approx(sum(per_seq) / 2, rel=1e-6)


def test_empty_sequences_skipped_and_empty_mask_warns():
    s, d, v = triple(7)
    mask = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.bool)
    alone = aligndistil_loss(s[1:], d[1:], v[1:], mask=mask[1:])
    assert aligndistil_loss(s, d, v, mask=mask).item() == pytest.approx(alone.item(), rel=1e-6)
    student = s.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="empty mask"):
        loss = aligndistil_loss(student, d, v, mask=torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(student.grad == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aligndistil_loss(s, d, v, mask=mask)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_finite_and_teacher_detached(mode):
    for seed, scale in ((8, 0.01), (9, 3.0), (10, 40.0)):
        s, d, v = triple(seed, scale=scale)
        student = s.clone().requires_grad_(True)
        dpo = d.clone().requires_grad_(True)
        rev = v.clone().requires_grad_(True)
        loss = aligndistil_loss(student, dpo, rev, mode=mode, alpha=2.0)
        assert torch.isfinite(loss) and loss.item() >= 0
        loss.backward()
        assert torch.isfinite(student.grad).all()
        assert dpo.grad is None and rev.grad is None


def test_gradient_moves_student_towards_teacher():
    s, d, v = triple(11)
    student = s.clone().requires_grad_(True)
    opt = torch.optim.Adam([student], lr=0.2)
    first = aligndistil_loss(student, d, v)
    for _ in range(40):
        opt.zero_grad()
        aligndistil_loss(student, d, v).backward()
        opt.step()
    assert aligndistil_loss(student, d, v).item() < 0.5 * first.item()


@pytest.mark.parametrize("chunk_size", [1, 3, 5])
def test_chunked_equals_plain(chunk_size):
    s, d, v = triple(12, shape=(2, 4, 7))
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)
    grads, values = [], []
    for chunk in (None, chunk_size):
        student = s.clone().requires_grad_(True)
        loss = aligndistil_loss(student, d, v, mask=mask, chunk_size=chunk)
        loss.backward()
        values.append(loss.item())
        grads.append(student.grad)
    assert values[1] == pytest.approx(values[0], rel=1e-5)
    assert torch.allclose(grads[1], grads[0], atol=1e-6)
    with torch.no_grad():
        assert aligndistil_loss(s, d, v, mask=mask, chunk_size=chunk_size).item() == (
            pytest.approx(values[0], rel=1e-5))


def test_neg_inf_vocabulary_slots():
    s, d, v = triple(13, shape=(1, 3, 5))
    for x in (s, d, v):
        x[..., -1] = float("-inf")
    teacher, weights = aligndistil_teacher(d, v)
    assert torch.isneginf(teacher[..., -1]).all() and torch.isfinite(teacher[..., :-1]).all()
    assert torch.isfinite(weights).all()
    student = s.clone().requires_grad_(True)
    loss = aligndistil_loss(student, d, v)
    want = aligndistil_loss(s[..., :-1], d[..., :-1], v[..., :-1])
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_bf16_inputs_computed_in_float32():
    s, d, v = triple(14)
    got = aligndistil_loss(s.bfloat16(), d.bfloat16(), v.bfloat16())
    want = aligndistil_loss(s.bfloat16().float(), d.bfloat16().float(), v.bfloat16().float())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_errors():
    s, d, v = triple(15)
    with pytest.raises(ValueError, match="mode"):
        aligndistil_loss(s, d, v, mode="theorem2")
    with pytest.raises(ValueError, match="same shape"):
        aligndistil_loss(s, d[..., :-1], v)
    with pytest.raises(ValueError, match="eps"):
        aligndistil_teacher(d, v, eps=0.0)
    with pytest.raises(ValueError, match="alpha"):
        aligndistil_teacher(d, v, mode="contrastive", alpha=0.0)
    with pytest.raises(ValueError, match="mask"):
        aligndistil_loss(s, d, v, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch, seq, vocab"):
        aligndistil_loss(s[0], d[0], v[0])
