"""MGSR (Liu et al. 2024): DAC-KL, span correlation loss, SCRG error detection, total loss."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods.losses import LOSSES, get_loss
from methods.losses.mgsr import (
    DACClipNet,
    dac_kl,
    fixed_window_span_ids,
    mgsr_loss,
    quantile_keep_weights,
    scrg_correction,
    span_correlation_loss,
    word_span_ids,
)


def logits_pair(seed, shape=(2, 5, 11), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


def softmax64(x, T=1.0):
    x = np.asarray(x, dtype=np.float64) / T
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_dac_kl(s_logits, t_logits, lower, upper, mask=None, T=1.0):
    """Independent float64 reference: keep classes whose descending-order mass interval meets
    [lower, upper], renormalise the teacher there, KL against the full student."""
    p, q = softmax64(t_logits, T), softmax64(s_logits, T)
    rows = []
    for pr, qr in zip(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]), strict=True):
        order = np.argsort(-pr, kind="stable")
        above, acc = np.zeros_like(pr), 0.0
        for v in order:
            above[v], acc = acc, acc + pr[v]
        keep = ((above < upper) | (upper >= 1)) & ((above + pr > lower) | (lower <= 0))
        pt = np.where(keep, pr, 0.0) / pr[keep].sum()
        rows.append(sum(pt[v] * math.log(pt[v] / qr[v]) for v in range(len(pr)) if pt[v] > 0))
    rows = np.array(rows)
    if mask is not None:
        rows = rows[np.asarray(mask, dtype=bool).reshape(-1)]
    return rows.mean()


def ref_span(s_logits, t_logits, ids, T=1.0, distance="l2"):
    p, q = softmax64(t_logits, T), softmax64(s_logits, T)
    vals = []
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1] - 1):
            if ids[b, i] >= 0 and ids[b, i] == ids[b, i + 1]:
                rt, rs = p[b, i] * p[b, i + 1], q[b, i] * q[b, i + 1]
                if distance == "l2":
                    vals.append(((rt - rs) ** 2).sum())
                else:
                    rt, rs = rt / rt.sum(), rs / rs.sum()
                    vals.append((rt * np.log(rt / rs)).sum())
    return float(np.mean(vals))


def test_registered_with_citation():
    for name in ("mgsr_dac_kl", "mgsr_span"):
        assert name in LOSSES.names() and callable(get_loss(name))
        assert "2407.10068" in LOSSES.entry(name).citation


def test_dac_kl_golden_numbers():
    """Teacher (0.5, 0.3, 0.15, 0.05), upper 0.9: the 0.05 tail (mass above it 0.95) is cut;
    student uniform. Value = Σ p̃ log(p̃ / 0.25) with p̃ = (0.5, 0.3, 0.15) / 0.95."""
    t = torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]).log()
    s = torch.zeros(1, 1, 4)
    kept = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]
    want = sum(x * math.log(x / 0.25) for x in kept)
    assert dac_kl(s, t, upper=0.9).item() == pytest.approx(want, rel=1e-5)
    # lower 0.6: the 0.5 head lies wholly below it and is dropped; 0.3 (interval .5-.8) stays.
    kept = [0.3 / 0.45, 0.15 / 0.45]
    want = sum(x * math.log(x / 0.25) for x in kept)
    assert dac_kl(s, t, lower=0.6, upper=0.9).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(("lower", "upper", "T"), [(0.0, 0.95, 1.0), (0.1, 0.8, 2.0),
                                                    (0.0, 0.5, 0.5)])
def test_dac_kl_against_float64_reference(lower, upper, T):
    s, t = logits_pair(0)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    got = dac_kl(s, t, mask=mask, temperature=T, lower=lower, upper=upper).item()
    want = ref_dac_kl(s.numpy(), t.numpy(), lower, upper, mask.numpy(), T)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_dac_kl_full_bounds_equal_fkl_and_zero_cases():
    s, t = logits_pair(1)
    fkl = get_loss("fkl")
    assert dac_kl(s, t, upper=1.0).item() == pytest.approx(fkl(s, t).item(), rel=1e-6)
    # Zero at student == teacher only with the student clipped too (else −log kept mass).
    assert dac_kl(t.clone(), t, upper=0.9, clip_student=True).item() == pytest.approx(0, abs=1e-6)
    assert dac_kl(t.clone(), t, upper=1.0).item() == pytest.approx(0.0, abs=1e-6)
    # Zero when the student equals the clipped, renormalised teacher.
    p = torch.softmax(t, -1)
    w = quantile_keep_weights(p.reshape(-1, 11), torch.zeros(10), torch.full((10,), 0.9))
    student = torch.where(w.reshape(p.shape) > 0, t, torch.full_like(t, -60.0))
    assert dac_kl(student, t, upper=0.9).item() == pytest.approx(0.0, abs=1e-5)


def test_dac_kl_with_clip_net_nonnegative_finite_gradients():
    torch.manual_seed(0)
    net = DACClipNet(top_n=8, hidden=16)
    for seed, scale in [(2, 0.05), (3, 1.0), (4, 8.0), (5, 30.0)]:
        s, t = logits_pair(seed, shape=(2, 4, 64), scale=scale)
        student = s.clone().requires_grad_(True)
        net.zero_grad()
        loss = dac_kl(student, t, net, temperature=2.0)
        assert loss.item() >= 0.0
        loss.backward()
        assert torch.isfinite(student.grad).all()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("vocab", [64, 3, 1000])
def test_clip_net_bounds_any_support_size(vocab):
    net = DACClipNet()
    p = torch.softmax(torch.randn(6, vocab) * 4, -1)
    lower, upper = net(p, torch.softmax(torch.randn(6, vocab), -1))
    assert lower.shape == upper.shape == (6,)
    assert (lower >= 0).all() and (lower <= 0.25).all()
    assert (upper >= 0.75).all() and (upper < 1).all()
    w = quantile_keep_weights(p, lower, upper)
    assert (w.sum(-1) >= 1).all()  # never an empty support


def test_dac_kl_chunked_equals_plain_with_net():
    s, t = logits_pair(6, shape=(3, 5, 40))
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    nets = [DACClipNet(top_n=4, hidden=8) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    plain = dac_kl(a, t, nets[0], mask=mask)
    chunked = dac_kl(b, t, nets[1], mask=mask, chunk_size=3)
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-5)
    plain.backward()
    chunked.backward()
    torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5)
    for pa, pb in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-5, rtol=1e-5)


def test_dac_kl_mask_mean_and_masked_out_ignored():
    s, t = logits_pair(7, shape=(2, 4, 6))
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    tokens = [dac_kl(s[b:b + 1, i:i + 1], t[b:b + 1, i:i + 1]).item()
              for b in range(2) for i in range(4) if mask[b, i]]
    assert dac_kl(s, t, mask=mask).item() == pytest.approx(sum(tokens) / len(tokens), rel=1e-5)
    s2 = s.clone()
    s2[~mask] = 1e4
    assert dac_kl(s2, t, mask=mask).item() == pytest.approx(dac_kl(s, t, mask=mask).item())


def test_all_false_mask_gives_zero_with_warning():
    s, t = logits_pair(8)
    empty = torch.zeros(2, 5, dtype=torch.bool)
    for fn in (lambda x: dac_kl(x, t, DACClipNet(), mask=empty),
               lambda x: span_correlation_loss(x, t, mask=empty)):
        student = s.clone().requires_grad_(True)
        with pytest.warns(UserWarning, match="empty mask"):
            loss = fn(student)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(student.grad, torch.zeros_like(student))


def test_span_ids_rules():
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert fixed_window_span_ids(mask, 3).tolist() == [[0, 0, 0, -1, 1, 1, 1, 2]]
    toks = [["ĠThe", "Ġbig", "gest", "Ġcat", ",", "Ġsat"], ["▁hel", "lo", "!"]]
    assert word_span_ids(toks).tolist() == [[0, 1, 1, 2, -1, 3], [0, 0, -1, -1, -1, -1]]


@pytest.mark.parametrize("distance", ["l2", "kl"])
def test_span_loss_golden_and_properties(distance):
    s, t = logits_pair(9, shape=(2, 6, 7))
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 2, -1, 3, 3, 3]])
    got = span_correlation_loss(s, t, ids, distance=distance, temperature=2.0).item()
    assert got == pytest.approx(ref_span(s.numpy(), t.numpy(), ids.numpy(), 2.0, distance),
                                rel=1e-5, abs=1e-7)
    assert got > 0.0
    assert span_correlation_loss(t.clone(), t, ids, distance=distance).item() == pytest.approx(
        0.0, abs=1e-6)
    student = s.clone().requires_grad_(True)
    span_correlation_loss(student, t, ids, distance=distance).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_span_loss_golden_numbers_l2():
    """Two tokens, vocab 2: teacher p = (1/2, 1/2) twice → r_t = (1/4, 1/4); student
    q = (3/4, 1/4) twice → r_s = (9/16, 1/16). Σ(r_t − r_s)² = (5/16)² + (3/16)²."""
    t = torch.zeros(1, 2, 2)
    s = torch.tensor([[[math.log(3.0), 0.0], [math.log(3.0), 0.0]]])
    assert span_correlation_loss(s, t).item() == pytest.approx(34 / 256, rel=1e-6)


def test_span_loss_mask_and_windows():
    s, t = logits_pair(10, shape=(2, 6, 5))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    ids = fixed_window_span_ids(mask, 2)
    assert span_correlation_loss(s, t, mask=mask, span_len=2).item() == pytest.approx(
        span_correlation_loss(s, t, ids).item())
    assert span_correlation_loss(s, t, mask, span_len=2).item() == pytest.approx(
        span_correlation_loss(s, t, ids).item())
    s2 = s.clone()
    s2[~mask] = 1e4
    assert span_correlation_loss(s2, t, mask=mask).item() == pytest.approx(
        span_correlation_loss(s, t, mask=mask).item())


def test_span_loss_memory_safe_large_vocab():
    """V = 131072: a [pairs, V, V] outer product would need ~68 GB per pair; this runs in MB."""
    s, t = logits_pair(11, shape=(1, 8, 131072))
    student = s.clone().requires_grad_(True)
    loss = span_correlation_loss(student, t, span_len=4, chunk_size=2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    plain = span_correlation_loss(s, t, span_len=4)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)


def test_scrg_picks_hand_computed_position():
    # Teacher argmax is token 0 everywhere; the student's distributions differ per position.
    t = torch.tensor([[[4.0, 0.0, 0.0]] * 4, [[4.0, 0.0, 0.0]] * 4])
    s = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 9.0, 0.0]],
                      [[0.0, 0.0, 8.0], [4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])
    tokens = torch.tensor([[0, 1, 2, 1], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    p, q = softmax64(t.numpy()), softmax64(s.numpy())
    kl = (p * np.log(p / q)).sum(-1)
    # Row 0: candidates are positions 1 and 2 (tokens ≠ 0, masked in); 3 is masked out.
    want = 1 if kl[0, 1] > kl[0, 2] else 2
    pos, tok, div = scrg_correction(tokens, s, t, mask)
    assert pos.tolist() == [want, -1] and tok.tolist() == [0, -1]
    assert div[0].item() == pytest.approx(kl[0, want], rel=1e-5) and div[1].item() == 0.0
    # Without the disagreement requirement row 1 picks its most divergent position (0).
    pos, tok, _ = scrg_correction(tokens, s, t, mask, require_disagreement=False)
    assert pos.tolist() == [int(np.argmax(np.where(mask[0].numpy(), kl[0], -1))), 0]
    assert tok.tolist() == [0, 0]


def test_mgsr_total_is_weighted_sum_of_parts():
    s, t = logits_pair(12, shape=(2, 6, 9))
    labels = torch.randint(0, 9, (2, 6), generator=torch.Generator().manual_seed(0))
    labels[0, :2] = -100
    mask = labels != -100
    net = DACClipNet(top_n=4, hidden=8)
    student = s.clone().requires_grad_(True)
    total, parts = mgsr_loss(student, t, labels=labels, mask=mask, clip_net=net,
                             span_weight=2.0)
    assert parts["sft"].item() == pytest.approx(
        F.cross_entropy(s[mask], labels[mask]).item(), rel=1e-6)
    assert parts["dac_kl"].item() == pytest.approx(dac_kl(s, t, net, mask=mask).item())
    assert parts["span"].item() == pytest.approx(
        span_correlation_loss(s, t, mask=mask).item())
    assert total.item() == pytest.approx(
        parts["sft"].item() + parts["dac_kl"].item() + 2.0 * parts["span"].item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(student.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_errors_and_no_spurious_warnings():
    s, t = logits_pair(13)
    with pytest.raises(ValueError, match="lower"):
        dac_kl(s, t, lower=0.5, upper=0.4)
    with pytest.raises(ValueError, match="batch, seq, vocab"):
        span_correlation_loss(torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="distance"):
        span_correlation_loss(s, t, distance="cos")
    with pytest.raises(ValueError, match="span_len"):
        span_correlation_loss(s, t, span_len=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgsr_loss(s, t, mask=torch.ones(2, 5, dtype=torch.bool))


def test_mgsr_loss_takes_a_precomputed_sft_term():
    """The recipe passes its full-vocabulary SFT term; the composition stays in mgsr_loss."""
    torch.manual_seed(0)
    s, t = torch.randn(1, 6, 5), torch.randn(1, 6, 5)
    without, parts = mgsr_loss(s, t)
    sft = torch.tensor(0.75)
    total, parts_sft = mgsr_loss(s, t, sft=sft)
    assert float(total) == pytest.approx(float(without) + 0.75)
    assert float(parts_sft["sft"]) == 0.75 and float(parts["sft"]) == 0.0
    with pytest.raises(ValueError, match="not both"):
        mgsr_loss(s, t, sft=sft, labels=torch.zeros(1, 6, dtype=torch.long))
