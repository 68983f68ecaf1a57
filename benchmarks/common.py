"""What the benchmarks share (tile_engine.py, speed.py): the official ClassSR test loop and
the machine's description.

The official loop: each LR patch goes alone (batch 1) through the classifier and then one
branch, in a Python loop, and overlaps are averaged: what the official test code does, on
the engine's grid (the last row and column moved back to the image edge, so the borders
are covered too).
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

from classsr_core.engine import patch_grid


def official_loop(
    model, x: torch.Tensor, classes=None, p: int | None = None, s: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """``(HR float32 tensor on x's device, class of every patch)`` for ``x`` ``(1, C, H, W)``.

    ``classes`` (one per patch, row-major) forces each patch's branch; the classifier still
    runs on every patch, as in the official code. Default: the classifier's argmax.
    """
    p = int(p or model.patch_size)
    s = int(s or model.stride)
    grid = patch_grid(x.shape[2], x.shape[3], p, s)
    sc = model.scale
    size = (1, x.shape[1], x.shape[2] * sc, x.shape[3] * sc)
    out = torch.zeros(size, device=x.device)
    weight = torch.zeros(1, 1, *size[2:], device=x.device)
    picked = np.zeros(len(grid), dtype=np.int64)
    with torch.inference_mode():
        for k in range(len(grid)):
            y, c = grid.position(k)
            patch = x[:, :, y : y + p, c : c + p]
            choice = None if model.classifier is None else model.classifier(patch).argmax(1)
            if classes is not None:
                picked[k] = int(classes[k])
            elif choice is not None:
                picked[k] = int(choice)  # waits for the device, as the official indexing does
            sr = model.branches[int(picked[k])](patch)
            out[..., y * sc : (y + p) * sc, c * sc : (c + p) * sc] += sr.float()
            weight[..., y * sc : (y + p) * sc, c * sc : (c + p) * sc] += 1
    return out / weight, picked


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, device: torch.device | None = None) -> str:
    text = f"{cpu_name()}, {os.cpu_count()} cores, {threads} torch threads"
    text += f", torch {torch.__version__}"
    if device is not None and device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    if device is not None:
        text += f", device {device}"
    return text + f", load average {os.getloadavg()[0]:.2f}"


# -- MATLAB bicubic resize without basicsr -------------------------------------------------


def _cubic(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    near = (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
    return near + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


def _resize_axis(img: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Resize one axis of ``img`` as MATLAB's ``imresize`` (bicubic, antialiased when
    shrinking, symmetric borders), in float32 like basicsr's port, one kernel tap at a time
    (an 8K image never needs a gather of all taps at once)."""
    n = img.shape[dim]
    m = math.ceil(n * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.linspace(1, m, m)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.linspace(0, taps - 1, taps)[None]  # 1-based, MATLAB
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(1, keepdim=True)
    idx = idx.long() - 1
    idx = torch.where(idx < 0, -idx - 1, idx)  # symmetric padding: -1 -> 0, -2 -> 1
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    shape = [1] * img.dim()
    shape[dim] = m
    out = torch.zeros(img.shape[:dim] + (m,) + img.shape[dim + 1 :], dtype=torch.float32)
    for j in range(taps):
        out += w[:, j].view(shape) * img.index_select(dim, idx[:, j])
    return out


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` (bicubic, antialiased when shrinking) of an HWC
    float image in [0, 1], unclipped: the resize ``classsr_core._basicsr.imresize`` takes
    from basicsr, without basicsr (the GPU check runs where it is not installed). Height
    first, then width, in float32, as basicsr; its outputs agree to float32 rounding."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    return _resize_axis(_resize_axis(t, 0, scale), 1, scale).numpy()
