"""Every model shipped in the package loads offline, carries its card, and beats bicubic on
a real photo it was not trained on (scikit-image's coffee) by a measured bar: a ClassSR
model's own routing keeps nearly all of its widest branch's gain over bicubic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classsr_core._basicsr import imresize
from classsr_core.model.loading import load_model, read_checkpoint, shipped_models
from classsr_core.plugins.registry import lookup

NAMES = sorted(shipped_models())


def test_the_zoo_is_there():
    assert {"classsr-fsrcnn-x4", "fsrcnn-x4", "classsr-srresnet-x4", "srresnet-x4"} <= set(NAMES)


@pytest.mark.parametrize("name", ["srresnet-x4", "classsr-srresnet-x4"])
def test_srresnet_models_are_stored_in_fp16_and_load_in_fp32(name):
    state, meta = read_checkpoint(shipped_models()[name])
    assert meta["card"]["stored_as"] == "float16"
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = load_model(name, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.spec["backbone"] == "srresnet"


def test_classsr_srresnet_carries_its_router():
    model = load_model("classsr-srresnet-x4", device="cpu")
    assert model.default_router == "edge"
    assert model.spec["widths"] == [0, 48, 64] and model.spec["shared_weights"]


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    hr = data.coffee()[:192, :256].astype(np.float32) / 255.0
    lr = np.clip(imresize(hr, 0.25), 0, 1).astype(np.float32)
    bicubic = np.clip(imresize(lr, 4), 0, 1)
    return hr, lr, bicubic


def _widest_gain(model, task, x, hr, bicubic_psnr) -> float:
    """dB the widest branch, run everywhere, gains over bicubic."""
    from classsr_core.engine.grid import patch_grid

    n = len(patch_grid(*x.shape[-2:], model.patch_size, model.patch_size))
    forced = np.full(n, len(model.branches) - 1)
    res = model.infer(x, mode="regions", classes=forced, router="classifier")
    out = res.output[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return task.score(out, hr)["psnr"] - bicubic_psnr


# Measured on this photo (2026-12, CPU): single-network models gain 1.13-1.18 dB over
# bicubic, the ClassSR models' widest branches 0.96-1.28 dB; every ClassSR model's own
# routing keeps 98.5-100% of its widest branch's gain. The bars leave a margin.
MIN_GAIN_DB = 1.0
MIN_WIDEST_GAIN_DB = 0.85
MIN_KEPT = 0.9


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_loads_and_beats_bicubic(name, photo):
    _, meta = read_checkpoint(shipped_models()[name])
    card = meta["card"]
    assert card["trained_on"] and card["config"]
    hr, lr, bicubic = photo
    model = load_model(name, device="cpu")
    task = lookup("tasks", "sr").factory(scale=model.scale)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None]
    base = task.score(bicubic, hr)["psnr"]
    widest = _widest_gain(model, task, x, hr, base) if len(model.branches) > 1 else None
    for mode in ("patches", "regions"):
        out = model.infer(x, mode=mode).output[0].clamp(0, 1).permute(1, 2, 0).numpy()
        gain = task.score(out, hr)["psnr"] - base
        if widest is None:
            assert gain >= MIN_GAIN_DB, (mode, gain)
        else:
            assert widest >= MIN_WIDEST_GAIN_DB, widest
            assert gain >= MIN_KEPT * widest, (mode, gain, widest)


# Share of the widest branch's gain over bicubic kept at 60% of its FLOPs, measured on this
# photo (2026-12-06, CPU, the current tables); the bar is 80% of it. classsr-fsrcnn-x4's
# middle branches are weak (docs/routing.md): at 60% it keeps a quarter.
KEPT_AT_60 = {
    "classsr-fsrcnn-x4": 0.247,
    "classsr-fsrcnn-x4-fast": 0.761,
    "classsr-fsrcnn-x4-shared": 0.564,
    "classsr-srresnet-x4": 0.872,
}


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("classsr-")])
def test_shipped_classsr_models_route_by_edges_too(name, photo):
    hr, lr, bicubic = photo
    model = load_model(name, device="cpu")
    assert model.edge_table is not None and model.edge_table.num_branches == model.num_classes
    task = lookup("tasks", "sr").factory(scale=model.scale)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None]
    res = model.infer(x, router="edge", budget=0.6)
    # 4 cells of 32x32: the fractions the budget search can reach are steps of a quarter of
    # a branch's cost plus halos (measured: 0.59-0.63).
    assert abs(res.flops_fraction - 0.6) < 0.05
    out = res.output[0].clamp(0, 1).permute(1, 2, 0).numpy()
    base = task.score(bicubic, hr)["psnr"]
    gain = task.score(out, hr)["psnr"] - base
    widest = _widest_gain(model, task, x, hr, base)
    assert gain >= 0.8 * KEPT_AT_60[name] * widest, (gain, widest)
