"""Region execution: same-class patches merged into larger tiles with a halo.

The paper's tiling runs every 32x32 patch on its own, with a stride of 28: each LR pixel
is computed about 1.31 times, and each patch sees only 2 pixels of context across its
seams. Here the patch grid is turned into a partition of the image into *cells* (each
patch owns the part of itself nearest to it: the overlaps are split down the middle),
neighbouring cells of the same class are merged into rectangles, and each rectangle runs
through its branch once, with a margin (``halo``) of real image around it that is cropped
off the output. With a halo as wide as the branch's receptive field, every output pixel is
exactly what the branch gives on the whole image; at the image border tiles stop at the
edge, as the whole-image run does. Nothing is averaged: every HR pixel is written once.

The price of a rectangle of ``h x w`` LR pixels is ``(h + 2 halo) (w + 2 halo)``: large
rectangles (smooth skies, whole textured areas) approach the image's own pixel count,
isolated cells pay more than a patch. Rectangles are capped at ``max_cells`` cells a side
so memory stays flat in the image size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import field_validator, model_validator
from torch import nn

from classsr_core.base.run import Run, as_input, weights_dtype
from classsr_core.errors import InputError
from classsr_core.execution.base import Executor, ExecutorOptions, cell_bounds
from classsr_core.plugins.hookspecs import hookimpl

# A halo beyond this many LR pixels buys little: outputs deep inside a network's receptive
# field barely depend on its rim, and the halo's cost grows with its width.
HALO_CAP = 8
MAX_CELLS = 8  # rectangles at most 8 x 8 cells (224 x 224 LR pixels at stride 28)


@dataclass(frozen=True)
class Rect:
    """Cells ``[r0, r1) x [c0, c1)`` of one class, as LR pixels ``[y0, y1) x [x0, x1)``."""

    cls: int
    r0: int
    r1: int
    c0: int
    c1: int
    y0: int
    y1: int
    x0: int
    x1: int


def merge_cells(class_map: np.ndarray, max_cells: int = MAX_CELLS) -> list[tuple[int, ...]]:
    """Cover a ``(rows, cols)`` class map with same-class rectangles ``(cls, r0, r1, c0, c1)``.

    Greedy, in raster order: from the first uncovered cell, extend right while the class
    holds, then down while the whole row segment holds; at most ``max_cells`` a side. Every
    cell is covered exactly once.
    """
    rows, cols = class_map.shape
    used = np.zeros((rows, cols), dtype=bool)
    rects = []
    for r in range(rows):
        for c in range(cols):
            if used[r, c]:
                continue
            k = class_map[r, c]
            c1 = c + 1
            while c1 < cols and c1 - c < max_cells and class_map[r, c1] == k and not used[r, c1]:
                c1 += 1
            r1 = r + 1
            while (
                r1 < rows
                and r1 - r < max_cells
                and np.all(class_map[r1, c:c1] == k)
                and not used[r1, c:c1].any()
            ):
                r1 += 1
            used[r:r1, c:c1] = True
            rects.append((int(k), r, r1, c, c1))
    return rects


def rectangles(
    class_map: np.ndarray, ys, xs, patch_size: int, height: int, width: int, max_cells: int
) -> list[Rect]:
    by = cell_bounds(ys, patch_size, height)
    bx = cell_bounds(xs, patch_size, width)
    return [
        Rect(k, r0, r1, c0, c1, int(by[r0]), int(by[r1]), int(bx[c0]), int(bx[c1]))
        for k, r0, r1, c0, c1 in merge_cells(class_map, max_cells)
    ]


def receptive_radius(
    branch: nn.Module, in_channels: int, scale: int, cap: int = HALO_CAP, device=None
) -> int:
    """How many LR pixels around a pixel its HR outputs depend on, at most ``cap``.

    Measured, not declared: the gradient of the central output block with respect to a
    random input is non-zero exactly on the receptive field (random input keeps ReLUs
    active; a zero-gradient rim pixel only makes the halo smaller than it could be).
    Returns ``cap`` when the field reaches past it.
    """
    size = 2 * (cap + 2) + 1
    centre = size // 2
    was = branch.training
    branch.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            # In float32 even for a model cast to fp16 / bf16 or run under autocast: small
            # gradients at the field's rim underflow to zero in fp16 (a halo too narrow),
            # and numpy has no bf16.
            probe = _float32(branch)
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(1, in_channels, size, size, generator=gen).to(device)
            x.requires_grad_(True)
            with torch.autocast(x.device.type, enabled=False):
                out = probe(as_input(x, probe))
            lo, hi = centre * scale, (centre + 1) * scale
            out[..., lo:hi, lo:hi].float().sum().backward()
            grad = x.grad.float().abs().sum(dim=(0, 1)).cpu().numpy()
    finally:
        branch.train(was)
    hit = np.argwhere(grad > 0)
    if hit.size == 0:  # constant output (e.g. a zero-initialised residual): no halo needed
        return 0
    radius = int(np.abs(hit - centre).max())
    return min(radius, cap)


def _float32(branch: nn.Module) -> nn.Module:
    """``branch``, or a float32 copy of it when its weights are fp16 / bf16 (a weight-sharing
    branch: a standalone copy of its slices)."""
    dtype = weights_dtype(branch)
    if dtype is None or dtype.itemsize >= 4:
        return branch
    probe = branch.as_module() if hasattr(branch, "as_module") else copy.deepcopy(branch)
    return probe.float().eval()


def tile_batches(rects: list[Rect], halos: list[int], height: int, width: int) -> list:
    """Group rectangles into batches of equal tile shape, per class.

    Returns ``[(cls, [(rect, (ty0, ty1, tx0, tx1)), ...]), ...]``: the LR window each tile
    reads, the rectangle grown by its class's halo and clipped to the image."""
    groups: dict[tuple[int, int, int], list] = {}
    for rect in rects:
        h = halos[rect.cls]
        win = (max(rect.y0 - h, 0), min(rect.y1 + h, height), max(rect.x0 - h, 0))
        win = (*win, min(rect.x1 + h, width))
        key = (rect.cls, win[1] - win[0], win[3] - win[2])
        groups.setdefault(key, []).append((rect, win))
    return [(key[0], groups[key]) for key in sorted(groups)]


def tile_pixels(tiles) -> int:
    return sum((w[1] - w[0]) * (w[3] - w[2]) for _, w in tiles)


def per_pixel(cost: float, patch_size: int) -> float:
    """Multiply-adds per LR pixel from a per-patch count (convolutions scale with area)."""
    return cost / (patch_size * patch_size) if not math.isnan(cost) else math.nan


def class_pixels(batches, m: int) -> list[int]:
    """LR pixels each of ``m`` branches runs on, from :func:`tile_batches`."""
    pixels = [0] * m
    for cls, group in batches:
        pixels[cls] += tile_pixels(group)
    return pixels


def _whole(name: str, value: Any, low: int, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < low:
        raise ValueError(f"{name} must be {what}, got {value}")
    return number


class RegionsOptions(ExecutorOptions):
    """The options of ``mode="regions"``."""

    # LR pixels of context around each tile, every branch alike; None: each branch's
    # measured receptive field, narrowed to the halo the model records (halos_for).
    halo: int | None = None
    max_cells: int = MAX_CELLS  # the largest tile, in cells a side

    @model_validator(mode="before")
    @classmethod
    def _blend(cls, data: Any) -> Any:
        # ``blend="mean"`` is what regions do anyway (nothing overlaps): accepted, as before
        # options were the executor's; any other blend is an error that says why.
        if isinstance(data, dict) and "blend" in data:
            if data["blend"] != "mean":
                raise ValueError("blend applies to mode='patches' only: regions do not overlap")
            data = {k: v for k, v in data.items() if k != "blend"}
        return data

    @field_validator("halo", mode="before")
    @classmethod
    def _halo(cls, value: Any) -> int | None:
        return None if value is None else _whole("halo", value, 0, "0 or more LR pixels")

    @field_validator("max_cells", mode="before")
    @classmethod
    def _max_cells(cls, value: Any) -> int:
        return _whole("max_cells", value, 1, "at least 1")


class RegionsExecutor(Executor):
    """Same-class patches merged into rectangles with a halo (module docstring)."""

    name = "regions"
    options_model = RegionsOptions

    def default_stride(self, model, patch_size: int) -> int:
        # Regions need no overlap (halos give the context): the routing grid defaults to
        # side-by-side patches, 1.31x fewer than at the paper's 32 / 28.
        return int(patch_size)

    def prepare(self, run: Run) -> None:
        run.info["halos"] = halos_for(run.model, run.options.get("halo"), run.device)
        cap = run.options.get("max_cells")
        run.info["max_cells"] = MAX_CELLS if cap is None else int(cap)

    def band_margin(self, model, options: dict[str, Any], device: torch.device) -> int:
        # A kept pixel's tile reads its halo of real image around it: the patch rows within
        # the widest halo must be there to lend their pixels.
        return max(halos_for(model, options.get("halo"), device), default=0)

    def band_classes(self, classes: np.ndarray, keep: slice) -> np.ndarray:
        # Context rows only lend their pixels to the halos: their outputs are cropped off,
        # so they run the cheapest branch.
        forced = np.zeros_like(classes)
        forced[keep] = classes[keep]
        return forced

    def plan(self, run: Run, assign: np.ndarray) -> tuple[list, tuple[float, float]]:
        """The tile batches of an assignment, and their multiply-adds and fraction."""
        grid, m = run.grid, len(run.model.branches)
        cells = np.asarray(assign).reshape(grid.rows, grid.cols)
        # The real image, not the padded one: tiles need no whole patches, so they stop
        # at its edge exactly as a whole-image run does.
        rects = rectangles(
            cells, grid.ys, grid.xs, grid.patch_size, run.height, run.width, run.info["max_cells"]
        )
        batches = tile_batches(rects, run.info["halos"], run.height, run.width)
        pixels = class_pixels(batches, m)
        return batches, run.costs.spent_on_pixels(len(grid), pixels, run.height * run.width)

    def fraction_of(self, run: Run):
        return lambda assign: self.plan(run, assign)[1][1]

    def execute(self, run: Run, assign: torch.Tensor) -> tuple[Any, float, float, int]:
        batches, (flops, fraction) = self.plan(run, assign.numpy())
        canvas, tiles = _run_regions(run, batches)
        # uint8 out: each tile was rounded into an HWC uint8 canvas as it was written (every
        # pixel once), never a float canvas plus a whole-image pass.
        hr = canvas if run.to_uint8 else canvas[None]  # tiles stop at the image's edge
        return hr, flops, fraction, tiles


def halos_for(model, halo: int | None, dev: torch.device) -> list[int]:
    """LR halo per branch: the given one; else each branch's receptive field (capped,
    measured once per branch and kept on the module), narrowed to the halo the model
    records for itself (``model.defaults["halo"]``: measured to cost nothing visible,
    :func:`classsr_core.routing.calibration.measure_halo`)."""
    if halo is not None:
        return [int(halo)] * len(model.branches)
    recorded = getattr(model, "defaults", {}).get("halo")
    out = []
    for branch in model.branches:
        radius = getattr(branch, "_classsr_receptive_radius", None)
        if radius is None:
            radius = receptive_radius(branch, model.in_channels, model.scale, device=dev)
            branch._classsr_receptive_radius = radius
        out.append(radius if recorded is None else min(radius, int(recorded)))
    return out


def _run_regions(run: Run, batches) -> tuple[Any, int]:
    """Each rectangle through its branch with its halo (``batches`` of
    :func:`classsr_core.execution.regions.tile_batches`); every HR pixel written once.

    Tiles of one class and shape go in batches holding about as many pixels as a patch
    batch of that branch would. Returns the HR canvas, ``(C, H, W)`` float, or with
    ``run.to_uint8`` ``(H, W, C)`` uint8 rounded as ``engine.convert.from_tensor`` does (a
    numpy array on the CPU), and the number of tiles run."""
    model, dev, timings, sizes = run.model, run.device, run.timings, run.batch_sizes
    p, scale, to_uint8, layout, lr = (
        run.grid.patch_size,
        model.scale,
        run.to_uint8,
        run.layout,
        run.image,
    )
    height, width = run.height, run.width
    canvas = target = None
    tiles = 0
    for cls, group in batches:
        ty0, ty1, tx0, tx1 = group[0][1]
        area = (ty1 - ty0) * (tx1 - tx0)
        per_call = max(1, sizes[cls] * p * p // area)
        for start in range(0, len(group), per_call):
            chunk = group[start : start + per_call]
            batch = torch.cat([lr[:, :, w[0] : w[1], w[2] : w[3]] for _, w in chunk])
            t0 = run.now()
            branch = model.branches[cls]
            out = branch(as_input(batch.contiguous(memory_format=layout), branch))
            t1 = run.now()
            timings[f"branch_{cls}"] = timings.get(f"branch_{cls}", 0.0) + t1 - t0
            timings["branches"] += t1 - t0
            tiles += len(chunk)
            if out.shape[-2:] != ((ty1 - ty0) * scale, (tx1 - tx0) * scale):
                raise InputError(
                    f"branch {cls} maps a {ty1 - ty0}x{tx1 - tx0} tile to "
                    f"{tuple(out.shape[-2:])}: it does not upscale by the model's scale {scale}"
                )
            if canvas is None:
                # Every pixel is written exactly once: no zero fill needed.
                shape = (out.shape[1], height * scale, width * scale)
                with torch.inference_mode(False):
                    if to_uint8:
                        shape = (*shape[1:], shape[0])
                        canvas = torch.empty(shape, dtype=torch.uint8, device=dev)
                    else:
                        canvas = torch.empty(shape, device=dev)
                target = canvas.numpy() if dev.type == "cpu" else canvas  # see the patch path
            out = out.float()
            if to_uint8:  # NHWC: a free view of the channels-last output on CPU
                out = out.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
            if dev.type == "cpu":
                out = out.numpy()
            for b, (rect, win) in enumerate(chunk):
                oy, ox = (rect.y0 - win[0]) * scale, (rect.x0 - win[2]) * scale
                hh, ww = (rect.y1 - rect.y0) * scale, (rect.x1 - rect.x0) * scale
                ys = slice(rect.y0 * scale, rect.y1 * scale)
                xs = slice(rect.x0 * scale, rect.x1 * scale)
                if to_uint8:
                    target[ys, xs] = out[b, oy : oy + hh, ox : ox + ww]
                else:
                    target[:, ys, xs] = out[b, :, oy : oy + hh, ox : ox + ww]
            timings["stitch"] += run.now() - t1
    for i in range(len(model.branches)):
        timings.setdefault(f"branch_{i}", 0.0)
    return canvas, tiles


@hookimpl
def classsr_register_executors(register):
    """Gathered by the ``builtin_executors`` entry point (classsr_plugins.executors.builtin)."""
    register(
        "regions",
        RegionsExecutor,
        description="same-class patches merged into tiles with a halo; every pixel written "
        "once (faster, no seams)",
    )
