"""DPO loss and sequence log-probabilities against closed forms (plain python ``math``)."""

import math

import pytest
import torch

from methods.losses import LOSSES, dpo_loss, get_loss, sequence_logps

PC = [-10.0, -4.0, -7.5]   # policy, chosen
PR = [-12.0, -3.0, -7.5]   # policy, rejected
RC = [-11.0, -4.5, -8.0]   # reference, chosen
RR = [-11.5, -3.5, -6.0]   # reference, rejected


def closed_form(pc, pr, rc, rr, beta):
    """mean_b -log sigmoid(beta·((pc - rc) - (pr - rr)))."""
    terms = [-math.log(1.0 / (1.0 + math.exp(-beta * ((a - c) - (b - d)))))
             for a, b, c, d in zip(pc, pr, rc, rr, strict=True)]
    return sum(terms) / len(terms)


def tensors():
    return tuple(torch.tensor(x) for x in (PC, PR, RC, RR))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_closed_form(beta):
    loss, chosen, rejected = dpo_loss(*tensors(), beta=beta)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(closed_form(PC, PR, RC, RR, beta), rel=1e-6)
    assert chosen.tolist() == pytest.approx([beta * (a - c) for a, c in zip(PC, RC, strict=True)], rel=1e-6)
    assert rejected.tolist() == pytest.approx([beta * (b - d) for b, d in zip(PR, RR, strict=True)], rel=1e-6)


def test_default_beta_and_pinned_number():
    # margins h = (1.5, 0, 2), beta = 0.1: mean of log(1 + e^{-0.1 h}).
    want = (math.log1p(math.exp(-0.15)) + math.log(2) + math.log1p(math.exp(-0.2))) / 3
    assert dpo_loss(*tensors())[0].item() == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(0.637414, abs=1e-6)


def test_policy_equal_to_reference_gives_log2():
    pc, pr, _, _ = tensors()
    assert dpo_loss(pc, pr, pc.clone(), pr.clone())[0].item() == pytest.approx(math.log(2))


def test_gradient_sign_and_magnitude():
    pc, pr, rc, rr = (t.clone().requires_grad_(True) for t in tensors())
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert not chosen.requires_grad and not rejected.requires_grad
    loss.backward()
    assert torch.all(pc.grad < 0)   # raising the chosen log-prob lowers the loss
    assert torch.all(pr.grad > 0)   # raising the rejected log-prob raises it
    assert torch.allclose(rc.grad, -pc.grad) and torch.allclose(rr.grad, -pr.grad)
    for b in range(3):
        h = (PC[b] - RC[b]) - (PR[b] - RR[b])
        sig = 1.0 / (1.0 + math.exp(0.1 * h))  # sigmoid(-beta h)
        assert pc.grad[b].item() == pytest.approx(-0.1 * sig / 3, rel=1e-5)


def test_reverse_dpo_relation():
    """Swapping chosen and rejected (reverse DPO): per pair softplus(-x) - softplus(x) = -x."""
    pc, pr, rc, rr = tensors()
    beta = 0.3
    forward, f_chosen, f_rejected = dpo_loss(pc, pr, rc, rr, beta=beta)
    reverse, r_chosen, r_rejected = dpo_loss(pr, pc, rr, rc, beta=beta)
    margins = [(a - c) - (b - d) for a, b, c, d in zip(PC, PR, RC, RR, strict=True)]
    assert reverse.item() == pytest.approx(closed_form(PR, PC, RR, RC, beta), rel=1e-6)
    assert forward.item() - reverse.item() == pytest.approx(-beta * sum(margins) / 3, rel=1e-5)
    assert torch.equal(r_chosen, f_rejected) and torch.equal(r_rejected, f_chosen)


def test_extreme_margins_stay_finite():
    big = torch.tensor([1e4])
    zero = torch.tensor([0.0])
    assert dpo_loss(big, zero, zero, zero, beta=1.0)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert dpo_loss(zero, big, zero, zero, beta=1.0)[0].item() == pytest.approx(1e4, rel=1e-6)


def test_sequence_logps_hand_computation():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.0]],
                           [[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[2, 0, -100], [1, 2, 1]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)

    def logp(row, k):
        return row[k] - math.log(sum(math.exp(v) for v in row))

    rows = logits.tolist()
    want = [logp(rows[0][0], 2) + logp(rows[0][1], 0),
            logp(rows[1][1], 2) + logp(rows[1][2], 1)]
    assert sequence_logps(logits, labels, mask).tolist() == pytest.approx(want, rel=1e-6)
    # No mask: every label other than -100 counts.
    want_all = [want[0], logp(rows[1][0], 1) + want[1]]
    assert sequence_logps(logits, labels).tolist() == pytest.approx(want_all, rel=1e-6)


def test_sequence_logps_errors_and_dtype():
    logits = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    labels = torch.zeros(2, 3, dtype=torch.long)
    out = sequence_logps(logits, labels)
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([3 * -math.log(4)] * 2, rel=1e-6)
    with pytest.raises(ValueError):
        sequence_logps(logits, labels[:, :2])
    with pytest.raises(ValueError, match="mask"):
        sequence_logps(logits, labels, torch.ones(2, 2, dtype=torch.bool))


def test_end_to_end_from_logits_improves_preference():
    g = torch.Generator().manual_seed(0)
    chosen_ids = torch.randint(0, 6, (2, 5), generator=g)
    rejected_ids = torch.randint(0, 6, (2, 5), generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    ref = torch.randn(2, 5, 6, generator=g)
    policy = ref.clone().requires_grad_(True)  # one logit table scores both responses
    ref_c = sequence_logps(ref, chosen_ids, mask)
    ref_r = sequence_logps(ref, rejected_ids, mask)
    opt = torch.optim.SGD([policy], lr=1.0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss, _, _ = dpo_loss(sequence_logps(policy, chosen_ids, mask),
                              sequence_logps(policy, rejected_ids, mask), ref_c, ref_r)
        first = loss.item() if first is None else first
        loss.backward()
        assert torch.isfinite(policy.grad).all()
        opt.step()
    assert first == pytest.approx(math.log(2), rel=1e-6)
    assert loss.item() < first


def test_registered():
    assert "dpo" in LOSSES.names()
    assert "2305.18290" in LOSSES.entry("dpo").citation
    assert get_loss("dpo") is dpo_loss
