"""Region execution: merged same-class tiles with a halo, against the branches run on the
whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from classsr_core.engine import infer, patch_grid
from classsr_core.errors import InputError
from classsr_core.execution.regions import cell_bounds, merge_cells, receptive_radius
from classsr_core.model.wrapper import ClassWrapper


class Convs(nn.Module):
    """``depth`` 3x3 convs with ReLUs (receptive radius ``depth``), then pixel shuffle."""

    def __init__(self, width: int, scale: int, depth: int, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        ch = channels
        for i in range(depth):
            out = channels * scale * scale if i == depth - 1 else width
            layers += [nn.Conv2d(ch, out, 3, 1, 1), nn.ReLU()]
            ch = out
        self.body = nn.Sequential(*layers[:-1])
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.up(self.body(x))


def _model(scale=2, depths=(1, 2, 3), p=12, s=10):
    torch.manual_seed(0)
    branches = [Convs(4 + 2 * i, scale, d) for i, d in enumerate(depths)]
    return ClassWrapper(branches=branches, scale=scale, patch_size=p, stride=s).eval()


def _cells(res):
    g = res.grid
    return cell_bounds(g.ys, g.patch_size, g.height), cell_bounds(g.xs, g.patch_size, g.width)


@pytest.mark.parametrize("size", [(47, 61), (12, 12), (9, 30), (64, 33)])
def test_every_cell_equals_its_branch_on_the_whole_image(size):
    model, scale = _model(), 2
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    g = patch_grid(*size, 12, 10)
    classes = np.random.default_rng(2).integers(0, 3, size=(g.rows, g.cols))
    res = infer(model, x, classes=classes, mode="regions", stride=10)
    assert res.halos == [1, 2, 3]  # measured receptive fields
    with torch.no_grad():
        whole = [b(x) for b in model.branches]
    by, bx = _cells(res)
    for r in range(g.rows):
        for c in range(g.cols):
            ys = slice(by[r] * scale, min(by[r + 1], size[0]) * scale)
            xs = slice(bx[c] * scale, min(bx[c + 1], size[1]) * scale)
            want = whole[classes[r, c]][..., ys, xs]
            torch.testing.assert_close(res.output[..., ys, xs], want, atol=1e-5, rtol=0)


def test_a_narrower_halo_is_an_approximation_and_zero_is_allowed():
    model = _model()
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    exact = infer(model, x, mode="regions", classes=np.full(16, 2)).output
    rough = infer(model, x, mode="regions", classes=np.full(16, 2), halo=0, max_cells=1)
    assert rough.halos == [0, 0, 0]
    assert not torch.allclose(rough.output, exact)
    # One class everywhere and tiles as large as the image: one tile, exact.
    one = infer(model, x, mode="regions", classes=np.full(16, 2), halo=0, max_cells=99)
    assert one.tiles == 1
    torch.testing.assert_close(one.output, exact, atol=1e-5, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    m=st.integers(1, 3),
    cap=st.integers(1, 5),
    seed=st.integers(0, 999),
)
def test_rectangles_cover_every_cell_once_with_one_class(rows, cols, m, cap, seed):
    rng = np.random.default_rng(seed)
    # Blocky maps (as real class maps are) and noise alike.
    cmap = rng.integers(0, m, size=(rows, cols))
    if seed % 2:
        cmap = np.kron(rng.integers(0, m, size=(rows // 2 + 1, cols // 2 + 1)), np.ones((2, 2)))
        cmap = cmap[:rows, :cols].astype(np.int64)
    count = np.zeros((rows, cols), dtype=int)
    for k, r0, r1, c0, c1 in merge_cells(cmap, cap):
        assert 0 < r1 - r0 <= cap and 0 < c1 - c0 <= cap
        assert np.all(cmap[r0:r1, c0:c1] == k)
        count[r0:r1, c0:c1] += 1
    assert np.all(count == 1)


def test_uniform_map_merges_into_few_tiles():
    assert merge_cells(np.zeros((4, 6), dtype=int), 8) == [(0, 0, 4, 0, 6)]
    assert len(merge_cells(np.zeros((16, 16), dtype=int), 8)) == 4


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 200), p=st.sampled_from([8, 16, 32]), frac=st.floats(0.5, 1.0))
def test_cells_partition_the_axis_and_lie_inside_their_patch(length, p, frac):
    s = max(1, int(p * frac))
    g = patch_grid(length, length, p, s)
    b = cell_bounds(g.ys, p, g.height)
    assert b[0] == 0 and b[-1] == g.height and np.all(np.diff(b) > 0)
    for i, y in enumerate(g.ys):
        assert y <= b[i] and b[i + 1] <= y + p


def test_receptive_radius_is_measured():
    assert receptive_radius(Convs(4, 2, 3), 3, 2) == 3
    assert receptive_radius(Convs(4, 1, 12), 3, 1) == 8  # capped
    assert receptive_radius(Convs(4, 1, 12), 3, 1, cap=20) == 12


def test_bicubic_branch_and_fsrcnn_regions_match_the_whole_image():
    torch.manual_seed(0)
    model = ClassWrapper(
        "fsrcnn",
        widths=[0, 8],
        scale=2,
        patch_size=16,
        stride=14,
        backbone_kwargs={"skip": "bicubic", "m": 1, "init_scale": 1.0},
    ).eval()
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        assert torch.equal(model.branches[0](x), bicubic)
        whole = model.branches[1](x)
    res = infer(model, x, mode="regions", classes=np.ones(12, dtype=int))
    torch.testing.assert_close(res.output, whole, atol=1e-5, rtol=0)
    cheap = infer(model, x, mode="regions", classes=np.zeros(12, dtype=int))
    torch.testing.assert_close(cheap.output, bicubic, atol=1e-5, rtol=0)
    clf = 12 * res.flops_per_patch["classifier"]
    assert cheap.flops - clf < 0.1 * (res.flops - clf)  # bicubic: a few % of even FSRCNN-8


def test_regions_flops_are_relative_to_the_widest_on_the_whole_image():
    model = _model()
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    res = infer(model, x, mode="regions", classes=np.full(16, 2), max_cells=99)
    per_pixel = res.flops_per_patch["branches"][2] / 12**2
    clf = 16 * res.flops_per_patch["classifier"]
    assert res.flops == pytest.approx(clf + 40 * 40 * per_pixel, rel=1e-6)
    assert res.flops_fraction == pytest.approx(res.flops / (40 * 40 * per_pixel))


def test_regions_default_to_side_by_side_patches():
    res = infer(_model(), torch.rand(1, 3, 36, 36), mode="regions")
    assert (res.patch_size, res.stride, res.class_map.shape) == (12, 12, (3, 3))


def test_regions_take_uint8_and_images_smaller_than_a_patch():
    model = _model()
    img = (np.random.default_rng(7).random((7, 9, 3)) * 255).astype(np.uint8)
    res = infer(model, img, mode="regions")
    assert res.output.shape == (14, 18, 3) and res.output.dtype == np.uint8
    assert res.mode == "regions" and res.tiles == 1


@pytest.mark.parametrize("grey", [False, True])
def test_regions_uint8_output_is_the_rounded_float_output(grey):
    """uint8 input: tiles are rounded straight into a uint8 canvas; the result must be the
    float path's output rounded as the engine rounds it (same routing forced)."""
    model = _model()
    if grey:
        torch.manual_seed(0)
        branches = [Convs(4, 2, 1, channels=1), Convs(6, 2, 2, channels=1)]
        model = ClassWrapper(branches=branches, scale=2, in_channels=1, patch_size=12, stride=10)
        model.eval()
    rng = np.random.default_rng(3)
    img = (rng.random((37, 50) if grey else (37, 50, 3)) * 255).astype(np.uint8)
    n = len(patch_grid(37, 50, 12, 12))
    classes = rng.integers(0, len(model.branches), n)
    got = infer(model, img, mode="regions", classes=classes).output
    x = torch.from_numpy(img.reshape(37, 50, -1)).permute(2, 0, 1)[None].float() / 255
    ref = infer(model, x, mode="regions", classes=classes).output[0]
    want = ref.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert got.dtype == np.uint8 and got.shape == ((74, 100) if grey else (74, 100, 3))
    np.testing.assert_array_equal(got, want[:, :, 0] if grey else want)


def test_regions_budget_lands_near_the_target():
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[0, 16, 32], scale=4, backbone_kwargs={"skip": "bicubic"})
    model.eval()
    x = torch.rand(1, 3, 200, 260, generator=torch.Generator().manual_seed(8))
    n = len(patch_grid(200, 260, 32, 32))  # 63 patches: 1.6% each
    lo = infer(model, x, mode="regions", classes=np.zeros(n, dtype=int)).flops_fraction
    hi = infer(model, x, mode="regions", classes=np.full(n, 2)).flops_fraction
    got = []
    for t in (0.2, 0.5, 0.8):
        want = lo + t * (hi - lo)
        got.append(infer(model, x, mode="regions", budget=want).flops_fraction)
        assert abs(got[-1] - want) <= 0.02, (want, got[-1], lo, hi)
    assert got == sorted(got)


def test_regions_errors_are_clear():
    model = _model()
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(InputError, match="mode must be one of"):
        infer(model, x, mode="tiles")
    with pytest.raises(InputError, match="blend applies to mode='patches'"):
        infer(model, x, mode="regions", blend="window")
    with pytest.raises(InputError, match="halo must be 0 or more"):
        infer(model, x, mode="regions", halo=-1)
    with pytest.raises(InputError, match="max_cells"):
        infer(model, x, mode="regions", max_cells=0)


def test_fsrcnn_width_zero_needs_the_skip():
    with pytest.raises(InputError, match="skip"):
        ClassWrapper("fsrcnn", widths=[0, 8], scale=2)
