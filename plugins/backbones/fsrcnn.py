"""FSRCNN as in the official ClassSR code (``FSRCNN_net``), with its quirks.

Layout (attribute names are the official ones, so an official state dict loads unchanged):
``head_conv`` 5x5 conv + PReLU; ``body_conv``: 1x1 shrink + PReLU, ``m`` 3x3 convs with a
*single* PReLU after the last one (not one per conv), 1x1 expand + PReLU; ``tail_conv`` a
9x9 transposed conv with stride ``scale``. Three branches of widths 16 / 36 / 56 have
10,755 / 17,635 / 24,515 parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import InputError

PAPER_WIDTHS = [16, 36, 56]


def deconv_padding(scale: int, kernel: int = 9) -> tuple[int, int]:
    """``(padding, output_padding)`` so a ``kernel`` transposed conv of stride ``scale`` maps
    ``h`` to exactly ``scale * h``.

    Output size is ``(h - 1) * s - 2p + k + op``; we need ``-s - 2p + k + op = 0`` with
    ``0 <= op < s`` (or ``op = 0`` at stride 1). x4 gives the official (3, 1).
    """
    padding = math.ceil((kernel - scale) / 2)
    output_padding = scale + 2 * padding - kernel
    if padding < 0 or not 0 <= output_padding < max(scale, 1):
        raise InputError(f"FSRCNN's {kernel}x{kernel} deconvolution cannot upscale by {scale}")
    return padding, output_padding


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m): ``d`` is the width, ``m`` the number of 3x3 mapping convs."""

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        d: int = 56,
        s: int = 12,
        m: int = 4,
        init_scale: float = 0.1,
        skip: str | None = None,
    ):
        super().__init__()
        if skip not in (None, "bicubic", "bilinear"):
            raise InputError(f"fsrcnn skip must be None, 'bicubic' or 'bilinear', got {skip!r}")
        # Not in the paper: with a skip the network learns the residual over an
        # interpolated copy of its input (as MSRResNet's bilinear skip), so it starts at
        # bicubic quality instead of from black; short CPU schedules need this.
        self.skip = skip
        self.scale = scale
        if d == 0:
            # Width 0 is the skip alone: no network, just the interpolation. As the cheapest
            # branch of a ClassSR model it sends smooth patches through bicubic at ~1% of a
            # network's cost (docs/performance.md).
            if skip is None:
                raise InputError(
                    "fsrcnn width d=0 is the skip connection alone; give skip='bicubic' "
                    "(or 'bilinear'), or a width of at least 1"
                )
            self.head_conv = self.body_conv = self.tail_conv = None
            return
        if d < 0:
            raise InputError(f"fsrcnn width d must be 0 or more, got {d}")
        if m < 1:
            raise InputError(f"FSRCNN needs at least one mapping conv (m >= 1), got m={m}")
        self.head_conv = nn.Sequential(nn.Conv2d(in_channels, d, 5, 1, 2), nn.PReLU())
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(d, s, 1), nn.PReLU())]
        layers += [nn.Conv2d(s, s, 3, 1, 1) for _ in range(m)]
        layers.append(nn.PReLU())  # the official code has one PReLU after the m convs
        layers.append(nn.Sequential(nn.Conv2d(s, d, 1), nn.PReLU()))
        self.body_conv = nn.Sequential(*layers)
        padding, output_padding = deconv_padding(scale)
        self.tail_conv = nn.ConvTranspose2d(
            d, in_channels, 9, stride=scale, padding=padding, output_padding=output_padding
        )
        # Official init: Kaiming x0.1 on the convolutions (the transposed conv keeps
        # PyTorch's default, as nn.ConvTranspose2d is not an nn.Conv2d there either). The
        # 0.1 shrinks the signal ~1e5-fold through five convs: at short CPU schedules plain
        # Kaiming (init_scale=1) trains several times faster (docs/model-zoo.md).
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0, mode="fan_in")
                mod.weight.data.mul_(init_scale)
                nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip:
            # On CPU, interpolation of channels-last input (the tile engine's layout there)
            # runs 1.8x slower than of the default layout (bicubic x4, 2 threads).
            up = nn.functional.interpolate(
                x.contiguous(), scale_factor=self.scale, mode=self.skip, align_corners=False
            )
            if self.tail_conv is None:
                return up
        out = self.tail_conv(self.body_conv(self.head_conv(x)))
        return out + up if self.skip else out


def fsrcnn(scale: int = 4, in_channels: int = 3, d: int = 56, m: int = 4, **kw) -> FSRCNN:
    """Factory: width ``d`` (16 / 36 / 56 in the paper), depth ``m`` (4), ``s`` (12)."""
    s = kw.pop("s", 12)
    init_scale = kw.pop("init_scale", 0.1)
    skip = kw.pop("skip", None)
    if kw:
        raise InputError(
            f"fsrcnn got unknown arguments {sorted(kw)}; it takes d, m, s, init_scale and skip"
        )
    return FSRCNN(
        scale=scale, in_channels=in_channels, d=d, s=s, m=m, init_scale=init_scale, skip=skip
    )


@hookimpl
def classsr_register_backbones(register):
    register(
        "fsrcnn",
        fsrcnn,
        width_arg="d",
        depth_arg="m",
        scales=(1, 2, 3, 4),
        paper_widths=PAPER_WIDTHS,
    )
