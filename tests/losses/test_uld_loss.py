"""ULD (Boizard et al. 2024): hand-computed values over different vocabulary sizes, the
top-k + rest approximation, masking, chunking and the properties of a distance."""

import math

import pytest
import torch

from methods.losses import LOSSES, get_loss
from methods.losses.uld import sorted_l1_rows, topk_and_rest, uld, uld_topk_rows


def _logits(*rows):
    """Logits whose softmax is exactly the given probability rows: [1, len(rows), V]."""
    return torch.tensor(rows, dtype=torch.float64).log().unsqueeze(0)


def test_hand_computed_value_across_vocabulary_sizes():
    # student (3 tokens) sorted: .5 .3 .2 0 (padded); teacher (4 tokens) sorted: .6 .2 .1 .1
    s, t = _logits([0.2, 0.5, 0.3]), _logits([0.1, 0.6, 0.2, 0.1])
    assert uld(s, t).item() == pytest.approx(0.1 + 0.1 + 0.1 + 0.1)
    assert uld(t, s).item() == pytest.approx(0.4)  # symmetric, either side the larger
    # two positions: the mean
    s2, t2 = _logits([0.2, 0.5, 0.3], [1.0, 1e-300, 1e-300]), _logits([0.1, 0.6, 0.2, 0.1],
                                                                      [0.25] * 4)
    assert uld(s2, t2).item() == pytest.approx((0.4 + (0.75 + 0.25 * 3)) / 2)
    assert get_loss("uld") is uld and "2402.12030" in LOSSES.entry("uld").citation


def test_zero_for_equal_or_permuted_distributions_and_bounded():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    assert uld(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert uld(s, s[..., torch.randperm(11, generator=g)]).item() == pytest.approx(0, abs=1e-12)
    far = torch.full((1, 1, 4), -1e4, dtype=torch.float64)
    far[..., 0] = 0
    assert uld(far, far).item() == pytest.approx(0.0, abs=1e-12)
    for _ in range(20):
        a = torch.randn(3, 4, 7, generator=g) * 3
        b = torch.randn(3, 4, 13, generator=g) * 3
        value = uld(a, b).item()
        assert 0.0 <= value <= 2.0 + 1e-6


def test_gradient_flows_to_the_student_only_where_masked_in():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 9, generator=g)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    uld(s, t, mask=mask).backward()
    assert torch.isfinite(s.grad).all() and s.grad[mask].abs().sum() > 0
    assert s.grad[~mask].abs().sum() == 0
    # the mean over masked-in positions, not over all of them
    full = uld(s.detach()[mask].unsqueeze(0), t[mask].unsqueeze(0))
    assert uld(s.detach(), t, mask=mask).item() == pytest.approx(full.item(), rel=1e-6)


def test_chunked_equals_plain_value_and_gradient():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(2, 5, 17, generator=g, dtype=torch.float64)
    grads = []
    for chunk in (None, 3):
        s = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64, requires_grad=True)
        value = uld(s, t, chunk_size=chunk)
        value.backward()
        grads.append((value.item(), s.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_topk_is_exact_at_full_width_and_a_bounded_lower_bound_below():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(1, 6, 9, generator=g, dtype=torch.float64) * 2
    t = torch.randn(1, 6, 14, generator=g, dtype=torch.float64) * 2
    exact = uld(s, t).item()
    assert uld(s, t, topk=14).item() == pytest.approx(exact, rel=1e-12)
    p = torch.softmax(t[0], -1)
    for k in (1, 3, 6):
        approx = uld(s, t, topk=k).item()
        rest = topk_and_rest(p, k)[1]
        assert approx <= exact + 1e-12
        assert exact - approx <= 2 * rest.mean().item() + 1e-12


def test_topk_rows_match_the_sorted_rows_when_nothing_is_left_over():
    q = torch.tensor([[0.7, 0.2, 0.1]])
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    qt, qr = topk_and_rest(q, 4)
    pt, pr = topk_and_rest(p, 4)
    assert uld_topk_rows(qt, qr, pt, pr).item() == pytest.approx(sorted_l1_rows(q, p).item())
    # a rest class: |0.7-0.5| + |0.3-0.5|
    qt, qr = topk_and_rest(q, 1)
    pt, pr = topk_and_rest(p, 1)
    assert uld_topk_rows(qt, qr, pt, pr).item() == pytest.approx(0.4)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="align position by position"):
        uld(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="temperature"):
        uld(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), temperature=0)
    empty = uld(torch.zeros(1, 2, 3, requires_grad=True), torch.zeros(1, 2, 5),
                mask=torch.zeros(1, 2, dtype=torch.bool))
    assert empty.item() == 0 and empty.requires_grad
    assert math.isfinite(uld(torch.zeros(1, 1, 3), torch.zeros(1, 1, 5)).item())
