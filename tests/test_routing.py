"""Routing that holds on unseen images: the shipped default router, tolerance, folder budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from classsr_core import load_model
from classsr_core.cli import main
from classsr_core.engine.pipeline import plan_routes
from classsr_core.errors import InputError
from classsr_core.routing.edge import gradient_map, patch_maxima
from classsr_core.routing.folder import folder_price

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def fast():
    return load_model("classsr-fsrcnn-x4-fast", device="cpu")


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    import skimage.data

    img = skimage.data.astronaut()[::4, ::4][:h, :w]
    return np.ascontiguousarray(img)


def _equal_luma_colours() -> tuple[np.ndarray, np.ndarray]:
    """Two colours far apart in RGB whose luma is the same."""
    a = np.array([200.0, 60.0, 100.0])
    b = np.array([40.0, 0.0, 0.0])
    b[1] = (LUMA @ a - LUMA[0] * b[0] - LUMA[2] * b[2]) / LUMA[1]  # solve for green
    assert abs(LUMA @ a - LUMA @ b) < 1e-9 and np.abs(a - b).max() > 100
    return a.round().astype(np.uint8), b.round().astype(np.uint8)


def test_shipped_models_route_by_their_calibrated_edge_table_by_default(fast):
    assert fast.default_router == "edge" and fast.edge_table.statistic == "laplacian-energy"
    res = fast.infer(_photo(), mode="regions")
    assert res.router == "edge"


def test_flat_image_goes_to_the_cheapest_branch_everywhere(fast):
    flat = np.full((96, 128, 3), 117, np.uint8)
    for mode in ("patches", "regions"):
        res = fast.infer(flat, mode=mode)
        assert res.class_counts[0] == res.num_patches, mode


@pytest.mark.parametrize("kind", ["thin line", "equal-luma colour edge"])
def test_a_thin_line_and_a_colour_edge_of_equal_luma_go_wider(fast, kind):
    img = np.full((96, 128, 3), 128, np.uint8)
    if kind == "thin line":  # one pixel wide, black on white, in one 32x32 cell only
        img[:] = 255
        img[40, 64:96] = 0
    else:  # left half one colour, right half another of the same brightness
        a, b = _equal_luma_colours()
        img[:, :64], img[:, 64:] = a, b
    res = fast.infer(img, mode="regions")
    classes = res.class_map
    assert classes.max() > 0, kind  # the cells with the edge take a network
    assert (classes == 0).any(), kind  # and the flat rest does not
    # the luma-only score misses the colour edge: its map is flat there
    if kind != "thin line":
        lap = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        from classsr_core.routing.edge import edge_map

        assert edge_map(lap)[0, :, 60:68].abs().max() < 0.02


def test_gradient_max_sees_one_pixel_in_a_patch():
    x = torch.zeros(1, 3, 64, 64)
    x[0, 1, 10, 40] = 1.0  # one green pixel
    scores = patch_maxima(gradient_map(x)[0], [0, 32], [0, 32], 32).reshape(2, 2)
    assert scores[0, 1] > 0.4 and scores[0, 0] == 0 and scores[1].max() == 0


def test_tolerance_grows_monotonically_into_fewer_flops(fast):
    img = _photo()
    fractions = [
        fast.infer(img, mode="regions", tolerance=t).flops_fraction
        for t in (0.0, 0.02, 0.05, 0.2, 1.0, 5.0)
    ]
    assert all(b <= a + 1e-9 for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[-1] < fractions[0]


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "abc"])
def test_bad_tolerance_is_a_clear_error(fast, bad):
    with pytest.raises(InputError, match="tolerance"):
        fast.infer(_photo(), tolerance=bad)


@pytest.mark.parametrize("bad", ["-1", "nan", "abc"])
def test_bad_tolerance_flag_names_the_flag(tmp_path, capsys, bad):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(_photo()).save(img)
    with pytest.raises(SystemExit) as exit_:
        main(["upscale", str(img), "-o", str(tmp_path / "o"), f"--tolerance={bad}"])
    assert exit_.value.code == 2
    assert "--tolerance" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tolerance_and_budget_together_are_refused(fast):
    with pytest.raises(InputError, match="not both"):
        fast.infer(_photo(), tolerance=0.05, budget=0.5)


def test_a_router_without_calibration_cannot_honour_a_tolerance(fast):
    with pytest.raises(InputError, match="cannot honour tolerance"):
        fast.infer(_photo(), router="classifier", tolerance=0.05)


def test_folder_budget_spends_the_fraction_over_the_folder_within_two_points(fast):
    import skimage.data

    images = [
        np.ascontiguousarray(skimage.data.astronaut()),
        np.full((64, 96, 3), 90, np.uint8),  # flat: needs nothing
        np.ascontiguousarray(skimage.data.coffee()),
        np.ascontiguousarray(skimage.data.rocket()),
    ]
    plans = [plan_routes(fast, x, mode="regions") for x in images]
    price = folder_price(plans, 0.5)
    spent = widest = 0.0
    per_image = []
    for x, plan in zip(images, plans):
        res = fast.infer(x, mode="regions", price=price)
        spent += res.flops_fraction * plan.widest_flops
        widest += plan.widest_flops
        per_image.append(res.flops_fraction)
    assert abs(spent / widest - 0.5) <= 0.02
    assert per_image[1] < 0.1 < max(per_image)  # the flat image gives its share to the others


def test_folder_budget_on_the_command_line(tmp_path, capsys):
    import json

    import skimage.data
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / "a.png")
    Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(folder / "b.png")
    Image.fromarray(np.ascontiguousarray(skimage.data.coffee()[::4, ::4])).save(folder / "c.png")
    args = ["upscale", str(folder), "-o", str(tmp_path / "out"), "--mode", "regions"]
    args += ["--model", "classsr-fsrcnn-x4-fast"]
    args += ["--budget", "0.5", "--budget-scope", "folder", "--json", "--no-progress"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    fractions = {r["input"].rsplit("/", 1)[-1]: r["flops_fraction"] for r in rows}
    assert fractions["b.png"] < 0.1 and max(fractions.values()) > 0.5
