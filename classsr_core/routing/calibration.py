"""Measure a model's :class:`~classsr_core.routing.edge.EdgeTable` on photos.

Every branch runs on every image (the engine's regions mode, forced to that branch), and
each whole ``patch_size`` cell gives one edge score and M errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch

from classsr_core.base.grid import patch_grid
from classsr_core.errors import InputError
from classsr_core.routing.edge import (
    ALLOCATIONS,
    DEFAULT_STATISTIC,
    FLAT_LIMIT,
    EdgeTable,
    branch_pixel_costs,
    edge_scores,
    image_price,
)

# The tolerance curve keeps the held-out calibration images within twice the tolerance, all
# but this share of them (the worst, rounded down: 2 of 48). An image's loss budget is a
# fraction of its widest branch's error, which nobody can measure without the ground
# truth; the edge table's estimate is 4x too high on a tenth of images, and with every
# image counted the single worst one (a 64-cell gnome-licorice render losing 0.1 dB at a
# 0.005 dB budget) held every image of the shipped fast model to 0.005 dB: -0.001 dB on the
# natural-photo holdout at tolerance 0.05. The holdouts of docs/routing.md are still judged
# by their worst image.
WORST_SHARE = 0.05


def calibrate(
    model,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    bins: int = 16,
    tolerance_db: float = 0.05,
    statistic: str = DEFAULT_STATISTIC,
    allocation: str = "relative",
    worst_share: float = WORST_SHARE,
    flat_limit: float = FLAT_LIMIT,
) -> EdgeTable:
    """Measure an :class:`EdgeTable` for ``model`` on ``(input, target)`` pairs of float
    tensors ``(1, C, h, w)`` / ``(1, C, h*scale, w*scale)`` in [0, 1] (images the model is
    not validated on). Every branch runs on every image (the engine's regions mode, forced
    to that branch), and each whole ``patch_size`` cell gives one score and M errors.

    The tolerance curve is measured leaving one image out: each image is routed by a table
    built from the others, so a tolerance maps to a price by what held on unseen content.
    ``allocation="relative"`` (the default) gives each image a loss budget in proportion to
    its own expected error (a dB tolerance is relative); ``"price"``: one price for all.
    The curve's worst column leaves out the ``worst_share`` of the images that lose most
    (rounded down; 0: none). An image more than ``flat_limit`` flat is routed at the curve's
    lowest point (:attr:`EdgeTable.flat_limit`; 1: no limit).
    """
    if allocation not in ALLOCATIONS:
        raise InputError(f"unknown allocation {allocation!r}; choose one of {list(ALLOCATIONS)}")
    if model.classifier is None:
        raise InputError("edge routing needs a model with at least two branches")
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    if not (tolerance_db >= 0):
        raise InputError(f"tolerance_db must be 0 or more, got {tolerance_db}")
    if not (0 <= worst_share < 1):
        raise InputError(f"worst_share must be in [0, 1), got {worst_share}")
    if not (0 < flat_limit <= 1):
        raise InputError(f"flat_limit must be in (0, 1], got {flat_limit}; 1: no limit")
    p = int(model.patch_size)
    scores, errors = [], []
    for lr, hr in pairs:
        h, w = lr.shape[-2:]
        rows, cols = h // p, w // p
        if rows == 0 or cols == 0:
            continue  # smaller than one cell: nothing to measure
        ys, xs = np.arange(rows) * p, np.arange(cols) * p
        scores.append(edge_scores(lr.float(), ys, xs, p, statistic))
        errors.append(_cell_errors(model, lr, hr, rows, cols))
    if not scores:
        raise InputError(f"no calibration image holds a whole {p}x{p} input patch")
    score = np.concatenate(scores)
    edges = bin_edges(score, bins)
    mse = _bin_means(edges, scores, errors, range(len(scores)))
    costs = branch_pixel_costs(model)
    curve = _held_out_curve(edges, scores, errors, costs, mse, allocation, worst_share)
    table = EdgeTable(
        tuple(edges.tolist()),
        tuple(map(tuple, mse.tolist())),
        0.0,
        tolerance_db,
        patches=len(score),
        statistic=statistic,
        curve=curve,
        interpolate=True,
        allocation=allocation,
        branch_costs=tuple(float(c) for c in costs),
        worst_share=worst_share,
        flat_limit=flat_limit,
    )
    if allocation == "relative":
        return table  # each image's price comes from its own scores
    return replace(table, price=table.price_for(tolerance_db))


def bin_edges(score: np.ndarray, bins: int) -> np.ndarray:
    """The table's bin boundaries: ``bins`` quantiles of the calibration scores, without
    repeats, and none at the lowest score (an empty first bin would have no errors to
    average)."""
    edges = np.unique(np.quantile(score, np.arange(1, bins) / bins))
    return edges[edges > score.min()]


def _cell_errors(model, lr, hr, rows: int, cols: int) -> np.ndarray:
    """``(rows * cols, M)`` mean squared error of every branch on every whole cell."""
    p, s = int(model.patch_size), int(model.scale)
    per_branch = []
    for j in range(len(model.branches)):
        forced = _all(model, lr, j)
        out = model.infer(lr, mode="regions", classes=forced, router="classifier").output
        se = (out.clamp(0, 1) - hr).square().mean(1)[0, : rows * p * s, : cols * p * s]
        cell = se.reshape(rows, p * s, cols, p * s).mean(dim=(1, 3))
        per_branch.append(cell.reshape(-1).double().numpy())
    return np.stack(per_branch, axis=1)


def _bin_means(edges, scores, errors, images) -> np.ndarray:
    """Expected error of every branch per score bin over ``images`` (indices): the widest
    branch's mean, plus for a cheaper branch the mean of what it *loses* against the
    widest cell by cell (its gains do not count). A bin mixes content a cheap branch suits
    with content it fails (text, thin edges): with plain means its gains on the first hid
    its losses on the second, and the held-out text images lost 0.25 dB at any price. A bin
    those images leave empty takes the value over all images."""

    def expected(err: np.ndarray) -> np.ndarray:
        widest = err[:, -1:]
        return widest.mean() + np.maximum(err - widest, 0.0).mean(axis=0)

    score = np.concatenate([scores[i] for i in images])
    err = np.concatenate([errors[i] for i in images])
    which = np.searchsorted(edges, score, side="right")
    all_which = np.searchsorted(edges, np.concatenate(scores), side="right")
    all_err = np.concatenate(errors)
    rows = []
    for b in range(len(edges) + 1):
        pick = err[which == b]
        rows.append(expected(pick) if len(pick) else expected(all_err[all_which == b]))
    return np.stack(rows)


def _held_out_curve(
    edges, scores, errors, costs, mse, allocation="price", worst_share=0.0, points: int = 120
):
    """``(point, mean loss, worst loss)`` in dB over a range of points, increasing: prices
    ("price") or per-image loss budgets in dB ("relative"); each image routed by the table
    of the other images (its own errors measure the loss); one image: in-sample. The worst
    leaves out the ``worst_share`` of the images that lose most (rounded down)."""
    n = len(scores)
    tables = [
        _bin_means(edges, scores, errors, [i for i in range(n) if i != k]) if n > 1 else mse
        for k in range(n)
    ]
    cost = np.asarray(costs, dtype=np.float64)[None, :]
    edges_t = tuple(float(e) for e in edges)
    expected = [
        EdgeTable(edges_t, tuple(map(tuple, t.tolist())), 0.0, 0.0, interpolate=True).expected_mse(
            scores[k]
        )
        for k, t in enumerate(tables)
    ]
    if allocation == "relative":
        # Per-image dB budgets from 0.001 dB to 3 dB: past that, routing is no longer a
        # quality-preserving trade.
        points_at = np.geomspace(1e-3, 3.0, points)

        def assign_at(k, point):
            price = image_price(expected[k], costs, float(point))
            return np.argmin(expected[k] + price * cost, axis=1)

    else:
        spread = float(np.ptp(mse)) + 1e-12
        step = max(float(np.min(np.diff(costs))), 1e-12) if len(costs) > 1 else 1.0
        points_at = np.geomspace(spread / step * 1e-6, spread / step, points)

        def assign_at(k, point):
            return np.argmin(expected[k] + point * cost, axis=1)

    left_out = int(worst_share * n)  # the worst images the curve's worst column skips
    curve = []
    for point in points_at:
        losses = []
        for k in range(n):
            assign = assign_at(k, point)
            err = errors[k]
            routed = err[np.arange(len(assign)), assign].mean()
            widest = max(err[:, -1].mean(), 1e-12)
            losses.append(10 * math.log10(max(routed, 1e-12) / widest))
        # An image the widest branch does badly on (a flat logo: ringing) gains dBs from a
        # cheap branch; that must not buy losses on the others, so gains count as 0.
        mean = float(np.mean(np.maximum(losses, 0.0)))
        worst = float(np.sort(losses)[::-1][left_out])
        curve.append((float(point), round(mean, 5), round(worst, 5)))
    return tuple(curve)


def _all(model, lr, j):
    """Class ``j`` for every patch of the regions grid of ``lr`` (its size is needed first)."""
    h, w = lr.shape[-2:]
    return np.full(len(patch_grid(h, w, model.patch_size, model.patch_size)), j)


def measure_halo(
    model, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], *, max_loss_db: float = 0.001
) -> int | None:
    """The narrowest region halo (LR pixels) that loses at most ``max_loss_db`` on average,
    and no image more than twice that, against each branch's full receptive field, on
    ``(input, target)`` pairs routed as a checkerboard of every branch (every tile isolated:
    the most seams a routing can have). ``None`` when nothing narrower than the receptive
    fields holds.

    Why: a tile's halo is paid on every side of every tile; the rim of a receptive field
    barely moves the output (FSRCNN: 7 LR pixels of field, 4 lose under 0.001 dB), and on
    fragmented routings of natural photos the halos were a third of all the work.
    """
    from classsr_core.execution.regions import halos_for

    was = dict(model.defaults)
    model.defaults.pop("halo", None)
    try:
        pairs = list(pairs)
        full = max(halos_for(model, None, next(model.parameters()).device), default=0)
        m = len(model.branches)

        def errors(pair, halo):
            lr, hr = pair
            h, w = lr.shape[-2:]
            grid = patch_grid(h, w, model.patch_size, model.patch_size)
            rows, cols = len(grid.ys), len(grid.xs)
            classes = (np.add.outer(np.arange(rows), np.arange(cols)) % m).reshape(-1)
            out = model.infer(lr, mode="regions", classes=classes, router="classifier", halo=halo)
            return float((out.output.clamp(0, 1) - hr).square().mean())

        exact = [errors(p, None) for p in pairs]
        best = None
        for halo in range(full - 1, -1, -1):
            losses = [
                10 * math.log10(max(errors(p, halo), 1e-12) / max(e, 1e-12))
                for p, e in zip(pairs, exact)
            ]
            if np.mean(losses) > max_loss_db or max(losses) > 2 * max_loss_db:
                break
            best = halo
        return best
    finally:
        model.defaults = was
