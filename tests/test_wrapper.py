"""ClassWrapper: soft mix in training, hard routing in eval, construction and persistence."""

from __future__ import annotations

import pytest
import torch
from nets import TinyNet
from torch import nn

from classsr_core.errors import CheckpointError, InputError
from classsr_core.model.classifier import ClassModule
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper


class AlwaysX2(nn.Module):
    def __init__(self, nf: int = 4):
        super().__init__()
        self.c = nn.Conv2d(3, 12, 3, 1, 1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return self.up(self.c(x))


class Brightness(nn.Module):
    """Routes by mean brightness (dark -> branch 0 ... bright -> branch M-1)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.3, 0.9, num_classes))

    def forward(self, x):
        return -100 * (x.mean(dim=(1, 2, 3))[:, None] - self.centres[None, :]) ** 2


def spread(model: ClassWrapper) -> ClassWrapper:
    # A fresh Class-Module sends every patch to the same branch; route by content instead
    # so that the routing mechanics are exercised on several branches.
    model.classifier = Brightness(model.num_classes)
    return model


def patches(n: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    amp = torch.linspace(0.05, 0.6, n).view(n, 1, 1, 1)  # smooth ... textured
    mean = torch.linspace(0.9, 0.3, n).view(n, 1, 1, 1)  # and of different brightness
    return (mean + amp * (torch.rand(n, 3, 32, 32, generator=g) - 0.5)).clamp(0, 1)


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_training_mode_returns_the_soft_mix_of_all_branches(m):
    model = ClassWrapper(TinyNet, widths=[2 * (i + 1) for i in range(m)], width_arg="nf", scale=2)
    assert len(model.branches) == m and isinstance(model.classifier, ClassModule)
    assert [b.c1.out_channels for b in model.branches] == [2 * (i + 1) for i in range(m)]
    model.train()
    x = patches()
    out, probs = model(x)
    assert probs.shape == (12, m)
    assert torch.allclose(probs.sum(1), torch.ones(12))
    assert torch.allclose(probs, model.classifier(x).softmax(1))
    expected = sum(probs[:, i, None, None, None] * model.branches[i](x) for i in range(m))
    assert torch.allclose(out, expected, atol=1e-6)
    out.mean().backward()  # the mix is differentiable w.r.t. the classifier
    assert model.classifier.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("m", [2, 3, 5])
def test_eval_routes_each_patch_to_its_argmax_branch(m):
    model = spread(ClassWrapper(TinyNet, widths=list(range(2, 2 + m)), width_arg="nf", scale=2))
    model.eval()
    x = patches()
    with torch.no_grad():
        out, classes = model(x)
        assert torch.equal(classes, model.classifier(x).argmax(1))
        assert len(set(classes.tolist())) >= 2
        for k in range(len(x)):
            alone = model.branches[int(classes[k])](x[k : k + 1])
            assert torch.allclose(out[k : k + 1], alone, atol=1e-5)


def test_each_branch_runs_once_on_its_own_patches():
    model = spread(ClassWrapper(TinyNet, widths=[2, 4, 6], width_arg="nf", scale=2)).eval()
    seen = {i: [] for i in range(3)}
    for i, b in enumerate(model.branches):
        b.register_forward_hook(lambda mod, inp, out, i=i: seen[i].append(inp[0].shape[0]))
    with torch.no_grad():
        _, classes = model(patches())
    for i in range(3):
        count = int((classes == i).sum())
        assert seen[i] == ([count] if count else [])


def test_explicit_branches():
    branches = [TinyNet(2), TinyNet(4), TinyNet(6)]
    model = ClassWrapper(branches=branches, scale=2)
    assert list(model.branches) == branches and model.spec is None
    out, probs = model.train()(patches(4))
    assert out.shape == (4, 3, 64, 64) and probs.shape == (4, 3)
    with pytest.raises(CheckpointError, match="explicit branch modules"):
        model.save("unused.safetensors")


def test_single_branch_is_the_plain_network_without_classifier():
    model = ClassWrapper(TinyNet, widths=[8], width_arg="nf", scale=2)
    assert model.classifier is None
    x = patches(3)
    out, probs = model.train()(x)
    assert torch.equal(probs, torch.ones(3, 1))
    assert torch.allclose(out, model.branches[0](x))
    with torch.no_grad():
        out, classes = model.eval()(x)
    assert classes.tolist() == [0, 0, 0]


def test_registered_backbone_save_and_load_roundtrip(tmp_path):
    model = ClassWrapper("fsrcnn", widths=[16, 36, 56], scale=4).eval()
    with torch.no_grad():  # weights no fresh model has: the file must carry them
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = load_model(path, device="cpu")
    assert not loaded.training
    assert loaded.spec == model.spec
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = patches(6)
    with torch.no_grad():
        a, ca = model(x)
        b, cb = loaded(x)
    assert torch.equal(ca, cb) and torch.allclose(a, b)


def test_custom_class_save_and_load_roundtrip(tmp_path):
    model = ClassWrapper(TinyNet, widths=[2, 4], width_arg="nf", scale=2).eval()
    model.save(tmp_path / "m.safetensors")
    assert model.spec["backbone"].endswith(":TinyNet")
    loaded = load_model(tmp_path / "m.safetensors", device="cpu", trust_code=True)
    assert [type(b) for b in loaded.branches] == [TinyNet, TinyNet]
    with torch.no_grad():
        assert torch.allclose(model(patches(2))[0], loaded(patches(2))[0])


@pytest.mark.parametrize(
    "widths,match", [([], "empty"), ([36, 16], "increasing"), ([16, 16], "increasing")]
)
def test_widths_must_be_increasing_and_non_empty(widths, match):
    with pytest.raises(InputError, match=match):
        ClassWrapper("fsrcnn", widths=widths)


def test_construction_errors_name_the_fix():
    with pytest.raises(InputError, match="exactly one of widths"):
        ClassWrapper("fsrcnn")
    with pytest.raises(InputError, match="either a backbone or explicit branches"):
        ClassWrapper("fsrcnn", branches=[TinyNet()])
    with pytest.raises(InputError, match="cannot upscale by 4"):
        ClassWrapper(AlwaysX2, widths=[4, 8], width_arg="nf", scale=4)
    with pytest.raises(InputError, match="width_arg"):
        ClassWrapper(TinyNet, widths=[4, 8], scale=2)
    with pytest.raises(InputError, match="stride"):
        ClassWrapper(TinyNet, widths=[4, 8], width_arg="nf", scale=2, stride=40)


def test_infer_is_the_tile_engine():
    model = ClassWrapper(TinyNet, widths=[2, 4], width_arg="nf", scale=2).eval()
    x = torch.rand(1, 3, 50, 40)
    res = model.infer(x, stride=20)
    out, res2 = model.upscale(x, stride=20)
    assert res.output.shape == (1, 3, 100, 80) and torch.equal(out, res.output)
    assert res.grid.ys == (0, 18) and res2.class_counts == res.class_counts


def test_a_centred_class_module_ignores_brightness_and_saves_the_flag(tmp_path):
    torch.manual_seed(0)
    plain, centred = ClassModule(init_scale=1.0), ClassModule(init_scale=1.0, center=True)
    centred.load_state_dict(plain.state_dict())  # same weights: only the flag differs
    x = torch.rand(4, 3, 32, 32) * 0.5
    brighter = x + torch.tensor([0.3, 0.1, 0.2]).view(1, 3, 1, 1)
    assert torch.allclose(centred(x), centred(brighter), atol=1e-5)
    assert not torch.allclose(plain(x), plain(brighter), atol=1e-3)
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, classifier_kwargs={"center": True})
    model.save(tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").classifier.center is True
