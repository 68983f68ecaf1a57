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

from classsr_core.analysis.flops import count_flops
from classsr_core.engine.grid import patch_grid
from classsr_core.errors import InputError
from classsr_core.routing.edge import EdgeTable, edge_map, patch_scores


def calibrate(
    model,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    bins: int = 16,
    tolerance_db: float = 0.05,
) -> EdgeTable:
    """Measure an :class:`EdgeTable` for ``model`` on ``(input, target)`` pairs of float
    tensors ``(1, C, h, w)`` / ``(1, C, h*scale, w*scale)`` in [0, 1] (photos the model was
    not validated on). Every branch runs on every image (the engine's regions mode, forced
    to that branch), and each whole ``patch_size`` cell gives one score and M errors."""
    if model.classifier is None:
        raise InputError("edge routing needs a model with at least two branches")
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    if not (tolerance_db >= 0):
        raise InputError(f"tolerance_db must be 0 or more, got {tolerance_db}")
    p, s, m = int(model.patch_size), int(model.scale), len(model.branches)
    scores, errors = [], []
    for lr, hr in pairs:
        h, w = lr.shape[-2:]
        rows, cols = h // p, w // p
        if rows == 0 or cols == 0:
            continue  # smaller than one cell: nothing to measure
        ys, xs = np.arange(rows) * p, np.arange(cols) * p
        scores.append(patch_scores(edge_map(lr.float())[0], ys, xs, p).numpy())
        per_branch = []
        for j in range(m):
            out = model.infer(lr, mode="regions", classes=_all(model, lr, j)).output
            se = (out.clamp(0, 1) - hr).square().mean(1)[0, : rows * p * s, : cols * p * s]
            cell = se.reshape(rows, p * s, cols, p * s).mean(dim=(1, 3))
            per_branch.append(cell.reshape(-1).double().numpy())
        errors.append(np.stack(per_branch, axis=1))
    if not scores:
        raise InputError(f"no calibration image holds a whole {p}x{p} input patch")
    score = np.concatenate(scores)
    err = np.concatenate(errors)
    edges = np.unique(np.quantile(score, np.arange(1, bins) / bins))
    edges = edges[edges > score.min()]  # an empty first bin would have no errors to average
    which = np.searchsorted(edges, score, side="right")
    mse = np.stack([err[which == b].mean(axis=0) for b in range(len(edges) + 1)])
    costs = _pixel_costs(model)
    table = EdgeTable(tuple(edges.tolist()), tuple(map(tuple, mse.tolist())), 0.0, tolerance_db)
    price = _price_for(table, score, err, costs, tolerance_db)
    return replace(table, price=price, patches=len(score))


def _all(model, lr, j):
    """Class ``j`` for every patch of the regions grid of ``lr`` (its size is needed first)."""
    h, w = lr.shape[-2:]
    return np.full(len(patch_grid(h, w, model.patch_size, model.patch_size)), j)


def _pixel_costs(model) -> list[float]:
    p = int(model.patch_size)
    shape = (1, model.in_channels, p, p)
    return [count_flops(b, shape) / (p * p) for b in model.branches]


def _price_for(table: EdgeTable, score, err, costs, tolerance_db: float) -> float:
    """The highest price up to which the routing of the calibration cells (their measured
    errors, not the table's means) loses at most ``tolerance_db`` against the widest branch
    everywhere."""
    widest = err[:, -1].mean()
    best = 0.0
    spread = float(np.ptp(np.asarray(table.mse))) + 1e-12
    step = max(float(np.min(np.diff(costs))), 1e-12) if len(costs) > 1 else 1.0
    for price in np.geomspace(spread / step * 1e-6, spread / step, 200):
        assign = table.route(score, costs, price)
        routed = err[np.arange(len(assign)), assign].mean()
        if 10 * math.log10(routed / widest) > tolerance_db:
            break
        best = float(price)
    return best
