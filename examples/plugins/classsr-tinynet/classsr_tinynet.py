"""An example backbone plugin: a tiny residual network for any scale.

``TinyNet(scale, in_channels, nf, nb)``: a 3x3 conv to ``nf`` channels, ``nb`` conv + ReLU
blocks, a 3x3 conv to ``in_channels * scale**2`` channels and a pixel shuffle, plus the
input upsampled by nearest neighbour (the identity at scale 1). The output of a fresh
network is therefore close to that upsampled input, and training only learns the
difference.

What classsr needs from a backbone is small:

* a factory (here the class itself) taking ``scale`` and ``in_channels`` and returning an
  ``nn.Module`` that maps ``(N, C, h, w)`` to ``(N, C, scale*h, scale*w)``;
* a keyword that sets the width (``nf``) and, optionally, one that sets the depth (``nb``),
  declared as ``width_arg`` / ``depth_arg`` so ``ClassWrapper(..., widths=[...])`` and
  ``depths=[...]`` can build the branches;
* ``scales``: which factors it supports, so a wrong one fails before anything is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classsr_core.api import hookimpl

__version__ = "0.1.0"


class TinyNet(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 3, nf: int = 16, nb: int = 2):
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"tinynet upscales by 1, 2, 3 or 4, not {scale}")
        self.scale = scale
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.body = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU()) for _ in range(nb)]
        )
        self.tail = nn.Conv2d(nf, in_channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        with torch.no_grad():  # start near the upsampled input
            self.tail.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + self.shuffle(self.tail(self.body(self.head(x))))


@hookimpl
def classsr_register_backbones(register):
    register("tinynet", TinyNet, width_arg="nf", depth_arg="nb", scales=(1, 2, 3, 4))
