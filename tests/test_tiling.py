"""The tile engine against a patch-by-patch reference, on tiny convolutional branches."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from classsr_core.engine import default_batch_size, infer, patch_grid
from classsr_core.errors import InputError
from classsr_core.execution.patches import _window
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.routing.policies import assign_classes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These branches are tiny: a second OpenMP thread only adds synchronisation, and on a
    # busy 2-core machine waiting for it can make each conv call 100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Branch(nn.Module):
    """``depth`` 3x3 convs (receptive radius ``depth`` LR pixels), then pixel shuffle."""

    def __init__(self, width: int = 4, scale: int = 2, depth: int = 2, in_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(depth):
            out = in_ch * scale * scale if i == depth - 1 else width
            layers.append(nn.Conv2d(ch, out, 3, 1, 1))
            ch = out
        self.body = nn.Sequential(*layers)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.up(self.body(x))


class Recorder(nn.Module):
    """Wraps a branch and records the batch sizes it is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x):
        if not torch.jit.is_tracing():  # FLOPs counting traces the branch once
            self.batches.append(int(x.shape[0]))
        return self.inner(x)


class Brightness(nn.Module):
    """A classifier that routes by mean brightness: dark / mid / bright -> 0 / 1 / 2."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.2, 0.8, num_classes))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return -100 * (m[:, None] - self.centres[None, :]) ** 2


def ramp(*size, channels: int = 3) -> torch.Tensor:
    """Noise on a left-to-right ramp: patches of every brightness, hence every class."""
    h, w = size
    base = torch.linspace(0, 0.8, w).expand(1, channels, h, w)
    return base + 0.2 * torch.rand(1, channels, h, w)


def make_model(widths=(2, 4, 6), scale=2, in_ch=3, **kw) -> ClassWrapper:
    torch.manual_seed(1)
    model = ClassWrapper(
        branches=[Branch(w, scale, in_ch=in_ch) for w in widths],
        scale=scale,
        in_channels=in_ch,
        **kw,
    )
    if model.classifier is not None:
        # A freshly initialised Class-Module sends nearly every patch the same way; route
        # by brightness instead so that every branch gets patches.
        model.classifier = Brightness(len(widths))
    return model.eval()


def reference(model, x, p, s, classes=None, blend="mean"):
    """Every patch alone through its branch, overlaps averaged (the official loop, fixed)."""
    grid = patch_grid(x.shape[2], x.shape[3], p, s)
    scale = model.scale
    ps = p * scale
    acc = torch.zeros(1, 3, grid.height * scale, grid.width * scale)
    wsum = torch.zeros_like(acc)
    win = _window(ps, blend, torch.device("cpu"))
    win2 = win[:, None] * win[None, :]
    chosen = []
    with torch.no_grad():
        for k in range(len(grid)):
            y, xx = grid.position(k)
            patch = x[:, :, y : y + p, xx : xx + p]
            c = int(model.classify(patch).argmax(1)) if classes is None else int(classes[k])
            chosen.append(c)
            out = model.branches[c](patch)
            acc[..., y * scale : y * scale + ps, xx * scale : xx * scale + ps] += out * win2
            wsum[..., y * scale : y * scale + ps, xx * scale : xx * scale + ps] += win2
    return (acc / wsum)[..., : x.shape[2] * scale, : x.shape[3] * scale], np.array(chosen)


@pytest.mark.parametrize(
    "size,p,s,scale,blend",
    [
        ((70, 95), 32, 28, 2, "mean"),
        ((64, 96), 32, 32, 3, "mean"),
        ((45, 81), 16, 10, 4, "mean"),
        ((70, 95), 32, 28, 2, "window"),
        ((37, 50), 8, 5, 1, "window"),
    ],
)
def test_equals_every_patch_alone_through_its_branch(size, p, s, scale, blend):
    model = make_model(scale=scale)
    x = ramp(*size)
    res = infer(model, x, patch_size=p, stride=s, batch_size=5, blend=blend)
    ref, chosen = reference(model, x, p, s, blend=blend)
    assert res.output.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.allclose(res.output, ref, atol=1e-5)
    assert (res.class_map.reshape(-1) == chosen).all()
    assert len(set(chosen.tolist())) == 3  # the routing really mixed branches
    assert res.class_counts == np.bincount(chosen, minlength=3).tolist()


def test_forced_classes_follow_the_caller():
    model = make_model(scale=2)
    x = torch.rand(1, 3, 60, 61)
    grid = patch_grid(60, 61, 32, 28)
    forced = np.random.default_rng(0).integers(0, 3, size=(grid.rows, grid.cols))
    res = infer(model, x, classes=forced)
    ref, _ = reference(model, x, 32, 28, classes=forced.reshape(-1))
    assert torch.allclose(res.output, ref, atol=1e-5)
    assert (res.class_map == forced).all()
    assert res.probs.shape == (grid.rows, grid.cols, 3)  # the classifier still ran


@pytest.mark.parametrize("blend", ["mean", "window"])
def test_forced_widest_interior_equals_the_branch_on_the_whole_image(blend):
    scale, p, s, radius = 2, 16, 12, 2  # two 3x3 convs: outputs depend on +-2 LR pixels
    model = make_model(scale=scale)
    x = torch.rand(1, 3, 50, 67)
    grid = patch_grid(50, 67, p, s)
    res = infer(model, x, patch_size=p, stride=s, classes=np.full(len(grid), 2), blend=blend)
    with torch.no_grad():
        whole = model.branches[2](x)
    # An LR pixel within `radius` of a patch edge saw that patch's zero padding, unless the
    # edge is the image border (where the whole-image run pads with zeros too).
    unsafe = torch.zeros(50, 67, dtype=torch.bool)
    for k in range(len(grid)):
        y, xx = grid.position(k)
        for lo, hi, axis, n in ((y, y + p, 0, 50), (xx, xx + p, 1, 67)):
            idx = []
            if lo > 0:
                idx += range(lo, lo + radius)
            if hi < n:
                idx += range(hi - radius, hi)
            for i in idx:
                sl = (i, slice(xx, xx + p)) if axis == 0 else (slice(y, y + p), i)
                unsafe[sl] = True
    safe = (~unsafe).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    assert safe.float().mean() > 0.3
    diff = (res.output - whole).abs()[0].amax(0)
    assert diff[safe].max() < 1e-5
    assert diff[~safe].max() > 1e-4  # the mask is not vacuous: patch borders do differ


def test_pointwise_branch_is_exact_everywhere():
    torch.manual_seed(0)
    branch = nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2))
    model = ClassWrapper(branches=[branch], scale=2).eval()
    x = torch.rand(1, 3, 41, 77)
    with torch.no_grad():
        whole = branch(x)
    for blend in ("mean", "window"):
        assert torch.allclose(model.infer(x, blend=blend).output, whole, atol=1e-5)


@functools.cache
def _models(scale: int):
    torch.manual_seed(scale)
    real = ClassWrapper(branches=[Branch(2, scale, 1), Branch(3, scale, 1)], scale=scale)
    ones = ClassWrapper(branches=[Branch(2, scale, 1)], scale=scale)
    with torch.no_grad():  # outputs exactly 1: any uncovered pixel would read 0 or NaN
        ones.branches[0].body[0].weight.zero_()
        ones.branches[0].body[0].bias.fill_(1)
    return real.eval(), ones.eval()


@st.composite
def tilings(draw):
    p = draw(st.sampled_from([8, 16, 32]))
    s = draw(st.integers(max(1, math.ceil(p * 0.6)), p))
    return p, s


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    scale=st.integers(1, 4),
    tiling=tilings(),
    seed=st.integers(0, 2**16),
)
def test_any_size_scale_and_tiling(h, w, scale, tiling, seed):
    p, s = tiling
    real, ones = _models(scale)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    res = infer(real, x, patch_size=p, stride=s, batch_size=64)
    assert res.output.shape == (1, 3, h * scale, w * scale)
    assert torch.isfinite(res.output).all()
    grid = res.grid
    assert grid.ys[-1] + p == max(h, p) and grid.xs[-1] + p == max(w, p)  # edge-aligned
    assert res.class_map.shape == (grid.rows, grid.cols)
    assert sum(res.class_counts) == len(grid)
    cover = infer(ones, x, patch_size=p, stride=s, batch_size=64).output
    assert torch.equal(cover, torch.ones_like(cover))  # every output pixel covered


def test_image_smaller_than_a_patch_is_padded_and_cropped():
    torch.manual_seed(0)
    branch = Branch(4, 2)
    model = ClassWrapper(branches=[branch], scale=2).eval()
    for h, w, mode in ((20, 25, "reflect"), (5, 3, "replicate")):
        x = torch.rand(1, 3, h, w)
        res = infer(model, x, patch_size=32, stride=28)
        assert res.padding == (32 - h, 32 - w)
        padded = F.pad(x, (0, 32 - w, 0, 32 - h), mode=mode)
        with torch.no_grad():
            expected = branch(padded)[..., : 2 * h, : 2 * w]
        assert torch.allclose(res.output, expected, atol=1e-5)


def test_numpy_uint8_in_numpy_uint8_out():
    model = make_model(scale=2)
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    res = infer(model, img)
    assert res.output.dtype == np.uint8 and res.output.shape == (80, 100, 3)
    as_tensor = infer(model, torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).output
    expected = (as_tensor[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(res.output, expected)
    grey = make_model(widths=(2, 3), scale=2, in_ch=1)
    out = infer(grey, img[:, :, 0]).output
    assert out.shape == (80, 100) and out.dtype == np.uint8


def test_tensor_3d_in_3d_out_and_batch_size_does_not_change_the_result():
    model = make_model(scale=2)
    x = torch.rand(3, 50, 70)
    a = infer(model, x, batch_size=1).output
    b = infer(model, x, batch_size=7).output
    assert a.shape == (3, 100, 140) and not a.is_inference()
    assert torch.allclose(a, b, atol=1e-5)


def test_memory_is_bounded_by_the_batch():
    model = make_model(scale=2)
    for i, b in enumerate(model.branches):
        model.branches[i] = Recorder(b)
    x = ramp(150, 200)
    res = infer(model, x, batch_size=6)
    for i, rec in enumerate(model.branches):
        assert all(n <= 6 for n in rec.batches)
        assert sum(rec.batches) == res.class_counts[i]
        assert len(rec.batches) == math.ceil(res.class_counts[i] / 6)  # one call per batch


def test_flops_are_counted_from_the_routing():
    model = ClassWrapper(branches=[Branch(2, 2), Branch(4, 2)], scale=2).eval()  # Class-Module
    x = torch.rand(1, 3, 60, 90)
    grid = patch_grid(60, 90, 32, 28)
    forced = np.arange(len(grid)) % 2
    res = infer(model, x, classes=forced)

    def branch_macs(w):  # conv 3->w, conv w->12 on 32x32
        return 32 * 32 * (w * 27 + 12 * w * 9)

    clf = 64 * 128 * 48 + 3 * 64 * 128 * 128 + 64 * 128 * 32 + 32 * 64 + 32 * 2
    n0, n1 = res.class_counts
    expected = len(grid) * clf + n0 * branch_macs(2) + n1 * branch_macs(4)
    assert res.flops == expected
    assert res.flops_fraction == pytest.approx(expected / (len(grid) * branch_macs(4)))
    assert res.flops_per_patch["branches"] == [branch_macs(2), branch_macs(4)]
    assert set(res.timings) >= {"classify", "branches", "stitch", "total"}
    assert res.timings["total"] >= res.timings["branches"] > 0


def test_result_geometry():
    model = make_model(scale=2)
    res = infer(model, torch.rand(1, 3, 61, 33), patch_size=32, stride=28)
    assert res.grid.ys == (0, 28, 29) and res.grid.xs == (0, 1)
    assert res.origins.tolist() == [[0, 0], [0, 1], [28, 0], [28, 1], [29, 0], [29, 1]]
    assert (res.patch_size, res.stride, res.scale) == (32, 28, 2)


def test_model_modes_are_restored():
    model = make_model(scale=2)
    model.train()
    model.branches[0].eval()  # e.g. a frozen branch during classifier training
    infer(model, torch.rand(1, 3, 40, 40))
    assert model.training and model.classifier.training
    assert not model.branches[0].training and model.branches[1].training


def test_bad_input_gets_clear_errors():
    model = make_model(scale=2)
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(InputError, match="1 channels but the model expects 3"):
        infer(model, torch.rand(1, 1, 40, 40))
    with pytest.raises(InputError, match="3D"):
        infer(model, torch.rand(1, 1, 3, 40, 40))
    bad = x.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        infer(model, bad)
    bad[0, 0, 3, 3] = float("inf")
    with pytest.raises(InputError, match="Inf"):
        infer(model, bad)
    with pytest.raises(InputError, match="stride 40"):
        infer(model, x, patch_size=32, stride=40)
    with pytest.raises(InputError, match="uint8"):
        infer(model, np.zeros((40, 40, 3), dtype=np.float32))
    with pytest.raises(InputError, match="one image at a time"):
        infer(model, torch.rand(2, 3, 40, 40))
    with pytest.raises(InputError, match="patch grid"):
        infer(model, x, classes=[0, 1])
    with pytest.raises(InputError, match=r"0\.\.2"):
        infer(model, x, classes=np.full((2, 2), 3))
    with pytest.raises(InputError, match="blend"):
        infer(model, x, blend="max")
    with pytest.raises(InputError, match="batch_size"):
        infer(model, x, batch_size=0)
    with pytest.raises(InputError, match="torch.Tensor"):
        infer(model, [[0.5]])


def test_assign_classes_argmax_and_budget():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    assert assign_classes(probs).tolist() == [1, 0]
    costs = {"classifier": 0.0, "branches": [1.0, 2.0, 3.0]}
    assert assign_classes(probs, budget=1.0, costs=costs).tolist() == [2, 2]
    assert assign_classes(probs, budget=0.1, costs=costs).tolist() == [0, 0]
    with pytest.raises(InputError, match="FLOPs"):
        assign_classes(probs, budget=0.5)


def test_branch_with_the_wrong_scale_is_named():
    model = ClassWrapper(branches=[Branch(2, 2), nn.Identity()], scale=2).eval()
    with pytest.raises(InputError, match="branch 1 maps a 32x32 patch"):
        infer(model, torch.rand(1, 3, 40, 40), classes=[[1, 1], [1, 1]])


def test_default_batch_sizes_depend_on_device_and_branch_cost():
    assert default_batch_size("cpu", 25e6) == 64  # FSRCNN-like: amortise call overhead
    assert default_batch_size("cpu", 2.6e9) == 4  # SRResNet-like: stay in cache
    assert default_batch_size("cpu", 191e6) == 4  # CARN-M's cheapest branch too
    assert default_batch_size("cpu") == 4  # unknown cost counts as heavy
    assert default_batch_size("cuda", 2.6e9) >= 64
    res = infer(make_model(scale=2), torch.rand(1, 3, 40, 40))
    assert res.batch_sizes == [64, 64, 64]
    assert infer(make_model(scale=2), torch.rand(1, 3, 40, 40), batch_size=3).batch_sizes == [3] * 3
