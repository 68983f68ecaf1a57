"""What a task is: how a degraded input is made from a clean image, and how it is scored.

A task whose degradation cannot be synthesised (real rain, a camera's own noise) trains on
paired data instead (``data.train: {inputs: DIR, targets: DIR}``, docs/tasks/paired.md):
it needs only its ``scale`` and its scores, and may leave :meth:`Task.make_input` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classsr_core._basicsr import metrics  # cheap: basicsr itself loads on first call
from classsr_core.errors import InputError


@dataclass
class Task:
    """Base class of task plugins. ``scale`` is the output/input size ratio (1: restoration)."""

    name: str = "task"
    scale: int = 1

    def modcrop(self, hr: np.ndarray) -> np.ndarray:
        """Crop an HWC image so that both sides are multiples of ``scale``."""
        h, w = hr.shape[:2]
        return hr[: h - h % self.scale, : w - w % self.scale]

    def make_input(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The degraded input for a clean HWC float32 image in [0, 1]. A task without one
        (paired data only) says so when asked."""
        raise InputError(
            f"task {self.name!r} cannot make its inputs from clean images: train it on "
            "paired data (data.train: {inputs: DIR, targets: DIR}; docs/tasks/paired.md), "
            "and give it degraded images, not clean ones, to run on"
        )

    def crop_border(self) -> int:
        """Pixels cropped at each border before scoring (the SR convention: ``scale``)."""
        return self.scale

    def score(self, out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """PSNR and SSIM (RGB, 0..255) with basicsr's metrics."""
        psnr, ssim = metrics()
        a = np.clip(out * 255.0, 0, 255).round()
        b = np.clip(ref * 255.0, 0, 255).round()
        border = self.crop_border()
        return {
            "psnr": float(psnr(a, b, crop_border=border, input_order="HWC")),
            "ssim": float(ssim(a, b, crop_border=border, input_order="HWC")),
        }


def degraded_pairs(
    task: Task, images, seed: int = 0, uint8: bool = False
) -> list[tuple[np.ndarray, object]]:
    """``(clean, input)`` per clean HWC float image: the clean one cropped to the task's
    scale, the input the task's degradation of it as a ``(1, C, h, w)`` float tensor;
    ``uint8``: rounded to 8-bit levels, as a degraded photo read from disk is."""
    import torch

    rng = np.random.default_rng(seed)
    pairs = []
    for clean in images:
        clean = task.modcrop(clean)
        x = task.make_input(clean, rng)
        if uint8:
            x = np.clip(np.rint(x * 255.0), 0, 255) / 255.0
        pairs.append((clean, torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]))
    return pairs
