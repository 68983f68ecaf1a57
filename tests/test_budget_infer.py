"""Budget routing through the tile engine, on real photos."""

import numpy as np
import pytest
import torch

from classsr_core.errors import InputError
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.routing.budget import achievable_range


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=2, patch_size=16, stride=12).eval()


def _photos():
    from skimage import data

    for img in (data.astronaut()[::4, ::4], data.coffee()[::4, ::4], data.chelsea()[::3, ::3]):
        yield torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_fraction_tracks_budget_on_every_image(model):
    for x in _photos():
        first = model.infer(x)
        costs = first.flops_per_patch
        lo, _ = achievable_range(
            first.num_patches, costs["branches"], costs["classifier"], max(costs["branches"])
        )
        previous = -1.0
        for budget in np.linspace(lo, 1.0, 6):
            frac = model.infer(x, budget=float(budget)).flops_fraction
            assert abs(frac - budget) <= 0.02, (budget, frac)
            assert frac >= previous - 1e-9
            previous = frac


def test_budget_needs_branches_to_choose_from():
    single = ClassWrapper("fsrcnn", widths=[8], scale=2).eval()
    with pytest.raises(InputError, match="at least two branches"):
        single.infer(torch.rand(1, 3, 40, 40), budget=0.5)
