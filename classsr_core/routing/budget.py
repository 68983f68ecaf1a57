"""Routing under a compute budget set at run time.

ClassSR's speed/quality trade-off is fixed by training, and its FLOPs fraction differs from
image to image. Here a user names the fraction F of the widest branch's cost (true
multiply-adds on the same tiling, classifier included) and every image lands within a
hair of it: each patch gets the branch that maximises expected quality under the budget.

Expected quality of giving patch k branch j is ``U[k, j] = -sum_c p[k, c] max(0, c - j)``:
minus the number of difficulty classes branch j is expected to fall short by
(:func:`shortfall_utility`). U is non-decreasing in j, so spending is an upgrade problem: a
Lagrangian relaxation (binary search on the price of a multiply-add) gets near the target,
then single-patch upgrades or downgrades by best gain per cost land on it exactly up to one
patch's cost step.
"""

from __future__ import annotations

import numpy as np

from classsr_core.errors import InputError


def achievable_range(
    n: int, costs, classifier_cost: float, widest_cost: float
) -> tuple[float, float]:
    """(lowest, highest) FLOPs fraction on ``n`` patches: all cheapest, all widest."""
    base = n * classifier_cost
    denom = n * widest_cost
    return (base + n * costs[0]) / denom, (base + n * costs[-1]) / denom


def assign_budget(
    probs: np.ndarray,
    costs,
    classifier_cost: float,
    widest_cost: float,
    budget: float,
) -> np.ndarray:
    """Branch index per patch so that spent / (n * widest_cost) is as close to ``budget``
    as one patch's cost step allows, maximising ``sum U[k, a_k]``.

    Args:
        probs: (n, M) classifier probabilities.
        costs: M per-patch branch costs (multiply-adds), non-decreasing.
        classifier_cost: per-patch classifier cost (spent on every patch).
        widest_cost: per-patch cost of the widest branch (the denominator).
        budget: target fraction. Values outside the achievable range are clamped to it.
    """
    return assign_utility(shortfall_utility(probs), costs, classifier_cost, widest_cost, budget)


def shortfall_utility(probs: np.ndarray) -> np.ndarray:
    """``U[k, j] = -sum_c p[k, c] * max(0, c - j)``: minus the expected number of classes
    branch j falls short of patch k's. Each step up gains ``P(class > j)``, so a patch the
    classifier is sure needs the widest branch still values the middle one over the
    cheapest; ``P(class <= j)`` (cumulative probability) gives a confident classifier's
    patches no reason to stop in the middle and, under a short budget, drops them from the
    widest to the cheapest (docs/budget.md)."""
    probs = np.asarray(probs, dtype=np.float64)
    m = probs.shape[1]
    short = np.maximum(0, np.arange(m)[None, :] - np.arange(m)[:, None])  # [j, c] = max(0, c-j)
    return -probs @ short.T


def assign_utility(
    utility: np.ndarray,
    costs,
    classifier_cost: float,
    widest_cost: float,
    budget: float,
) -> np.ndarray:
    """:func:`assign_budget` for any ``(n, M)`` utility of giving patch k branch j (the
    classifier's cumulative probabilities, or an edge table's negated expected error), in
    units where one branch step gains at most about 1."""
    utility = np.asarray(utility, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    n, m = utility.shape
    if m != len(costs):
        raise InputError(f"{m} classes but {len(costs)} branch costs")
    if not np.isfinite(budget) or budget <= 0:
        raise InputError(f"budget must be a positive fraction of the widest branch, got {budget}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    target = budget * n * widest_cost - n * classifier_cost  # multiply-adds left for branches
    target = float(np.clip(target, n * costs[0], n * costs[-1]))

    def pick(lam: float) -> np.ndarray:
        return np.argmax(utility - lam * costs[None, :], axis=1)

    # Price of one multiply-add: 0 buys every upgrade; hi buys none.
    lo, hi = 0.0, 1.0 / max(float(np.min(np.diff(costs))), 1e-12) if m > 1 else 0.0
    if m > 1:
        for _ in range(60):
            mid = (lo + hi) / 2
            if costs[pick(mid)].sum() > target:
                lo = mid
            else:
                hi = mid
    assign = pick(hi)
    return _settle(assign, utility, costs, target)


def _settle(
    assign: np.ndarray, utility: np.ndarray, costs: np.ndarray, target: float
) -> np.ndarray:
    """Move single patches one branch up or down until the spend is nearest the target."""
    m = len(costs)
    rows = np.arange(len(assign))
    spent = costs[assign].sum()

    def moves(up: bool):
        other = np.clip(assign + (1 if up else -1), 0, m - 1)
        step = np.abs(costs[other] - costs[assign])
        delta = np.abs(utility[rows, other] - utility[rows, assign]) / np.maximum(step, 1e-12)
        return other != assign, step, delta

    while spent > target:  # over budget: drop the patch that loses least per multiply-add
        ok, step, loss = moves(up=False)
        if not ok.any():
            break
        k = int(np.argmin(np.where(ok, loss, np.inf)))
        assign[k] -= 1
        spent -= step[k]
    while True:  # under budget: buy the best upgrade per multiply-add that still fits
        ok, step, gain = moves(up=True)
        fits = ok & (spent + step <= target)
        if not fits.any():
            break
        k = int(np.argmax(np.where(fits, gain, -np.inf)))
        assign[k] += 1
        spent += step[k]
    ok, step, gain = moves(up=True)  # one last upgrade if it lands nearer the target
    if ok.any():
        k = int(np.argmin(np.where(ok, step, np.inf)))
        if abs(spent + step[k] - target) < abs(spent - target):
            assign[k] += 1
    return assign
