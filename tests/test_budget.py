"""Budget routing: the FLOPs fraction lands on the target on every image."""

import numpy as np
import pytest

from classsr_core.errors import InputError
from classsr_core.routing.budget import achievable_range, assign_budget

# true (fvcore) multiply-adds per 32x32 patch of ClassSR-FSRCNN and ClassSR-SRResNet
COSTS = {
    "fsrcnn": ([10.9e6, 17.9e6, 24.9e6], 3.8e6),
    "srresnet": ([829e6, 1719e6, 2597e6], 3.8e6),
}


def _fraction(assign, costs, clf):
    return (len(assign) * clf + np.asarray(costs)[assign].sum()) / (len(assign) * costs[-1])


@pytest.mark.parametrize("backbone", sorted(COSTS))
@pytest.mark.parametrize("seed", range(4))
def test_fraction_within_two_points_and_monotone(backbone, seed):
    costs, clf = COSTS[backbone]
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 800))  # a 2K..4K image has hundreds of 32/28 patches
    probs = rng.dirichlet(rng.uniform(0.2, 3, size=3), size=n)
    lo, hi = achievable_range(n, costs, clf, costs[-1])
    previous = -1.0
    for budget in np.linspace(lo, 1.0, 12):
        frac = _fraction(assign_budget(probs, costs, clf, costs[-1], budget), costs, clf)
        assert abs(frac - budget) <= 0.02, (budget, frac)
        assert frac >= previous - 1e-12
        previous = frac


def test_budget_prefers_patches_the_classifier_calls_hard():
    costs, clf = COSTS["srresnet"]
    probs = np.array([[0.9, 0.05, 0.05]] * 10 + [[0.05, 0.05, 0.9]] * 10)
    assign = assign_budget(probs, costs, clf, costs[-1], budget=0.7)
    assert assign[10:].mean() > assign[:10].mean()


def test_out_of_range_budget_is_clamped_and_bad_budget_refused():
    costs, clf = COSTS["fsrcnn"]
    probs = np.full((50, 3), 1 / 3)
    assert (assign_budget(probs, costs, clf, costs[-1], 0.01) == 0).all()
    assert (assign_budget(probs, costs, clf, costs[-1], 5.0) == 2).all()
    with pytest.raises(InputError, match="budget"):
        assign_budget(probs, costs, clf, costs[-1], float("nan"))


def test_shortfall_utility_gives_a_sure_widest_patch_credit_for_the_middle_branch():
    from classsr_core.routing.budget import shortfall_utility

    u = shortfall_utility(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(u, [[-2, -1, 0], [0, 0, 0], [-1.3, -0.5, 0]])
    # a sure-widest patch values the middle branch over the cheapest: with the cumulative
    # probability it did not, so a short budget dropped such patches two steps at once
    assert u[0, 0] < u[0, 1] < u[0, 2]
    costs, clf = COSTS["fsrcnn"]
    probs = np.array([[0.0, 0.0, 1.0]] * 10)
    assign = assign_budget(probs, costs, clf, costs[-1], budget=0.8)
    assert (assign == 1).any()
