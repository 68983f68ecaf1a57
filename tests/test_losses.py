"""ClassSRLoss on hand-made probabilities, and its gradients."""

import pytest
import torch

from classsr_core import ClassSRLoss
from classsr_core.training.losses import average_loss, class_loss


@pytest.mark.parametrize("m", [2, 3, 5])
def test_class_loss_one_hot_and_uniform(m):
    one_hot = torch.eye(m)[torch.arange(7) % m]
    assert class_loss(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((7, m), 1.0 / m)
    assert class_loss(uniform).item() == pytest.approx(m - 1, abs=1e-6)


def test_class_loss_matches_pairwise_formula():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = sum(2 - (abs(a - b) + abs(a - c) + abs(b - c)) for a, b, c in p.tolist()) / 2
    assert class_loss(p).item() == pytest.approx(expected, abs=1e-6)


def test_average_loss_even_spread_is_zero_and_divisor():
    even = torch.eye(3)[torch.arange(6) % 3]
    assert average_loss(even).item() == pytest.approx(0.0, abs=1e-6)
    # all 6 samples on class 0: |6-2| + |0-2| + |0-2| = 8, divided by 4*B/M = 8
    allzero = torch.eye(3)[[0] * 6]
    assert average_loss(allzero).item() == pytest.approx(1.0, abs=1e-6)


def test_total_and_gradients():
    loss = ClassSRLoss(w_l1=2.0, w_class=0.5, w_average=3.0)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 0.1]], requires_grad=True)
    probs = logits.softmax(1)
    out = torch.zeros(2, 3, 4, 4, requires_grad=True)
    target = torch.ones(2, 3, 4, 4)
    parts = loss(out, target, probs)
    assert parts["l1"].item() == pytest.approx(1.0)
    total = 2.0 * parts["l1"] + 0.5 * parts["class"] + 3.0 * parts["average"]
    assert parts["total"].item() == pytest.approx(total.item())
    parts["total"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # d(L1 mean)/d(out) = -1/numel, times w_l1
    assert torch.allclose(out.grad, torch.full_like(out, -2.0 / out.numel()))
    # the class loss pulls towards one-hot: the leading logit's gradient is negative
    lc_logits = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    class_loss(lc_logits.softmax(1)).backward()
    assert lc_logits.grad[0, 0] < 0
