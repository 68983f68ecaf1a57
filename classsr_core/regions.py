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

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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


def cell_bounds(starts, patch_size: int, length: int) -> np.ndarray:
    """Edges of the cells along one axis: patch ``i`` owns ``[b[i], b[i+1])``.

    Neighbouring patches overlap on ``[start[i], start[i-1] + p)``; the edge is its middle,
    so every cell lies inside its own patch."""
    starts = np.asarray(starts, dtype=np.int64)
    inner = (starts[1:] + starts[:-1] + patch_size) // 2
    return np.concatenate([[0], inner, [length]]).astype(np.int64)


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
            gen = torch.Generator().manual_seed(0)
            dtype = next((t.dtype for t in branch.parameters() if t.is_floating_point()), None)
            x = torch.rand(1, in_channels, size, size, generator=gen).to(device, dtype)
            x.requires_grad_(True)
            out = branch(x)
            lo, hi = centre * scale, (centre + 1) * scale
            out[..., lo:hi, lo:hi].float().sum().backward()
            grad = x.grad.abs().sum(dim=(0, 1)).cpu().numpy()
    finally:
        branch.train(was)
    hit = np.argwhere(grad > 0)
    if hit.size == 0:  # constant output (e.g. a zero-initialised residual): no halo needed
        return 0
    radius = int(np.abs(hit - centre).max())
    return min(radius, cap)


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


def fraction(costs, n: int, pixels, patch_size: int, image_pixels: int) -> tuple[float, float]:
    """Multiply-adds of a regions run (classifier on ``n`` patches included) and their
    fraction of the widest branch on the whole image (the '-O' network's own cost)."""
    rates = [per_pixel(c, patch_size) for c in costs["branches"]]
    spent = n * costs["classifier"] + sum(r * px for r, px in zip(rates, pixels))
    widest = max(rates) * image_pixels
    return float(spent), float(spent / widest) if widest > 0 else math.nan


TOLERANCE = 0.002  # budget search: a fraction this close to the budget is on target


def assign_for_regions(utility: np.ndarray, budget: float, costs, fraction_of) -> np.ndarray:
    """Budget routing for regions: the per-patch assignment of
    :func:`classsr_core.budget.assign_utility` (``utility``: ``(n, M)``), with its
    patch-level target searched so that the regions run (halos and merging included,
    ``fraction_of(assign)``) lands nearest ``budget``. The fraction grows with the
    patch-level target up to merging effects, so a bisection gets there; the closest
    assignment seen is returned."""
    from classsr_core.budget import assign_utility

    branch_costs, clf = costs["branches"], costs["classifier"]
    widest = max(branch_costs)
    lo, hi = 1e-3, 2.0  # patch-level targets; assign_utility clamps to what is achievable
    best, best_err = None, math.inf
    for _ in range(16):
        mid = (lo + hi) / 2
        assign = assign_utility(utility, branch_costs, clf, widest, mid)
        got = fraction_of(assign)
        if abs(got - budget) < best_err:
            best, best_err = assign, abs(got - budget)
        if best_err <= TOLERANCE:  # each plan costs ~10 ms at 8K: stop when close enough
            break
        if got > budget:
            hi = mid
        else:
            lo = mid
    return best
