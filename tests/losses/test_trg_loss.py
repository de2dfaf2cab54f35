"""TRG terms: graph construction, each term on identical inputs, hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from methods.losses.trg import (
    context_map,
    contextual_loss,
    graph_local_loss,
    hinton_kd,
    knn_graph,
    token_infonce,
)


def line_tokens() -> torch.Tensor:
    return torch.tensor([[0.0], [1.0], [3.0], [7.0]])


def test_knn_graph_mask_and_weights_by_hand() -> None:
    a = knn_graph(line_tokens(), k=1, sigma=1.0)
    # nearest neighbours on the line 0, 1, 3, 7: 0->1, 1->0, 3->1 (2 < 4... tie-free), 7->3
    expected = torch.zeros(4, 4)
    expected[0, 1] = math.exp(-1 / 2)
    expected[1, 0] = math.exp(-1 / 2)
    expected[2, 1] = math.exp(-4 / 2)
    expected[3, 2] = math.exp(-16 / 2)
    assert torch.allclose(a, expected, atol=1e-7)


def test_knn_graph_k2_excludes_self_and_default_sigma() -> None:
    a = knn_graph(line_tokens(), k=2)
    assert (a.diagonal() == 0).all()
    assert ((a > 0).sum(dim=1) == 2).all()
    # default sigma: mean squared distance over the 8 kNN pairs
    pairs = {0: (1, 2), 1: (0, 2), 2: (1, 0), 3: (2, 1)}
    pts = [0.0, 1.0, 3.0, 7.0]
    sq = [(pts[i] - pts[j]) ** 2 for i, js in pairs.items() for j in js]
    sigma = sum(sq) / len(sq)
    for i, js in pairs.items():
        for j in js:
            assert a[i, j].item() == pytest.approx(math.exp(-(pts[i] - pts[j]) ** 2
                                                            / (2 * sigma)), rel=1e-5)


def test_knn_graph_clips_k_and_rejects_single_token() -> None:
    assert ((knn_graph(line_tokens(), k=50) > 0).sum(dim=1) == 3).all()
    with pytest.raises(ValueError):
        knn_graph(torch.zeros(1, 3), k=1)


def test_local_loss_zero_on_identical_tokens_and_scale_invariant_teacher() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(32, 6)
    assert graph_local_loss(tokens, tokens.clone(), k=4).item() == pytest.approx(0, abs=1e-7)
    # default sigma adapts to each model's scale: a scaled copy gives the same graph
    assert graph_local_loss(tokens * 3.0, tokens, k=4).item() == pytest.approx(0, abs=1e-6)
    assert graph_local_loss(torch.randn(32, 4), tokens, k=4).item() > 0


def test_local_loss_by_hand() -> None:
    s, t = line_tokens(), torch.tensor([[0.0], [2.0], [3.0], [7.0]])
    a_s, a_t = knn_graph(s, 1, 1.0), knn_graph(t, 1, 1.0)
    p, q = torch.softmax(a_t, 1), torch.softmax(a_s, 1)
    expected = sum(sum(p[i, j] * math.log(p[i, j] / q[i, j]) for j in range(4))
                   for i in range(4)) / 4
    got = graph_local_loss(s, t, k=1, sigma_student=1.0, sigma_teacher=1.0)
    assert got.item() == pytest.approx(float(expected), rel=1e-5)


def test_infonce_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    cos = [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]
    expected = 0.0
    for i in range(2):
        logits = [c / tau for c in cos[i]]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert token_infonce(s, t, temperature=tau).item() == pytest.approx(expected / 2, rel=1e-6)


def test_infonce_on_identical_tokens_tends_to_zero_as_temperature_falls() -> None:
    # InfoNCE is a cross-entropy over n candidates, so it is not 0 at a finite temperature
    # even for identical tokens; with distinct tokens it goes to 0 as tau -> 0.
    t = torch.eye(5)
    values = [token_infonce(t, t.clone(), temperature=tau).item() for tau in (1.0, 0.1, 0.01)]
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(0.0, abs=1e-30)
    with pytest.raises(ValueError):
        token_infonce(t, t, temperature=0.0)


def test_context_map_and_contextual_loss() -> None:
    f = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    e = [[math.exp(1 / math.sqrt(2)), 1.0], [1.0, math.exp(4 / math.sqrt(2))]]
    expected = [[v / sum(row) for v in row] for row in e]
    assert torch.allclose(context_map(f)[0], torch.tensor(expected), atol=1e-6)
    torch.manual_seed(1)
    student, teacher = torch.randn(3, 5, 4), torch.randn(3, 5, 8)
    assert contextual_loss(teacher, teacher.clone()).item() == pytest.approx(0, abs=1e-9)
    got = contextual_loss(student, teacher).item()
    assert got == pytest.approx(((context_map(student) - context_map(teacher)) ** 2)
                                .mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        contextual_loss(torch.randn(3, 4, 4), teacher)


def test_hinton_kd_limits_and_value() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(4, 10), torch.randint(0, 10, (4,))
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    # identical logits: the KL part is 0, only the CE share is left
    assert hinton_kd(logits, logits.clone(), labels).item() == pytest.approx(0.1 * ce, rel=1e-5)
    teacher = torch.randn(4, 10)
    p = torch.softmax(teacher / 4, -1)
    kl = (p * (p.log() - torch.log_softmax(logits / 4, -1))).sum(-1).mean().item()
    assert hinton_kd(logits, teacher, labels).item() == pytest.approx(0.1 * ce + 0.9 * 16 * kl,
                                                                      rel=1e-5)


def test_all_terms_give_finite_gradients_to_the_student_only() -> None:
    torch.manual_seed(3)
    student = torch.randn(4, 16, 8, requires_grad=True)
    teacher = torch.randn(4, 16, 12, requires_grad=True)
    flat_s, flat_t = student.reshape(64, 8), teacher.reshape(64, 12)
    proj = torch.nn.Linear(8, 12)
    total = (graph_local_loss(flat_s, flat_t, k=8) + token_infonce(proj(flat_s), flat_t)
             + contextual_loss(student, teacher))
    total.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None
