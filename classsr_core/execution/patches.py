"""The paper's execution: every patch on its own, overlaps blended.

Patches are grouped by class and each branch runs only on its own group, in batches of the
run's batch size. Each output patch is added into an HR canvas and the canvas is divided
by the summed weights: the mean over overlaps (``blend="mean"``, as the paper), or a smooth
separable window that favours patch centres (``blend="window"``). Patches are cut from a
strided view of the LR image per batch, so memory is the LR image, the HR canvas and one
batch: an 8K output never holds all patch outputs at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import field_validator

from classsr_core.base.run import Run
from classsr_core.errors import InputError
from classsr_core.execution.base import Executor, ExecutorOptions
from classsr_core.plugins.hookspecs import hookimpl

BLENDS = ("mean", "window")


class PatchesOptions(ExecutorOptions):
    """The options of ``mode="patches"``."""

    blend: str = "mean"  # "mean": overlaps averaged (the paper); "window": patch centres favoured

    @field_validator("blend", mode="before")
    @classmethod
    def _blend(cls, value: Any) -> str:
        if value not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {value!r}")
        return value


class PatchesExecutor(Executor):
    name = "patches"
    options_model = PatchesOptions

    def band_margin(self, model, options: dict[str, Any], device: torch.device) -> int:
        # The patch rows that overlap a band's kept rows are all it needs: each kept pixel
        # then sums the same patch outputs, in the same order, as on the whole image.
        return 0

    def execute(self, run: Run, assign: torch.Tensor) -> tuple[Any, float, float, int]:
        canvas = _run_patches(run, assign, run.options.get("blend", "mean"))
        scale = run.model.scale
        hr = canvas[None, :, : run.height * scale, : run.width * scale]
        counts = torch.bincount(assign, minlength=len(run.model.branches)).tolist()
        flops, fraction = run.costs.spent_on_patches(run.num_patches, counts)
        return hr, flops, fraction, run.num_patches


def _window(size: int, blend: str, dev: torch.device) -> torch.Tensor:
    if blend == "mean":
        return torch.ones(size, device=dev)
    # Raised cosine sampled at pixel centres: smooth, largest in the middle, never zero
    # (pixels at the image edge are covered by one patch only and must keep a weight).
    t = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) / size
    return (0.5 - 0.5 * torch.cos(2 * math.pi * t)).clamp_min(1e-3)


def _coverage(starts, length: int, scale: int, win: torch.Tensor) -> torch.Tensor:
    """Summed 1D weights along one axis; the 2D weight map is their outer product because
    the patches form a full grid (rows x cols)."""
    w = torch.zeros(length * scale, device=win.device)
    ps = win.numel()
    for start in starts:
        w[start * scale : start * scale + ps] += win
    return w


def _divide(canvas: torch.Tensor, weight: torch.Tensor, dim: int) -> None:
    """Divide ``canvas`` in place by ``weight`` along ``dim``, skipping runs of weight 1.

    With the mean blend only the overlap strips (4 of every 28 rows / columns at 32/28)
    have a weight other than 1, so this touches a fraction of the HR canvas.
    """
    w = weight.cpu().numpy()
    todo = np.flatnonzero(w != 1.0)
    if todo.size == 0:
        return
    # split the indices into contiguous runs [start, stop)
    breaks = np.flatnonzero(np.diff(todo) != 1) + 1
    for run in np.split(todo, breaks):
        start, stop = int(run[0]), int(run[-1]) + 1
        shape = [1, 1, 1]
        shape[dim] = stop - start
        canvas.narrow(dim, start, stop - start).div_(weight[start:stop].view(shape))


def _run_patches(run: Run, routed_cpu: torch.Tensor, blend: str) -> torch.Tensor:
    """Each branch on its own patches, in batches; each output added into the HR canvas
    and the canvas divided by the summed blend weights. Returns the padded HR canvas."""
    model, grid, dev, timings = run.model, run.grid, run.device, run.timings
    p, scale, sizes, now = grid.patch_size, model.scale, run.batch_sizes, run.now
    ps = p * scale
    win = _window(ps, blend, dev)  # (ps,) separable weights
    win2 = win[:, None] * win[None, :]
    canvas = None
    for i, branch in enumerate(model.branches):
        bs = sizes[i]
        t_branch = 0.0
        idx_all = (routed_cpu == i).nonzero(as_tuple=True)[0]
        for start in range(0, idx_all.numel(), bs):
            idx = idx_all[start : start + bs]
            t0 = now()
            out = branch(run.patches(idx.to(dev), branch))
            t1 = now()
            t_branch += t1 - t0
            if out.shape[-2:] != (ps, ps):
                raise InputError(
                    f"branch {i} maps a {p}x{p} patch to {tuple(out.shape[-2:])}, "
                    f"not {ps}x{ps}: it does not upscale by the model's scale {scale}"
                )
            if canvas is None:
                # A normal tensor (not an inference tensor): it is updated in place
                # here and handed to the caller without a copy.
                with torch.inference_mode(False):
                    canvas = torch.zeros(
                        out.shape[1], grid.height * scale, grid.width * scale, device=dev
                    )
                # On CPU, add through numpy: a torch add of one patch is big enough
                # to be split over OpenMP threads, and on a busy machine waiting for
                # a descheduled thread made stitching ~100x slower (performance.md).
                target = canvas.numpy() if dev.type == "cpu" else canvas
            out = out.float()
            if blend == "window":
                out = out * win2
            if dev.type == "cpu":
                out = out.numpy()
            for k, j in enumerate(idx.tolist()):
                y, xx = grid.position(j)
                y, xx = y * scale, xx * scale
                target[:, y : y + ps, xx : xx + ps] += out[k]
            timings["stitch"] += now() - t1
        timings[f"branch_{i}"] = t_branch
        timings["branches"] += t_branch

    t0 = now()
    _divide(canvas, _coverage(grid.ys, grid.height, scale, win), dim=1)
    _divide(canvas, _coverage(grid.xs, grid.width, scale, win), dim=2)
    timings["stitch"] += now() - t0
    return canvas


@hookimpl
def classsr_register_executors(register):
    """Gathered by the ``builtin_executors`` entry point (classsr_plugins.executors.builtin)."""
    register(
        "patches",
        PatchesExecutor,
        description="every patch on its own, overlaps averaged (the paper)",
    )
