"""Small networks the tests share."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """A user's own backbone: 3x3 conv (3 -> nf) + 3x3 conv (nf -> 3 s^2) + pixel shuffle;
    width keyword ``nf``, takes ``scale``."""

    def __init__(self, nf: int = 8, scale: int = 2):
        super().__init__()
        self.c1 = nn.Conv2d(3, nf, 3, 1, 1)
        self.c2 = nn.Conv2d(nf, 3 * scale * scale, 3, 1, 1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.up(self.c2(torch.relu(self.c1(x))))
