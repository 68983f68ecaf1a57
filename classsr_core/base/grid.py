"""The grid of LR patches that covers a whole image, and the padding for tiny images.

An image of any size is cut into LR patches of ``patch_size`` with ``stride`` (32 / 28 as
the paper). The last row and column of patches are moved back to end exactly at the image
edge, so every pixel is covered (the official code drops the strips that do not fit the
grid). An image smaller than one patch is padded at the bottom / right to the patch size
and the output cropped back: reflect padding (mirror, edge pixel not repeated) when the
missing part is smaller than the image, else replicate padding (repeat the edge pixel),
since reflection cannot pad beyond the image's own size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from classsr_core.checks import check_tiling
from classsr_core.errors import InputError


@dataclass(frozen=True)
class PatchGrid:
    """Top-left corners of the LR patches (in the padded image), row-major."""

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    patch_size: int
    stride: int
    height: int  # padded LR height
    width: int  # padded LR width

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    def __len__(self) -> int:
        return self.rows * self.cols

    def position(self, k: int) -> tuple[int, int]:
        """LR ``(y, x)`` of patch ``k`` (row-major)."""
        r, c = divmod(int(k), self.cols)
        return self.ys[r], self.xs[c]


def patch_grid(height: int, width: int, patch_size: int, stride: int) -> PatchGrid:
    """The grid :func:`infer` uses on an LR image of ``height x width`` (before padding)."""
    check_tiling(patch_size, stride)
    h, w = max(height, patch_size), max(width, patch_size)
    return PatchGrid(
        _starts(h, patch_size, stride), _starts(w, patch_size, stride), patch_size, stride, h, w
    )


def _starts(length: int, patch: int, stride: int) -> tuple[int, ...]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:  # align the last patch to the edge: cover everything
        starts.append(length - patch)
    return tuple(starts)


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom / right up to ``height x width`` (reflect where possible, else replicate)."""
    for dim, target in ((2, height), (3, width)):
        missing = target - x.shape[dim]
        if missing <= 0:
            continue
        pad = (0, 0, 0, missing) if dim == 2 else (0, missing, 0, 0)
        mode = "reflect" if missing < x.shape[dim] else "replicate"
        x = F.pad(x, pad, mode=mode)
    return x


def check_classes(classes, grid: PatchGrid, num_classes: int) -> torch.Tensor | None:
    if classes is None:
        return None
    c = torch.as_tensor(np.asarray(classes.cpu() if torch.is_tensor(classes) else classes))
    if c.is_floating_point() or c.dtype == torch.bool:
        raise InputError(f"classes must be integers, got dtype {c.dtype}")
    if tuple(c.shape) not in ((grid.rows, grid.cols), (len(grid),)):
        raise InputError(
            f"classes has shape {tuple(c.shape)} but this image has a {grid.rows} x {grid.cols} "
            f"patch grid; give ({grid.rows}, {grid.cols}) or ({len(grid)},) "
            "(see classsr_core.engine.grid.patch_grid)"
        )
    c = c.reshape(-1).long()
    if c.numel() and (c.min() < 0 or c.max() >= num_classes):
        raise InputError(
            f"classes must be in 0..{num_classes - 1} (one per branch), got "
            f"{int(c.min())}..{int(c.max())}"
        )
    return c
