"""One image's run through the engine: what every stage (router, policy, executor) needs."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from classsr_core.base.costs import PatchCosts
from classsr_core.base.grid import PatchGrid
from classsr_core.device import synchronize


def weights_dtype(module: nn.Module | None) -> torch.dtype | None:
    """The dtype of ``module``'s floating weights: what its input must be when the model was
    cast (``model.half()``, ``model.to(torch.bfloat16)``). A weight-sharing branch holds no
    parameters of its own: its supernet's. ``None`` when it has none (e.g. bicubic)."""
    for source in (module, getattr(module, "supernet", None)):
        if isinstance(source, nn.Module):
            for t in itertools.chain(source.parameters(), source.buffers()):
                if t.is_floating_point():
                    return t.dtype
    return None


def as_input(batch: torch.Tensor, module: nn.Module | None) -> torch.Tensor:
    """``batch`` in the dtype of ``module``'s weights (no copy when it already is)."""
    dtype = weights_dtype(module)
    return batch if dtype is None or dtype == batch.dtype else batch.to(dtype)


@dataclass
class Run:
    """The LR image on its device, its grid and costs, and the clocks.

    ``lr`` is padded to the grid (``grid.height x grid.width``); ``height x width`` is the
    real image. It is float32 (float64 for a float64 model) even when the model's weights
    are cast to fp16 / bf16: routing statistics and the output canvas stay in full
    precision, as under autocast, and each network gets its input cast to its own weights'
    dtype (:func:`as_input`). ``options`` holds the executor's own keywords (``blend``,
    ``halo``, ...).
    """

    model: Any
    lr: torch.Tensor
    height: int
    width: int
    grid: PatchGrid
    costs: PatchCosts
    batch_sizes: list[int]
    device: torch.device
    to_uint8: bool  # the caller wants a uint8 image: executors may round as they write
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what an executor reports (halos)

    def __post_init__(self) -> None:
        # On CPU, oneDNN runs convolutions on channels-last (NHWC) input 5-40% faster
        # (SRResNet-36: 27 vs 40 ms per patch, docs/performance.md); the layout then
        # carries through the network. Elsewhere keep PyTorch's default layout.
        cpu = self.device.type == "cpu"
        self.layout = torch.channels_last if cpu else torch.contiguous_format
        p = self.grid.patch_size
        # (H-p+1, W-p+1, C, p, p) view of every possible patch, no copy: a batch is cut
        # from it with one gather that yields (B, C, p, p) directly.
        self._view = self.lr.unfold(2, p, 1).unfold(3, p, 1)[0].permute(1, 2, 0, 3, 4)
        self._ys = torch.tensor(self.grid.ys, device=self.device)
        self._xs = torch.tensor(self.grid.xs, device=self.device)
        for key in ("classify", "branches", "stitch"):
            self.timings.setdefault(key, 0.0)

    @property
    def num_patches(self) -> int:
        return len(self.grid)

    @property
    def image(self) -> torch.Tensor:
        """The LR image without the grid's padding."""
        return self.lr[:, :, : self.height, : self.width]

    def patches(self, idx: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        """LR patches ``idx`` (row-major grid indices on the device), ``(B, C, p, p)``; in
        the dtype of ``module``'s weights when one is given (see :func:`as_input`)."""
        cols = self.grid.cols
        batch = self._view[self._ys[idx // cols], self._xs[idx % cols]]
        return as_input(batch.contiguous(memory_format=self.layout), module)

    def now(self) -> float:
        """A clock reading after the device has finished its queued work."""
        synchronize(self.device)
        return time.perf_counter()
