"""A folder budget: one price for every image, so a hard image gets more than an easy one.

A per-image budget spends the same fraction on every image: an architectural photo full of
thin edges is forced down to it while a sky keeps compute it does not need. Here the images
are first routed without running a branch (:func:`~classsr_core.engine.pipeline.plan_routes`)
and one price per multiply-add is searched so that the folder as a whole spends the budget;
each image is then run at that price (``infer(price=)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from classsr_core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover  (the engine sits above routing: annotations only)
    from classsr_core.engine.pipeline import RoutePlan


def folder_price(plans: Sequence[RoutePlan], budget: float, steps: int = 60) -> float:
    """The price at which ``plans`` together spend ``budget`` of the widest branch's
    multiply-adds on all of them (the closest reachable: a bisection on the log price)."""
    if not plans:
        raise InputError("a folder budget needs at least one image")
    if not (0 < budget <= 1):
        raise InputError(f"budget must be in (0, 1], got {budget}")
    if any(p.scores is None for p in plans):
        raise InputError("a folder budget needs a model with at least two branches")
    total = sum(p.widest_flops for p in plans)

    def fraction(price: float) -> float:
        return sum(p.flops_at(price) for p in plans) / total

    lo, hi = _bracket(plans)
    if fraction(lo) <= budget:  # even the widest-leaning price is within budget
        return lo
    for _ in range(steps):  # fraction falls as the price rises
        mid = math.sqrt(lo * hi)
        if fraction(mid) > budget:
            lo = mid
        else:
            hi = mid
    # The fraction moves in steps (a patch changes branch): take the nearer side.
    return lo if abs(fraction(lo) - budget) < abs(fraction(hi) - budget) else hi


def _bracket(plans: Sequence[RoutePlan]) -> tuple[float, float]:
    """Prices from where every patch takes its best branch to where all take the cheapest:
    the utility spread over the smallest cost step, with a wide margin either side."""
    spread, step = 0.0, math.inf
    for p in plans:
        u = p.scores.utility
        spread = max(spread, float(u.max() - u.min()))
        costs = p.costs.per_pixel
        step = min(step, *(b - a for a, b in zip(costs, costs[1:]) if b > a))
    spread = max(spread, 1e-12)
    step = step if math.isfinite(step) and step > 0 else 1.0
    return spread / step * 1e-9, spread / step * 1e3
