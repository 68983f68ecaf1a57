"""What :func:`classsr_core.engine.pipeline.infer` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classsr_core.base.grid import PatchGrid


@dataclass
class InferResult:
    """What :func:`infer` returns (see ``docs`` and ``shared/api.md``)."""

    output: Any  # torch.Tensor or uint8 numpy array, same kind as the input
    class_map: np.ndarray  # (rows, cols) int64: the class of every patch
    class_counts: list[int]  # patches per class, cheapest branch first
    flops: float  # fvcore multiply-adds spent, classifier included
    flops_fraction: float  # flops / (patches x widest branch's flops, no classifier)
    timings: dict[str, float]  # seconds: classify, branches, stitch, total (+ per branch)
    probs: np.ndarray | None = None  # (rows, cols, M) classifier probabilities
    grid: PatchGrid | None = None
    patch_size: int = 0  # LR patch size and stride used
    stride: int = 0
    scale: int = 1
    batch_sizes: list[int] = field(default_factory=list)  # patches per call, per branch
    blend: str = "mean"
    device: str = "cpu"
    padding: tuple[int, int] = (0, 0)  # LR rows / cols added at the bottom / right
    flops_per_patch: dict[str, Any] = field(default_factory=dict)  # classifier, branches
    mode: str = "patches"
    halos: list[int] = field(default_factory=list)  # regions: LR halo per branch
    tiles: int = 0  # branch inputs run: patches, or merged rectangles in "regions" mode
    router: str = "classifier"  # or "edge" (flops_per_patch["classifier"] is then its cost)

    @property
    def num_patches(self) -> int:
        return int(self.class_map.size)

    @property
    def origins(self) -> np.ndarray:
        """``(rows * cols, 2)`` LR ``(y, x)`` top-left corners, row-major like class_map."""
        if self.grid is None:
            return np.zeros((0, 2), dtype=np.int64)
        ys, xs = np.meshgrid(self.grid.ys, self.grid.xs, indexing="ij")
        return np.stack([ys.reshape(-1), xs.reshape(-1)], axis=1).astype(np.int64)
