"""Policies: a router's scores -> one class per patch.

In this order: ``forced`` (the caller's classes); ``budget`` (the most expected quality
for a FLOPs fraction; :mod:`classsr_core.routing.budget`); ``tolerance`` (dB of expected
loss against the widest branch: the router's calibrated price for it); ``price`` (one
trade-off of utility against multiply-adds, e.g. a folder budget's); else the router's own
``default`` (argmax of the classifier, the edge table's calibrated price). Executors whose
cost is not a sum over patches (regions: halos, merging) give ``fraction_of`` and the
budget is searched on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from classsr_core.base.costs import PatchCosts
from classsr_core.errors import InputError
from classsr_core.routing.base import Scores
from classsr_core.routing.budget import assign_budget, assign_utility

SEARCH_TOLERANCE = 0.002  # budget search: a fraction this close to the budget is on target


def choose(
    scores: Scores | None,
    n: int,
    *,
    forced: torch.Tensor | None = None,
    budget: float | None = None,
    tolerance: float | None = None,
    price: float | None = None,
    costs: PatchCosts | None = None,
    fraction_of: Callable[[np.ndarray], float] | None = None,
    router: str = "",
) -> torch.Tensor:
    """``(n,)`` classes on the CPU."""
    if forced is not None:
        return forced.cpu()
    if scores is None:
        return torch.zeros(n, dtype=torch.long)
    if budget is None and tolerance is not None:
        if scores.tolerance_price is None:
            raise InputError(
                f"router {router!r} cannot honour tolerance=: it has no calibrated error "
                "estimate; use router='edge' on a calibrated model (`classsr calibrate`), "
                "or budget="
            )
        price = scores.tolerance_price(float(tolerance))
    if budget is None and price is not None:
        costs.require_counted("price routing")
        assign = route_at_price(scores.utility, costs.per_pixel, price)
        return torch.from_numpy(capped(assign, len(costs.branches), fraction_of))
    if budget is None:
        default = scores.default.cpu().numpy()
        return torch.from_numpy(capped(default, len(costs.branches), fraction_of))
    costs.require_counted("budget routing")
    if fraction_of is None:
        assign = assign_utility(
            scores.utility, costs.branches, costs.router, costs.widest, float(budget)
        )
    else:
        assign = search_budget(scores.utility, float(budget), costs, fraction_of)
    return torch.from_numpy(assign)


def capped(assign: np.ndarray, m: int, fraction_of) -> np.ndarray:
    """``assign``, or the widest branch everywhere when that costs less: an executor with
    overheads (regions: a halo around every tile) can make a fragmented routing dearer than
    running the best branch on the whole image, which is never worse."""
    if fraction_of is None or m < 2:
        return assign
    widest = np.full_like(assign, m - 1)
    return widest if fraction_of(assign) > fraction_of(widest) else assign


def route_at_price(utility: np.ndarray, per_pixel, price: float) -> np.ndarray:
    """The branch per patch maximising utility - ``price`` x multiply-adds per pixel."""
    cost = np.asarray(per_pixel, dtype=np.float64)[None, :]
    return np.argmax(np.asarray(utility, dtype=np.float64) - float(price) * cost, axis=1)


def search_budget(utility: np.ndarray, budget: float, costs: PatchCosts, fraction_of) -> np.ndarray:
    """The per-patch assignment of :func:`assign_utility` with its patch-level target
    searched so that the run's real fraction (``fraction_of(assign)``: halos and merging
    included) lands nearest ``budget``. The fraction grows with the patch-level target up
    to merging effects, so a bisection gets there; the closest assignment seen is
    returned."""
    lo, hi = 1e-3, 2.0  # patch-level targets; assign_utility clamps to what is achievable
    best, best_err = None, math.inf
    for _ in range(16):
        mid = (lo + hi) / 2
        assign = assign_utility(utility, costs.branches, costs.router, costs.widest, mid)
        got = fraction_of(assign)
        if abs(got - budget) < best_err:
            best, best_err = assign, abs(got - budget)
        if best_err <= SEARCH_TOLERANCE:  # each plan costs ~10 ms at 8K: stop when close
            break
        if got > budget:
            hi = mid
        else:
            lo = mid
    return best


def assign_classes(
    probs: torch.Tensor, *, budget: float | None = None, costs: PatchCosts | dict | None = None
) -> torch.Tensor:
    """Route patches by classifier probabilities ``(N, M)`` -> ``(N,)`` classes: argmax,
    or with ``budget`` the assignment that maximises the probability of sufficing within
    it (:func:`classsr_core.routing.budget.assign_budget`)."""
    if budget is None:
        return probs.argmax(dim=1)
    if costs is None or any(math.isnan(c) for c in costs["branches"]):
        raise InputError("budget routing needs the branches' FLOPs, which could not be counted")
    branches = list(costs["branches"])
    assign = assign_budget(
        probs.float().cpu().numpy(), branches, costs["classifier"], max(branches), float(budget)
    )
    return torch.from_numpy(assign).to(probs.device)
