"""The bridges: any basicsr architecture as a backbone, any timm model as the classifier."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classsr_core.errors import InputError, PluginError
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.plugins.registry import get_registry, resolve
from classsr_core.training.losses import ClassSRLoss


def _train_step(model: ClassWrapper, size: int = 16, n: int = 4) -> None:
    """One optimiser step on random patches; every part must receive a gradient."""
    model.train()
    x = torch.rand(n, model.in_channels, size, size)
    target = torch.rand(n, model.in_channels, size * model.scale, size * model.scale)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out, probs = model(x)
    parts = ClassSRLoss()(out, target, probs)
    parts["total"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(changed) > len(changed) // 2


def _infer(model: ClassWrapper, h: int = 30, w: int = 26) -> None:
    model.eval()
    image = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    result = model.infer(image)
    assert result.output.shape == (h * model.scale, w * model.scale, 3)
    assert result.output.dtype == np.uint8
    assert sum(result.class_counts) == result.class_map.size > 1


def test_plugins_import_neither_basicsr_nor_timm():
    code = (
        "import sys\n"
        "from classsr_core.plugins.registry import get_registry\n"
        "reg = get_registry()\n"
        "assert 'basicsr:' in reg.names('backbones') and 'timm:' in reg.names('classifiers')\n"
        "print(sorted(m for m in ('basicsr', 'timm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_basicsr_edsr_trains_infers_and_reloads(tmp_path):
    # The example as written; small patches and image keep it quick on a CPU.
    model = ClassWrapper("basicsr:EDSR", widths=[32, 48, 64], scale=4, patch_size=8, stride=6)
    assert [b.conv_first.out_channels for b in model.branches] == [32, 48, 64]
    assert type(model.branches[0]).__module__.startswith("basicsr.")
    _train_step(model, size=8, n=2)
    _infer(model, 14, 12)
    path = tmp_path / "edsr.safetensors"
    model.save(path)
    again = load_model(path)
    device = next(again.parameters()).device
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        (a, ca), (b, cb) = model.eval()(x), again(x.to(device))
    assert ca.tolist() == cb.tolist()
    torch.testing.assert_close(a, b.cpu(), rtol=0, atol=0)


def test_basicsr_scale_keyword_and_depth_argument():
    # RRDBNet calls its scale "scale" (EDSR: "upscale") and its depth "num_block".
    model = ClassWrapper(
        "basicsr:RRDBNet",
        depths=[1, 2],
        scale=2,
        backbone_kwargs={"num_feat": 8, "num_grow_ch": 4},
    )
    assert [len(b.body) for b in model.branches] == [1, 2]
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 8, 8))[0].shape == (2, 3, 16, 16)
    with pytest.raises(InputError, match="cannot upscale by 1"):
        ClassWrapper("basicsr:EDSR", widths=[8, 16], scale=1)


def test_basicsr_unknown_arch_lists_the_registry():
    with pytest.raises(PluginError, match="no architecture 'NoSuchNet'.*EDSR"):
        ClassWrapper("basicsr:NoSuchNet", widths=[8, 16])


def test_basicsr_arch_without_known_width(monkeypatch, tmp_path):
    """An architecture missing from the table: guessed names, or the user's width_arg."""
    from classsr_plugins.backbones import basicsr_bridge

    monkeypatch.setattr(basicsr_bridge, "KNOWN", {})
    _, meta = resolve("backbones", "basicsr:SRVGGNetCompact")  # alias of ..._basicsr
    assert meta["width_arg"] == "num_feat" and meta["scales"] is None  # probed instead
    model = ClassWrapper("basicsr:SRVGGNetCompact", widths=[8, 16], scale=3)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 8, 8))[0].shape == (1, 3, 24, 24)
    # ECBSR's width is "num_channel": unknown here, so the user names it
    with pytest.raises(InputError, match="width_arg"):
        ClassWrapper("basicsr:ECBSR", widths=[8, 16], scale=2)
    model = ClassWrapper(
        "basicsr:ECBSR",
        widths=[8, 16],
        scale=2,
        width_arg="num_channel",
        backbone_kwargs={"num_block": 1, "with_idt": False, "act_type": "prelu"},
    )
    assert model.branches[1].backbone[0].out_channels == 16
    model.save(tmp_path / "ecbsr.safetensors")  # the user's width_arg travels with the file
    again = load_model(tmp_path / "ecbsr.safetensors")
    assert again.branches[1].backbone[0].out_channels == 16


def test_basicsr_missing_argument_names_them():
    with pytest.raises(InputError, match="bogus.*its arguments are num_in_ch"):
        ClassWrapper(
            "basicsr:ECBSR",
            widths=[8, 16],
            scale=2,
            backbone_kwargs={"num_block": 1, "with_idt": None, "bogus": 1},
        )


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050"])
def test_timm_classifier_on_32x32_patches(name):
    factory, meta = resolve("classifiers", f"timm:{name}")
    assert meta["timm_model"] == name
    net = factory(num_classes=3, in_channels=3, patch_size=32).eval()
    with torch.no_grad():
        assert net(torch.rand(5, 3, 32, 32)).shape == (5, 3)


def test_timm_classifier_trains_infers_and_reloads(tmp_path):
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, classifier="timm:resnet10t")
    assert type(model.classifier).__module__.startswith("timm.")
    _train_step(model, size=32)
    _infer(model, 40, 36)
    path = tmp_path / "timm.safetensors"
    model.save(path)
    again = load_model(path)
    device = next(again.parameters()).device
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().classify(x), again.classify(x.to(device)).cpu(), rtol=0, atol=0
        )


def test_timm_unknown_model_suggests_names():
    with pytest.raises(PluginError, match="no model 'resnet10x'.*resnet10t"):
        ClassWrapper("fsrcnn", widths=[8, 16], classifier="timm:resnet10x")


def test_families_are_listed():
    reg = get_registry()
    assert "basicsr:" in reg.names("backbones")
    assert "timm:" in reg.names("classifiers")
    with pytest.raises(InputError, match="basicsr:EDSR"):
        reg.get("backbones", "basicsr:").factory()


def test_soft_mix_uses_the_timm_probabilities():
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, classifier="timm:resnet10t").train()
    x = torch.rand(4, 3, 32, 32)
    out, probs = model(x)
    want = sum(probs[:, i, None, None, None] * b(x) for i, b in enumerate(model.branches))
    torch.testing.assert_close(out, want)
    assert F.l1_loss(probs.sum(1), torch.ones(4)) < 1e-6
