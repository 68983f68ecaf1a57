"""The scale-1 tasks (denoise, deblock) and the dncnn backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from classsr_plugins.backbones.dncnn import DnCNN, dncnn
from classsr_plugins.tasks.deblock import (
    blocking_effect_factor,
    jpeg_roundtrip,
    luma,
    luma_scores,
)
from torch import nn

from classsr_core import ClassWrapper
from classsr_core.errors import ConfigError, InputError
from classsr_core.plugins.registry import get_registry, lookup, resolve
from classsr_core.training.config import validate_train_config


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    """A crop of a real photo (scikit-image ships it), float32 HWC in [0, 1]."""
    import skimage.data

    return skimage.data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float32) / 255.0


def _task(name: str, **options):
    return lookup("tasks", name).factory(**options)


# -- registration ------------------------------------------------------------------------
def test_tasks_and_backbone_are_builtin_plugins():
    rows = {r["name"]: r for r in get_registry().describe()}
    assert rows["denoise"]["tasks"] == ["denoise"] and rows["denoise"]["dist"] == "classsr"
    assert rows["deblock"]["tasks"] == ["deblock"] and rows["deblock"]["dist"] == "classsr"
    assert rows["dncnn"]["backbones"] == ["dncnn"] and rows["dncnn"]["dist"] == "classsr"
    for name in ("denoise", "deblock"):
        task = _task(name)
        assert (task.name, task.scale, task.crop_border()) == (name, 1, 0)
        assert lookup("tasks", name).metadata["config_model"] is not None


# -- denoise -----------------------------------------------------------------------------
def test_denoise_noise_level_and_determinism():
    hr = np.full((64, 64, 3), 0.5, np.float32)  # mid-grey: 25/255 noise never clips here
    task = _task("denoise", sigma=25)
    a = task.make_input(hr, np.random.default_rng(7))
    b = task.make_input(hr, np.random.default_rng(7))
    c = task.make_input(hr, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == hr.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(float((a - hr).std()) * 255 - 25) < 0.5
    assert abs(float((a - hr).mean()) * 255) < 0.5
    assert task.make_input(hr, np.random.default_rng(0)).std() > 0
    np.testing.assert_array_equal(
        _task("denoise", sigma=0).make_input(hr, np.random.default_rng(0)), hr
    )


def test_denoise_clips_to_the_valid_range():
    hr = np.zeros((32, 32, 3), np.float32)
    hr[:, 16:] = 1.0
    out = _task("denoise", sigma=50).make_input(hr, np.random.default_rng(0))
    assert out.min() == 0.0 and out.max() == 1.0
    # half of the noise is clipped away at black / white
    assert 0.3 < (out[:, :16] == 0).mean() < 0.7 and 0.3 < (out[:, 16:] == 1).mean() < 0.7


def test_denoise_blind_draws_sigma_per_image_in_range():
    task = _task("denoise", sigma_range=[5, 50])
    sigmas = [task.draw_sigma(np.random.default_rng(s)) for s in range(200)]
    assert min(sigmas) >= 5 and max(sigmas) <= 50 and max(sigmas) - min(sigmas) > 30
    hr = np.full((64, 64, 3), 0.5, np.float32)
    # the drawn sigma is the one applied: the same generator state gives the same sigma
    for seed in (1, 2):
        expected = task.draw_sigma(np.random.default_rng(seed))
        noisy = task.make_input(hr, np.random.default_rng(seed))
        assert abs(float((noisy - hr).std()) * 255 - expected) < 0.06 * expected + 0.3


def test_denoise_scores_psnr_on_8bit_rgb():
    hr = _photo()
    noisy = _task("denoise", sigma=15).make_input(hr, np.random.default_rng(0))
    scores = _task("denoise").score(noisy, hr)
    a = np.rint(noisy * 255).astype(np.float64)
    b = np.rint(hr * 255).astype(np.float64)
    expected = 10 * math.log10(255**2 / np.mean((a - b) ** 2))
    assert scores["psnr"] == pytest.approx(expected, abs=1e-6)  # crop_border 0: every pixel
    assert 0 < scores["ssim"] < 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sigma": 25, "sigma_range": [5, 50]}, "not both"),
        ({"sigma_range": [50, 5]}, "lo <= hi"),
        ({"sigma": -1}, "greater than or equal to 0"),
        ({"sigam": 25}, "unknown key 'sigam'"),
    ],
)
def test_denoise_rejects_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        _task("denoise", **options)


@pytest.mark.parametrize("task", ["denoise", "deblock"])
def test_tasks_reject_images_outside_the_contract(task):
    t = _task(task)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="float32"):
        t.make_input(np.zeros((8, 8, 3), np.uint8), rng)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        t.make_input(np.full((8, 8, 3), 2.0, np.float32), rng)


# -- deblock -----------------------------------------------------------------------------
def test_deblock_is_a_real_jpeg_roundtrip():
    import io

    from PIL import Image

    hr = _photo()
    out = _task("deblock", quality=30).make_input(hr, np.random.default_rng(0))
    buf = io.BytesIO()
    Image.fromarray(np.rint(hr * 255).astype(np.uint8)).save(buf, "JPEG", quality=30)
    expected = np.asarray(Image.open(buf), dtype=np.float32) / 255
    np.testing.assert_array_equal(out, expected)  # Pillow's default subsampling: 4:2:0
    assert out.dtype == np.float32 and out.shape == hr.shape
    # the rng plays no part at a fixed quality: same output whatever the seed
    np.testing.assert_array_equal(out, _task("deblock", quality=30).make_input(hr, None))


def test_deblock_quality_orders_the_damage():
    hr = _photo()
    psnr = [
        _task("deblock").score(_task("deblock", quality=q).make_input(hr, None), hr)["psnr"]
        for q in (5, 20, 60, 95)
    ]
    assert psnr == sorted(psnr) and psnr[0] < 28 < psnr[-1]


def test_deblock_options_and_grey_images():
    hr = _photo()
    full = _task("deblock", quality=20, subsampling="4:4:4").make_input(hr, None)
    sub = _task("deblock", quality=20).make_input(hr, None)
    assert not np.array_equal(full, sub)
    grey = hr.mean(axis=2)
    assert jpeg_roundtrip(grey, 20).shape == grey.shape
    assert jpeg_roundtrip(grey[:, :, None], 20).shape == grey.shape + (1,)
    with pytest.raises(InputError, match="4 channels"):
        jpeg_roundtrip(np.zeros((8, 8, 4), np.float32), 20)
    blind = _task("deblock", quality_range=[10, 40])
    qs = {blind.draw_quality(np.random.default_rng(s)) for s in range(100)}
    assert min(qs) >= 10 and max(qs) <= 40 and len(qs) > 15
    for options, message in [
        ({"quality": 0}, "greater than or equal to 1"),
        ({"quality": 20, "quality_range": [10, 40]}, "not both"),
        ({"quality_range": [40, 10]}, "lo <= hi"),
        ({"subsampling": "4:1:1"}, "subsampling"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _task("deblock", **options)


def test_blocking_effect_factor_sees_8x8_edges():
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))  # smooth: no block edges
    assert blocking_effect_factor(ramp) == 0.0
    blocky = np.kron(np.random.default_rng(0).uniform(0, 255, (8, 8)), np.ones((8, 8)))
    # all of the variation sits on block edges: D_B > 0 = D_Bc, eta = log2(8)/log2(64)
    d_b = ((blocky[:, 8::8] - blocky[:, 7:-1:8]) ** 2).sum() + (
        (blocky[8::8] - blocky[7:-1:8]) ** 2
    ).sum()
    d_b /= 2 * 64 * 7
    assert blocking_effect_factor(blocky) == pytest.approx(0.5 * d_b)


def test_deblock_scores_report_the_blocking_penalty():
    hr = _photo()
    jpeg = _task("deblock", quality=10).make_input(hr, None)
    scores = _task("deblock").score(jpeg, hr)
    assert set(scores) == {"psnr", "ssim", "psnr_y", "psnr_b"}
    assert scores["psnr_b"] < scores["psnr_y"]  # a q10 JPEG is visibly blocky
    assert blocking_effect_factor(luma(jpeg)) > blocking_effect_factor(luma(hr))
    clean = luma_scores(hr, hr)
    assert clean["psnr_y"] == math.inf and clean["psnr_b"] < math.inf  # BEF of hr itself


# -- the training config's task section -------------------------------------------------
def test_train_config_validates_task_options_with_the_plugins_model():
    base = {"model": {"backbone": "dncnn", "widths": [16, 32, 64]}, "data": {"train": "x"}}
    cfg = validate_train_config({**base, "task": {"name": "denoise", "sigma_range": [0, 55]}})
    task = cfg.make_task()
    assert (task.name, task.scale, task.sigma_range) == ("denoise", 1, (0.0, 55.0))
    cfg = validate_train_config({**base, "task": {"name": "deblock", "quality": 10}})
    assert cfg.make_task().quality == 10
    with pytest.raises(ConfigError, match="unknown key 'task.qualty'"):
        validate_train_config({**base, "task": {"name": "deblock", "qualty": 10}})


# -- dncnn ---------------------------------------------------------------------------------
def test_dncnn_structure_and_residual_learning():
    net = dncnn(nf=16, nb=5)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5  # nb counts every convolution
    assert [c.out_channels for c in convs] == [16, 16, 16, 16, 3]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    # 3x3 convs: 3*16*9+16, 3 x (16*16*9+16), 16*3*9+3
    assert sum(p.numel() for p in net.parameters()) == 448 + 3 * 2320 + 435
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)  # a fresh network predicts zero noise: the identity
        net.body[-1].weight.normal_(0, 0.01)
        y = net(x)
        assert y.shape == x.shape and not torch.equal(y, x)
        assert torch.allclose(y, x - net.body(x))  # residual: input minus predicted noise
    bn = dncnn(nf=8, nb=4, bn=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2
    assert dncnn(in_channels=1, nf=8, nb=3)(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert DnCNN().body[-1].out_channels == 3 and len(DnCNN().body) == 2 * 17 - 1


def test_dncnn_rejects_what_it_cannot_do():
    with pytest.raises(InputError, match="unknown arguments \\['width'\\]"):
        dncnn(width=16)
    with pytest.raises(InputError, match="cannot upscale by 2"):
        dncnn(scale=2)
    with pytest.raises(InputError, match="nb >= 2"):
        dncnn(nb=1)
    with pytest.raises(InputError, match="cannot upscale by 4.*supports scales \\[1\\]"):
        ClassWrapper("dncnn", widths=[8, 16], scale=4)


def test_dncnn_in_classwrapper_at_scale_1():
    _, meta = resolve("backbones", "dncnn")
    assert meta["scales"] == (1,) and meta["paper_widths"] == [16, 32, 64]
    model = ClassWrapper("dncnn", widths=[4, 8, 16], scale=1, backbone_kwargs={"nb": 4})
    assert [b.body[0].out_channels for b in model.branches] == [4, 8, 16]
    x = torch.rand(5, 3, 32, 32)
    model.train()
    out, probs = model(x)
    assert out.shape == x.shape and probs.shape == (5, 3)
    model.eval()
    with torch.no_grad():
        out, classes = model(x)
        for i in range(5):  # each patch went through exactly its own branch
            assert torch.allclose(out[i], model.branches[classes[i]](x[i : i + 1])[0], atol=1e-6)
    deep = ClassWrapper("dncnn", depths=[3, 5], scale=1, backbone_kwargs={"nf": 8})
    assert [len(b.body) for b in deep.branches] == [5, 9]
    shared = ClassWrapper("dncnn", widths=[4, 8], scale=1, shared_weights=True)
    assert sum(p.numel() for p in shared.branches.parameters()) == sum(
        p.numel() for p in dncnn(nf=8).parameters()
    )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fsrcnn", {"m": 1}),
        ("carn_m", {}),
        ("srresnet", {"nb": 1}),
        ("rcan", {"n_resgroups": 1, "n_resblocks": 1, "reduction": 4}),
    ],
)
def test_sr_backbones_also_run_at_scale_1(name, kwargs):
    _, meta = resolve("backbones", name)
    assert 1 in meta["scales"]
    model = ClassWrapper(name, widths=[8, 16], scale=1, backbone_kwargs=kwargs).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out, _ = model(x)
    assert out.shape == x.shape


# -- through the pipeline: prepare, divide, train, tile engine -------------------------
@pytest.mark.slow
def test_scale1_tasks_through_prepare_divide_train_and_infer(tmp_path):
    from classsr_core import load_model
    from classsr_core.training.dataset import Store
    from classsr_core.training.divide import divide
    from classsr_core.training.prepare import prepare
    from classsr_core.training.trainer import train

    def config(task: dict, out: str):
        stage = {"iterations": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1}
        return validate_train_config(
            {
                "seed": 0,
                "out": str(tmp_path / out),
                "task": task,
                "model": {"backbone": "dncnn", "widths": [4, 8], "backbone_kwargs": {"nb": 3}},
                "data": {
                    "train": "skimage:coffee",
                    "val": "skimage:chelsea",
                    "crop": 32,
                    "step": 96,
                },
                "stages": {"branches": stage, "classifier": stage, "joint": stage},
            }
        )

    # deblock: the stored inputs are the JPEG round trip of the stored 8-bit HR sub-images
    cfg = config({"name": "deblock", "quality": 15}, "deblock")
    prepare(cfg, progress=False)
    store = Store(cfg.store_dir)
    lr, hr = store.item_arrays(0, mmap=False)
    assert lr.shape == hr.shape and lr.shape[1:] == (32, 32, 3)
    whole_hr = store.val_images()[0][2]
    whole_lr = store.val_images()[0][1]
    expected = jpeg_roundtrip(whole_hr.astype(np.float32) / 255, 15)
    np.testing.assert_array_equal(whole_lr, np.rint(expected * 255).astype(np.uint8))
    info = divide(cfg, progress=False, quiet=True)  # no reference: the JPEG's own PSNR
    assert sum(info["counts"]) == len(store) and min(info["counts"]) > 0

    # denoise: all three stages, then the saved model restores a photo through the tiles
    cfg = config({"name": "denoise", "sigma": 25}, "denoise")
    trainer = train(cfg, "all", progress=False)
    assert [r.stage for r in trainer.results] == ["branches", "classifier", "joint"]
    model = load_model(trainer.results[-1].path).eval()
    assert model.scale == 1 and model.spec["backbone"] == "dncnn"
    x = torch.rand(1, 3, 45, 70)
    result = model.infer(x)
    assert result.output.shape == x.shape and sum(result.class_counts) == result.class_map.size
    # what was spent: the classifier on every patch plus each patch's own branch
    from classsr_core.analysis.flops import model_costs

    costs = model_costs(model)
    n = sum(result.class_counts)
    spent = n * costs["classifier"]["flops"] + sum(
        c * b["flops"] for c, b in zip(result.class_counts, costs["branches"])
    )
    assert result.flops == pytest.approx(spent, rel=1e-6)
    assert result.flops_fraction == pytest.approx(spent / (n * costs["branches"][-1]["flops"]))
