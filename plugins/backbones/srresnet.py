"""MSRResNet (modified SRResNet) as in the official ClassSR code.

No BatchNorm, LeakyReLU(0.1), ``nb`` residual blocks (conv-ReLU-conv + identity), pixel
shuffle upsampling (two x2 steps for x4, one x3 step for x3), and a bilinear upsampled copy
of the input added to the output. Attribute names are the official ones. Widths 36 / 52 /
64 have 481,683 / 1,002,771 / 1,517,571 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import InputError

PAPER_WIDTHS = [36, 52, 64]


def _init_scaled(module: nn.Module, scale: float = 0.1) -> None:
    """The official init: Kaiming (fan in) times ``scale``, zero bias, on every conv."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResidualBlockNoBN(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the identity (keys ``conv1``, ``conv2``)."""

    def __init__(self, nf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """MSRResNet: ``nf`` is the width, ``nb`` the number of residual blocks (16)."""

    def __init__(self, scale: int = 4, in_channels: int = 3, nf: int = 64, nb: int = 16):
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise InputError(f"srresnet upscales by 1, 2, 3 or 4, not {scale}")
        if nf < 0:
            raise InputError(f"srresnet width nf must be 0 or more, got {nf}")
        self.upscale = scale
        self.nf = nf
        if nf == 0:
            # Width 0 is no network: bicubic upscaling alone (as FSRCNN's width 0). As the
            # cheapest branch of a ClassSR model it takes the smooth patches, where the
            # network adds next to nothing, at ~0.01% of SRResNet-64's cost.
            return
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.recon_trunk = nn.Sequential(*[ResidualBlockNoBN(nf) for _ in range(nb)])
        if scale in (2, 4):
            self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
            if scale == 4:
                self.upconv2 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        elif scale == 3:
            self.upconv1 = nn.Conv2d(nf, nf * 9, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(3)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, in_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        _init_scaled(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nf == 0:
            if self.upscale == 1:
                return x
            return F.interpolate(x, scale_factor=self.upscale, mode="bicubic", align_corners=False)
        out = self.recon_trunk(self.lrelu(self.conv_first(x)))
        if self.upscale > 1:
            out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.HRconv(out)))
        if self.upscale == 1:
            return out + x
        base = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return out + base


def srresnet(scale: int = 4, in_channels: int = 3, nf: int = 64, nb: int = 16, **kw) -> MSRResNet:
    """Factory: width ``nf`` (36 / 52 / 64 in the paper), depth ``nb`` (16 blocks)."""
    if kw:
        raise InputError(f"srresnet got unknown arguments {sorted(kw)}; it takes nf and nb")
    return MSRResNet(scale=scale, in_channels=in_channels, nf=nf, nb=nb)


@hookimpl
def classsr_register_backbones(register):
    register(
        "srresnet",
        srresnet,
        width_arg="nf",
        depth_arg="nb",
        scales=(1, 2, 3, 4),
        paper_widths=PAPER_WIDTHS,
    )
