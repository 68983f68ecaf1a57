"""The paper's four backbones: exact parameters, FLOPs as the paper's table, scales, quirks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from classsr_plugins.backbones.carn import DIV2K_MEAN
from classsr_plugins.backbones.fsrcnn import deconv_padding
from torch import nn

from classsr_core.analysis.flops import count_flops, count_params
from classsr_core.cli import main
from classsr_core.errors import InputError
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.plugins.registry import lookup, resolve

PATCH = (1, 3, 32, 32)

# Per-branch parameters: exact, and they add up (with the 60,035 of the Class-Module) to
# the official whole-model counts. The reference table rounds them (10.8K / 17.6K / ...).
PARAMS = {
    "fsrcnn": ([16, 36, 56], [10_755, 17_635, 24_515], 112_940),
    "carn_m": ([36, 52, 64], [94_851, 195_651, 294_939], 645_476),
    "srresnet": ([36, 52, 64], [481_683, 1_002_771, 1_517_571], 3_062_060),
    "rcan": ([36, 50, 64], [4_940_707, 9_521_827, 15_592_379], 30_114_948),
}
TABLE_PARAMS = {
    "fsrcnn": [10.8e3, 17.6e3, 24.5e3],
    "carn_m": [95e3, 196e3, 295e3],
    "srresnet": [0.48e6, 1.00e6, 1.52e6],
    "rcan": [4.94e6, 9.52e6, 15.59e6],
}
# The reference table, paper convention (2 x multiply-adds, FSRCNN's deconv at HR size).
PAPER_FLOPS = {
    "fsrcnn": [141e6, 304e6, 468e6],
    "carn_m": [0.38e9, 0.77e9, 1.15e9],
    "srresnet": [1.66e9, 3.44e9, 5.20e9],
    "rcan": [10.33e9, 19.90e9, 32.60e9],
}
# The reference's fvcore measurements (multiply-adds, deconv at its input size).
FVCORE_FLOPS = {
    "fsrcnn": [10.9e6, 17.9e6, 24.9e6],
    "carn_m": [191e6, 387e6, 579e6],
    "srresnet": [829e6, 1719e6, 2597e6],
}
CLASSIFIER = 60_035
SLOW = {"rcan"}  # 30M parameters: building and tracing takes a while on 2 cores


def _backbones():
    return [pytest.param(b, marks=pytest.mark.slow) if b in SLOW else b for b in PARAMS]


@pytest.fixture(scope="module")
def models():
    cache: dict[str, ClassWrapper] = {}

    def get(name: str) -> ClassWrapper:
        if name not in cache:
            cache[name] = ClassWrapper(name, widths=PARAMS[name][0], scale=4)
        return cache[name]

    return get


@pytest.mark.parametrize("name", _backbones())
def test_parameters_are_exact(models, name):
    widths, per_branch, total = PARAMS[name]
    model = models(name)
    assert [count_params(b) for b in model.branches] == per_branch
    assert count_params(model.classifier) == CLASSIFIER
    assert count_params(model) == total
    for got, table in zip(per_branch, TABLE_PARAMS[name]):
        assert abs(got - table) / table < 0.006  # the table's rounding


@pytest.mark.parametrize("name", _backbones())
def test_paper_flops_match_the_table(models, name):
    model = models(name)
    got = [count_flops(b, PATCH, "paper") for b in model.branches]
    for g, want in zip(got, PAPER_FLOPS[name]):
        assert abs(g - want) / want < 0.01, (name, got)
    if name in FVCORE_FLOPS:
        # No transposed conv outside FSRCNN: there the conventions differ by exactly 2x
        # (tracing again would only double the test's time).
        if name == "fsrcnn":
            got = [count_flops(b, PATCH, "fvcore") for b in model.branches]
        else:
            got = [g / 2 for g in got]
        for g, want in zip(got, FVCORE_FLOPS[name]):
            assert abs(g - want) / want < 0.01, (name, got)
    assert abs(count_flops(model.classifier, PATCH, "fvcore") - 3.8e6) / 3.8e6 < 0.01


@pytest.mark.parametrize(
    "name", ["fsrcnn", *[pytest.param(b, marks=pytest.mark.slow) for b in PARAMS if b != "fsrcnn"]]
)
def test_flops_command_matches_the_table(capsys, name):
    widths = ",".join(map(str, PARAMS[name][0]))
    args = ["flops", "--backbone", name, "--widths", widths, "--convention", "paper", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["convention"] == "paper" and report["patch"] == 32 and report["scale"] == 4
    assert [b["params"] for b in report["branches"]] == PARAMS[name][1]
    for branch, want in zip(report["branches"], PAPER_FLOPS[name]):
        assert abs(branch["flops"] - want) / want < 0.01
    assert report["classifier"]["params"] == CLASSIFIER


def test_fsrcnn_conventions_differ_by_the_deconv_only(models):
    """Paper / fvcore for FSRCNN: 2x, and the 9x9 deconv at 16x the pixels (x4)."""
    big = models("fsrcnn").branches[2]
    paper, fvc = count_flops(big, PATCH, "paper"), count_flops(big, PATCH, "fvcore")
    deconv = 56 * 3 * 81 * 32 * 32  # multiply-adds at the LR size
    assert paper / 2 - fvc == pytest.approx(deconv * 15, rel=1e-9)
    assert 18 < paper / fvc < 20  # "inflates the widest branch about 19-fold"


SMALL = {  # tiny but complete versions, for shapes at every scale
    "fsrcnn": {"d": 8, "m": 1},
    "carn_m": {"nf": 8, "n_blocks": 1},
    "srresnet": {"nf": 8, "nb": 1},
    "rcan": {"n_feats": 16, "n_resblocks": 1, "n_resgroups": 1},
}


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [3, 1])
def test_every_scale_gives_exactly_scale_times_the_input(name, scale, channels):
    factory, meta = resolve("backbones", name)
    assert scale in meta["scales"]
    net = factory(scale=scale, in_channels=channels, **SMALL[name]).eval()
    x = torch.rand(2, channels, 7, 9)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, channels, 7 * scale, 9 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_fsrcnn_deconv_padding_formula(scale):
    padding, output_padding = deconv_padding(scale)
    for h in (1, 5):  # transposed conv output size
        assert (h - 1) * scale - 2 * padding + 9 + output_padding == scale * h
    assert 0 <= output_padding < max(scale, 1)
    if scale == 4:
        assert (padding, output_padding) == (3, 1)  # the official values


def test_registered_metadata():
    want = {
        "fsrcnn": ("d", "m"),
        "carn_m": ("nf", "n_blocks"),
        "srresnet": ("nf", "nb"),
        "rcan": ("n_feats", "n_resblocks"),
    }
    for name, (width_arg, depth_arg) in want.items():
        meta = lookup("backbones", name).metadata
        assert (meta["width_arg"], meta["depth_arg"]) == (width_arg, depth_arg)
        assert set(meta["scales"]) >= {2, 3, 4}
        assert meta["paper_widths"] == PARAMS[name][0]


def test_unknown_arguments_and_scales_are_refused():
    with pytest.raises(InputError, match="unknown arguments.*'nb'"):
        ClassWrapper("fsrcnn", widths=[8, 16], backbone_kwargs={"nb": 3})
    with pytest.raises(InputError, match="cannot upscale by 5"):
        ClassWrapper("srresnet", widths=[8, 16], scale=5)
    with pytest.raises(InputError, match="multiple of group"):
        ClassWrapper("carn_m", widths=[8, 10])


# -- branch generators over the real backbones ----------------------------------------
def test_depth_generator_on_srresnet():
    model = ClassWrapper("srresnet", depths=[4, 8, 16], scale=4)
    assert [len(b.recon_trunk) for b in model.branches] == [4, 8, 16]
    params = [count_params(b) for b in model.branches]
    assert params[0] < params[1] < params[2]
    # 4 blocks fewer is 4 x (two 3x3 64->64 convs with bias) fewer
    assert params[1] - params[0] == 4 * 2 * (64 * 64 * 9 + 64)
    assert model.spec["depths"] == [4, 8, 16]


def test_depth_and_width_depth_generators_on_the_others():
    carn = ClassWrapper("carn_m", depths=[1, 2, 3], scale=2)
    assert [b.n_blocks for b in carn.branches] == [1, 2, 3]
    assert hasattr(carn.branches[2], "b3") and not hasattr(carn.branches[0], "b2")
    fsrcnn = ClassWrapper("fsrcnn", width_depths=[(16, 2), (36, 4)], scale=3)
    convs = [sum(isinstance(m, nn.Conv2d) for m in b.body_conv.modules()) for b in fsrcnn.branches]
    assert convs == [2 + 2, 2 + 4]  # shrink + expand + m mapping convs
    assert fsrcnn.branches[1].head_conv[0].out_channels == 36
    rcan = ClassWrapper(
        "rcan", depths=[1, 2], scale=2, backbone_kwargs={"n_feats": 16, "n_resgroups": 2}
    )
    assert [len(b.body[0].body) - 1 for b in rcan.branches] == [1, 2]


def test_a_wrapped_backbone_trains_a_step_and_routes():
    model = ClassWrapper("fsrcnn", widths=[8, 16, 24], scale=2)
    x = torch.rand(4, 3, 16, 16)
    out, probs = model(x)
    assert out.shape == (4, 3, 32, 32) and probs.shape == (4, 3)
    F.l1_loss(out, torch.rand_like(out)).backward()
    assert all(p.grad is not None for p in model.branches[0].parameters())
    model.eval()
    with torch.no_grad():
        out, classes = model(x)
    assert out.shape == (4, 3, 32, 32) and classes.shape == (4,)


# -- the official quirks ---------------------------------------------------------------
def test_fsrcnn_has_one_prelu_after_the_mapping_convs():
    net = ClassWrapper("fsrcnn", widths=[56]).branches[0]
    kinds = [type(m).__name__ for m in net.body_conv]
    assert kinds == ["Sequential", "Conv2d", "Conv2d", "Conv2d", "Conv2d", "PReLU", "Sequential"]
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 4
    assert isinstance(net.tail_conv, nn.ConvTranspose2d) and net.tail_conv.stride == (4, 4)


def test_carn_reuses_one_residual_block_and_has_batchnorm_fusions():
    net = ClassWrapper("carn_m", widths=[36]).branches[0].eval()
    calls = {"n": 0}

    def count(*_):
        calls["n"] += 1

    net.b2.b1.register_forward_hook(count)
    with torch.no_grad():
        net(torch.rand(1, 3, 8, 8))
    assert calls["n"] == 3  # the shared block runs three times per cascading block
    assert not hasattr(net.b2, "b2")
    for fuse in (net.c1, net.c2, net.c3, net.b1.c1, net.b1.c2, net.b1.c3):
        assert isinstance(fuse[0], nn.Conv2d) and fuse[0].bias is None
        assert isinstance(fuse[1], nn.BatchNorm2d)
    assert net.b1.b1.body[0].groups == 4
    mean = torch.tensor(DIV2K_MEAN)
    torch.testing.assert_close(net.sub_mean.bias, -mean)
    torch.testing.assert_close(net.add_mean.bias, mean)
    assert not net.sub_mean.weight.requires_grad  # frozen (the official code meant to)


def test_msrresnet_adds_a_bilinear_copy_and_has_no_batchnorm():
    net = ClassWrapper("srresnet", widths=[36]).branches[0].eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert net.lrelu.negative_slope == 0.1
    with torch.no_grad():
        nn.init.zeros_(net.conv_last.weight)
        nn.init.zeros_(net.conv_last.bias)
        x = torch.rand(2, 3, 6, 5)
        want = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x), want, rtol=0, atol=0)


def test_rcan_is_10_groups_of_20_blocks_with_channel_attention():
    factory, _ = resolve("backbones", "rcan")
    net = factory(scale=4, n_feats=32)  # the width does not change the structure
    groups = net.body[:-1]
    assert len(groups) == 10 and all(len(g.body) == 21 for g in groups)
    ca = groups[0].body[0].body[3].conv_du
    assert (ca[0].in_channels, ca[0].out_channels) == (32, 2)  # reduction 16
    mean = torch.tensor(DIV2K_MEAN)
    torch.testing.assert_close(net.add_mean.bias, mean)
    net255 = factory(scale=2, n_feats=16, n_resblocks=1, n_resgroups=1, rgb_range=255)
    torch.testing.assert_close(net255.sub_mean.bias, -255 * mean)
    assert "rgb_range=255" in repr(net255)


def test_srresnet_width_0_is_bicubic_alone_and_the_cheapest_shared_branch():
    net = lookup("backbones", "srresnet").factory(scale=4, nf=0)
    assert count_params(net) == 0
    x = torch.rand(1, 3, 8, 8)
    want = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(net(x), want)
    torch.manual_seed(0)
    model = ClassWrapper(
        "srresnet", widths=[0, 16], shared_weights=True, backbone_kwargs={"nb": 2}
    ).eval()
    out = model.infer(torch.rand(1, 3, 64, 64), classes=torch.zeros(3, 3, dtype=torch.long))
    assert list(out.class_counts) == [9, 0]
    cheap, wide = out.flops_per_patch["branches"]
    assert cheap < 0.01 * wide  # the interpolation alone, beside even a 2-block SRResNet-16
    with pytest.raises(InputError, match="0 or more"):
        lookup("backbones", "srresnet").factory(scale=4, nf=-1)
