"""CARN-M as in the official ClassSR code (``CARN_M``, group 4), with its quirks.

Each cascading block reuses *one* residual block (``b1``) three times; the 1x1 fusion
layers (``c1``..``c3``) are conv (no bias) + BatchNorm + ReLU; the input is shifted by the
DIV2K mean (0.4488, 0.4371, 0.4040) on 0..1 data and shifted back at the end. Attribute
names are the official ones. Widths 36 / 52 / 64 have 94,851 / 195,651 / 294,939
parameters (the two mean-shift 1x1 convs included, as the official count does).
"""

from __future__ import annotations

import torch
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import InputError

PAPER_WIDTHS = [36, 52, 64]
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Add (``sign=1``) or subtract (``sign=-1``) ``rgb_range * mean`` as a frozen 1x1 conv.

    A conv rather than a buffer so the official state-dict keys (``sub_mean.weight``,
    ``sub_mean.bias``) and parameter counts match. The official code meant to freeze it
    (``self.requires_grad = False`` on the module, which freezes nothing); here it is
    frozen for real. Inputs that are not RGB use the mean of the DIV2K means per channel.
    """

    def __init__(self, channels: int = 3, rgb_range: float = 1.0, sign: int = -1):
        super().__init__(channels, channels, kernel_size=1)
        mean = DIV2K_MEAN if channels == 3 else (sum(DIV2K_MEAN) / 3,) * channels
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


def basic_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """The official ``BasicBlock``: 1x1 conv without bias, BatchNorm, ReLU (keys .0 / .1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class EResidualBlock(nn.Module):
    """Grouped 3x3, ReLU, grouped 3x3, ReLU, 1x1; then ReLU(out + x)."""

    def __init__(self, nf: int, group: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class Block(nn.Module):
    """A cascading block: the *same* residual block ``b1`` applied three times."""

    def __init__(self, nf: int, group: int = 4):
        super().__init__()
        self.b1 = EResidualBlock(nf, group)
        self.c1 = basic_block(nf * 2, nf)
        self.c2 = basic_block(nf * 3, nf)
        self.c3 = basic_block(nf * 4, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x
        o = x
        for fuse in (self.c1, self.c2, self.c3):
            c = torch.cat([c, self.b1(o)], dim=1)
            o = fuse(c)
        return o


class _Upsample(nn.Module):
    """Official ``_UpsampleBlock``: [grouped conv to r*r*nf, ReLU, PixelShuffle(r)] per step."""

    def __init__(self, nf: int, scale: int, group: int = 4):
        super().__init__()
        steps = {1: [], 2: [2], 3: [3], 4: [2, 2]}[scale]
        modules: list[nn.Module] = []
        for r in steps:
            modules += [
                nn.Conv2d(nf, r * r * nf, 3, 1, 1, groups=group),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(r),
            ]
        self.body = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpsampleBlock(nn.Module):
    """Holds ``up`` so the keys read ``upsample.up.body.N`` as in the official file."""

    def __init__(self, nf: int, scale: int, group: int = 4):
        super().__init__()
        self.up = _Upsample(nf, scale, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class CARN_M(nn.Module):  # noqa: N801  (the official class name)
    """CARN-M: ``nf`` is the width, ``n_blocks`` the number of cascading blocks (3)."""

    def __init__(
        self, scale: int = 4, in_channels: int = 3, nf: int = 64, n_blocks: int = 3, group: int = 4
    ):
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise InputError(f"carn_m upscales by 1, 2, 3 or 4, not {scale}")
        if nf % group:
            raise InputError(f"carn_m's width nf={nf} must be a multiple of group={group}")
        if n_blocks < 1:
            raise InputError(f"carn_m needs at least one block, got n_blocks={n_blocks}")
        self.scale = scale
        self.n_blocks = n_blocks
        self.sub_mean = MeanShift(in_channels, 1.0, sign=-1)
        self.add_mean = MeanShift(in_channels, 1.0, sign=1)
        self.entry = nn.Conv2d(in_channels, nf, 3, 1, 1)
        # b1..bN and c1..cN as attributes (not a ModuleList) to keep the official keys.
        for i in range(1, n_blocks + 1):
            setattr(self, f"b{i}", Block(nf, group))
            setattr(self, f"c{i}", basic_block(nf * (i + 1), nf))
        self.upsample = UpsampleBlock(nf, scale, group)
        self.exit = nn.Conv2d(nf, in_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(self.sub_mean(x))
        c = x
        o = x
        for i in range(1, self.n_blocks + 1):
            c = torch.cat([c, getattr(self, f"b{i}")(o)], dim=1)
            o = getattr(self, f"c{i}")(c)
        return self.add_mean(self.exit(self.upsample(o)))


def carn_m(scale: int = 4, in_channels: int = 3, nf: int = 64, n_blocks: int = 3, **kw) -> CARN_M:
    """Factory: width ``nf`` (36 / 52 / 64 in the paper), depth ``n_blocks`` (3), ``group`` (4)."""
    group = kw.pop("group", 4)
    if kw:
        raise InputError(f"carn_m got unknown arguments {sorted(kw)}; it takes nf, n_blocks, group")
    return CARN_M(scale=scale, in_channels=in_channels, nf=nf, n_blocks=n_blocks, group=group)


@hookimpl
def classsr_register_backbones(register):
    register(
        "carn_m",
        carn_m,
        width_arg="nf",
        depth_arg="n_blocks",
        scales=(1, 2, 3, 4),
        paper_widths=PAPER_WIDTHS,
    )
