"""RCAN as in the official ClassSR code: residual groups of channel-attention blocks.

``n_resgroups`` (10) groups of ``n_resblocks`` (20) RCABs (conv-ReLU-conv-channel attention
with reduction 16, plus the identity) and a closing conv per group, a conv after the
groups, the long skip, a pixel-shuffle upsampler and the DIV2K mean shift. Attribute names
are the official ones. Widths 36 / 50 / 64 have 4,940,707 / 9,521,827 / 15,592,379
parameters.

The official RCAN ran on 0..255 input (its classifier saw ``x / 255``). This project feeds
0..1 everywhere; ``rgb_range=255`` multiplies the input by 255 before the network and
divides the output by 255 after it, so an official checkpoint gives the official outputs.
The classifier then needs no change: the official one saw ``(255 x) / 255 = x``.
"""

from __future__ import annotations

import torch
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import InputError

from .carn import MeanShift
from .srresnet import _init_scaled

PAPER_WIDTHS = [36, 50, 64]


def default_conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 down by ``reduction``, ReLU, 1x1 up, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise InputError(
                f"rcan's channel attention needs n_feats >= reduction ({channels} < {reduction})"
            )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block (keys ``body.0``, ``body.2``, ``body.3.conv_du``)."""

    def __init__(self, n_feats: int, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats),
            nn.ReLU(inplace=True),
            default_conv(n_feats, n_feats),
            CALayer(n_feats, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs and a conv, plus the identity."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        blocks: list[nn.Module] = [RCAB(n_feats, reduction) for _ in range(n_resblocks)]
        blocks.append(default_conv(n_feats, n_feats))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """conv to r*r*n_feats then PixelShuffle(r), once per step (x4 = two x2 steps)."""
    modules: list[nn.Module] = []
    for r in {2: [2], 3: [3], 4: [2, 2]}[scale]:
        modules += [default_conv(n_feats, r * r * n_feats), nn.PixelShuffle(r)]
    return nn.Sequential(*modules)


class RCAN(nn.Module):
    """RCAN: ``n_feats`` is the width, ``n_resblocks`` the depth of each of ``n_resgroups``."""

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        n_feats: int = 64,
        n_resblocks: int = 20,
        n_resgroups: int = 10,
        reduction: int = 16,
        rgb_range: float = 1.0,
    ):
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise InputError(f"rcan upscales by 1, 2, 3 or 4, not {scale}")
        if rgb_range <= 0:
            raise InputError(f"rcan's rgb_range must be positive, got {rgb_range}")
        self.rgb_range = float(rgb_range)
        # The mean shift is on the network's own range. (The official file was trained
        # with rgb_range=1 in its mean shift although its data was 0..255; loading it
        # brings those values with it.)
        self.sub_mean = MeanShift(in_channels, self.rgb_range, sign=-1)
        self.head = nn.Sequential(default_conv(in_channels, n_feats))
        body: list[nn.Module] = [
            ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)
        ]
        body.append(default_conv(n_feats, n_feats))
        self.body = nn.Sequential(*body)
        tail: list[nn.Module] = [upsampler(scale, n_feats)] if scale > 1 else [nn.Identity()]
        tail.append(default_conv(n_feats, in_channels))
        self.tail = nn.Sequential(*tail)
        self.add_mean = MeanShift(in_channels, self.rgb_range, sign=1)
        _init_scaled(self.head, 0.1)
        _init_scaled(self.body, 0.1)
        _init_scaled(self.tail, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb_range != 1.0:
            x = x * self.rgb_range
        x = self.head(self.sub_mean(x))
        x = self.add_mean(self.tail(x + self.body(x)))
        if self.rgb_range != 1.0:
            x = x / self.rgb_range
        return x

    def extra_repr(self) -> str:
        return f"rgb_range={self.rgb_range:g}"


def rcan(
    scale: int = 4, in_channels: int = 3, n_feats: int = 64, n_resblocks: int = 20, **kw
) -> RCAN:
    """Factory: width ``n_feats`` (36 / 50 / 64 in the paper), depth ``n_resblocks`` (20 per
    group); also ``n_resgroups`` (10), ``reduction`` (16), ``rgb_range`` (1; 255 for the
    official checkpoints)."""
    extra = {k: kw.pop(k) for k in ("n_resgroups", "reduction", "rgb_range") if k in kw}
    if kw:
        raise InputError(
            f"rcan got unknown arguments {sorted(kw)}; it takes n_feats, n_resblocks, "
            "n_resgroups, reduction and rgb_range"
        )
    return RCAN(
        scale=scale, in_channels=in_channels, n_feats=n_feats, n_resblocks=n_resblocks, **extra
    )


@hookimpl
def classsr_register_backbones(register):
    register(
        "rcan",
        rcan,
        width_arg="n_feats",
        depth_arg="n_resblocks",
        scales=(1, 2, 3, 4),
        paper_widths=PAPER_WIDTHS,
    )
