"""ClassSR's combined loss: w_l1 * L1 + w_class * class loss + w_average * average loss."""

from __future__ import annotations

import torch
from torch import nn


def class_loss(probs: torch.Tensor) -> torch.Tensor:
    """Per sample ``(M-1) - sum_{i<j} |p_i - p_j|``, averaged over the batch.

    0 for one-hot probabilities, M-1 for uniform ones: it pushes the classifier towards a
    confident choice.
    """
    m = probs.shape[1]
    diffs = (probs.unsqueeze(2) - probs.unsqueeze(1)).abs()  # (B, M, M), each pair twice
    return ((m - 1) - diffs.sum(dim=(1, 2)) / 2).mean()


def average_loss(probs: torch.Tensor) -> torch.Tensor:
    """``sum_i |sum_batch p_i - B/M|`` divided by ``4*B/M``.

    0 when the batch spreads evenly over the classes: it stops the classifier from sending
    every patch to the widest branch. The divisor 4*B/M is the official code's (the 4 is
    arbitrary); we keep it so the official weights 1000 / 0.5 / 3 transfer unchanged.
    """
    b, m = probs.shape
    target = b / m
    return (probs.sum(dim=0) - target).abs().sum() / (4 * target)


class ClassSRLoss(nn.Module):
    """The paper's loss. Defaults are the official weights for images in [0, 1]."""

    def __init__(self, w_l1: float = 1000.0, w_class: float = 0.5, w_average: float = 3.0):
        super().__init__()
        self.w_l1, self.w_class, self.w_average = w_l1, w_class, w_average

    def forward(
        self, out: torch.Tensor, target: torch.Tensor, probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        l1 = nn.functional.l1_loss(out, target)
        lc = class_loss(probs)
        la = average_loss(probs)
        total = self.w_l1 * l1 + self.w_class * lc + self.w_average * la
        return {"total": total, "l1": l1, "class": lc, "average": la}
