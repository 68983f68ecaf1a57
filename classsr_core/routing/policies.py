"""Policies: a router's scores -> one class per patch.

``forced`` (the caller's classes), ``budget`` (the most expected quality for a FLOPs
fraction; :mod:`classsr_core.routing.budget`), else the router's own ``default`` (argmax of
the classifier, the edge table's calibrated price). Executors whose cost is not a sum over
patches (regions: halos, merging) give ``fraction_of`` and the budget is searched on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from classsr_core.engine.costs import PatchCosts
from classsr_core.routing.base import Scores
from classsr_core.routing.budget import assign_budget, assign_utility

SEARCH_TOLERANCE = 0.002  # budget search: a fraction this close to the budget is on target


def choose(
    scores: Scores | None,
    n: int,
    *,
    forced: torch.Tensor | None = None,
    budget: float | None = None,
    costs: PatchCosts | None = None,
    fraction_of: Callable[[np.ndarray], float] | None = None,
) -> torch.Tensor:
    """``(n,)`` classes on the CPU."""
    if forced is not None:
        return forced.cpu()
    if scores is None:
        return torch.zeros(n, dtype=torch.long)
    if budget is None:
        return scores.default.cpu()
    costs.require_counted("budget routing")
    if fraction_of is None:
        assign = assign_utility(
            scores.utility, costs.branches, costs.router, costs.widest, float(budget)
        )
    else:
        assign = search_budget(scores.utility, float(budget), costs, fraction_of)
    return torch.from_numpy(assign)


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
        from classsr_core.errors import InputError

        raise InputError("budget routing needs the branches' FLOPs, which could not be counted")
    branches = list(costs["branches"])
    assign = assign_budget(
        probs.float().cpu().numpy(), branches, costs["classifier"], max(branches), float(budget)
    )
    return torch.from_numpy(assign).to(probs.device)
