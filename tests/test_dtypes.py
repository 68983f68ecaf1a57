"""Models whose weights are cast (``model.half()``, ``model.to(torch.bfloat16)``) run in
both modes, shared weights or not.

The behaviour: the LR image, the routing statistics and the HR canvas stay float32 (as
under ``amp=``); each network (branch, classifier, the receptive-field probe) gets its input
cast to its own weights' dtype. The output follows the *input*, not the weights: a float32
tensor in gives a float32 tensor out, a uint8 array a uint8 array. What a device or a
partly cast model cannot run is an ``InputError`` naming ``model.float()`` and ``amp=``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from classsr_core.engine import infer, patch_grid
from classsr_core.errors import CostWarning, InputError
from classsr_core.execution.regions import receptive_radius
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper

pytestmark = pytest.mark.filterwarnings(f"ignore::{CostWarning.__module__}.CostWarning")

SIZE = 64


def _cpu_runs(dtype: torch.dtype) -> bool:
    """Whether this torch build has CPU convolutions in ``dtype`` (fp16 is build-dependent)."""
    try:
        conv = nn.Conv2d(3, 4, 3).to(dtype)
        conv(torch.rand(1, 3, 8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


DTYPES = [
    torch.bfloat16,
    pytest.param(
        torch.float16,
        marks=pytest.mark.skipif(
            not _cpu_runs(torch.float16), reason="no fp16 CPU convolutions here"
        ),
    ),
]


def _model(shared: bool) -> ClassWrapper:
    torch.manual_seed(0)
    return ClassWrapper("fsrcnn", widths=[8, 16, 24], scale=4, shared_weights=shared).eval()


def _image() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _classes(mode: str) -> np.ndarray:
    """Every branch on some patches (an untrained classifier sends all to one)."""
    stride = 28 if mode == "patches" else 32  # each mode's default stride
    g = patch_grid(SIZE, SIZE, 32, stride)
    return (np.arange(g.rows * g.cols) % 3).reshape(g.rows, g.cols)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["patches", "regions"])
@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_cast_model_runs_and_matches_float32(shared, mode, dtype):
    x, classes = _image(), _classes(mode)
    # The cast model runs first, on its own copy: halos are measured once per branch and
    # kept on it, so a copy of a model that already ran would not measure them again.
    cast = _model(shared).to(dtype)
    res = infer(cast, x, mode=mode, classes=classes)
    ref = infer(_model(shared), x, mode=mode, classes=classes)
    assert res.output.shape == ref.output.shape == (1, 3, 4 * SIZE, 4 * SIZE)
    assert res.output.dtype == torch.float32  # the input's dtype, not the weights'
    assert res.class_counts == ref.class_counts and min(res.class_counts) > 0
    assert res.halos == ref.halos  # regions: measured on the cast branches too
    scale = ref.output.abs().max().item()  # untrained FSRCNN: small outputs
    torch.testing.assert_close(res.output, ref.output, rtol=0.05, atol=0.02 * scale)
    # routed by the cast classifier (no forced classes): runs, same kind of output
    routed = infer(cast, x, mode=mode)
    assert routed.output.shape == ref.output.shape and routed.output.dtype == torch.float32


def test_uint8_in_uint8_out_with_bf16_weights():
    img = (_image()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for mode in ("patches", "regions"):
        out = infer(_model(True).to(torch.bfloat16), img, mode=mode, classes=_classes(mode))
        ref = infer(_model(True), img, mode=mode, classes=_classes(mode)).output
        assert out.output.dtype == np.uint8 and out.output.shape == (4 * SIZE, 4 * SIZE, 3)
        assert np.abs(out.output.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_receptive_radius_is_measured_in_float32(shared, dtype):
    model = _model(shared)
    want = [receptive_radius(b, 3, 4) for b in model.branches]
    assert want == [7, 7, 7]
    with torch.autocast("cpu", dtype=dtype):  # under amp= (fp16 used to underflow: 0, 4, 5)
        assert [receptive_radius(b, 3, 4) for b in model.branches] == want
    cast = model.to(dtype)
    assert [receptive_radius(b, 3, 4) for b in cast.branches] == want
    assert all(p.dtype == dtype for p in cast.parameters())  # the probe copied, not cast


def test_shipped_shared_model_cast_to_bf16_in_regions():
    """The report's case: ``load_model("classsr-fsrcnn-x4-fast")`` cast, mode="regions"."""
    x = _image()
    for mode in ("regions", "patches"):
        cast = load_model("classsr-fsrcnn-x4-fast", device="cpu").to(torch.bfloat16)
        res = infer(cast, x, mode=mode)
        ref = infer(load_model("classsr-fsrcnn-x4-fast", device="cpu"), x, mode=mode)
        assert res.output.dtype == torch.float32 and res.output.shape == ref.output.shape
        # the edge router scores the float32 LR image: the same routing as float32
        assert np.array_equal(res.class_map, ref.class_map) and res.halos == ref.halos
        torch.testing.assert_close(res.output, ref.output, rtol=0, atol=0.05)


def test_a_partly_cast_model_is_a_clear_error():
    model = _model(shared=False)
    model.branches[0].tail_conv.to(torch.bfloat16)  # the rest of the branch stays float32
    classes = np.zeros((2, 2), dtype=np.int64)
    with (
        pytest.warns(UserWarning, match="FLOPs not counted"),  # fvcore's trace fails too
        pytest.raises(InputError, match=r"model\.float\(\).*amp='bf16'"),
    ):
        infer(model, _image(), mode="regions", classes=classes, halo=0)
