"""Official ClassSR checkpoints: load, reproduce the official outputs and routing, refuse.

The checkpoints are built from the official key listings
(``shared/reference/official_state_dicts/*.json``) with seeded random weights. The official
networks are re-implemented here as plain functions of that state dict, written from the
official layouts, so our modules are checked against an independent forward pass.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from classsr_core.cli import main
from classsr_core.errors import CheckpointError, InputError
from classsr_core.io.official import ARCHS, to_official, to_ours
from classsr_core.model.loading import from_official, load_model
from classsr_core.model.wrapper import ClassWrapper

REF = Path(__file__).resolve().parent / "data" / "official_state_dicts"
FILES = {
    "fsrcnn": "classSR_3class_fsrcnn_net.json.gz",
    "carn": "classSR_3class_carn.json.gz",
    "srresnet": "classSR_3class_srresnet.json.gz",
    "rcan": "classSR_3class_rcan.json.gz",
}


def listing(arch: str) -> dict:
    """The official checkpoint's keys, shapes and parameter count (vendored in tests/data)."""
    return json.loads(gzip.decompress((REF / FILES[arch]).read_bytes()))


def official_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout (keys and shapes from the listing)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in listing(arch)["state_dict_shapes"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2:  # conv / linear weights: variance-preserving
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight") and shape == [1]:  # PReLU slope
            state[key] = 0.25 + 0.05 * torch.randn(shape, generator=g)
        elif key.endswith("weight"):  # BatchNorm scale
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases, running means
            state[key] = 0.1 * torch.randn(shape, generator=g)
    if arch == "rcan":
        # 200 residual blocks add up: damp the residual convs as the official init (x0.1)
        # does, so the signal stays finite without making the blocks vanish.
        for key in state:
            if ".body.2.weight" in key and "conv_du" not in key:
                state[key] *= 0.3
    return state


# --- the official networks as functions of their state dict --------------------------
def conv(x, sd, key, stride=1, groups=1):
    w = sd[f"{key}.weight"]
    return F.conv2d(x, w, sd.get(f"{key}.bias"), stride, w.shape[-1] // 2, groups=groups)


def bn(x, sd, key):
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=False,
        eps=1e-5,
    )


def ref_classifier(x, sd):
    h = x
    for i in (0, 2, 4, 6):
        w = sd[f"classifier.CondNet.{i}.weight"]
        h = F.leaky_relu(F.conv2d(h, w, sd[f"classifier.CondNet.{i}.bias"], w.shape[-1]), 0.1)
    h = F.conv2d(h, sd["classifier.CondNet.8.weight"], sd["classifier.CondNet.8.bias"])
    return F.linear(
        h.mean(dim=(2, 3)), sd["classifier.lastOut.weight"], sd["classifier.lastOut.bias"]
    )


def ref_fsrcnn(x, sd, p):
    h = F.prelu(conv(x, sd, f"{p}head_conv.0"), sd[f"{p}head_conv.1.weight"])
    h = F.prelu(conv(h, sd, f"{p}body_conv.0.0"), sd[f"{p}body_conv.0.1.weight"])
    for i in range(1, 5):
        h = conv(h, sd, f"{p}body_conv.{i}")  # no activation between the mapping convs
    h = F.prelu(h, sd[f"{p}body_conv.5.weight"])
    h = F.prelu(conv(h, sd, f"{p}body_conv.6.0"), sd[f"{p}body_conv.6.1.weight"])
    w, b = sd[f"{p}tail_conv.weight"], sd[f"{p}tail_conv.bias"]
    return F.conv_transpose2d(h, w, b, stride=4, padding=3, output_padding=1)


def ref_carn(x, sd, p):
    def fuse(t, key):
        return F.relu(bn(F.conv2d(t, sd[f"{key}.0.weight"]), sd, f"{key}.1"))

    def eres(t, key):
        h = F.relu(conv(t, sd, f"{key}.body.0", groups=4))
        h = F.relu(conv(h, sd, f"{key}.body.2", groups=4))
        return F.relu(conv(h, sd, f"{key}.body.4") + t)

    def block(t, key):
        c = o = t
        for i in (1, 2, 3):  # the same residual block b1, three times
            c = torch.cat([c, eres(o, f"{key}.b1")], 1)
            o = fuse(c, f"{key}.c{i}")
        return o

    h = conv(conv(x, sd, f"{p}sub_mean"), sd, f"{p}entry")
    c = o = h
    for i in (1, 2, 3):
        c = torch.cat([c, block(o, f"{p}b{i}")], 1)
        o = fuse(c, f"{p}c{i}")
    for j in (0, 3):
        o = F.pixel_shuffle(F.relu(conv(o, sd, f"{p}upsample.up.body.{j}", groups=4)), 2)
    return conv(conv(o, sd, f"{p}exit"), sd, f"{p}add_mean")


def ref_srresnet(x, sd, p):
    fea = F.leaky_relu(conv(x, sd, f"{p}conv_first"), 0.1)
    out = fea
    for i in range(16):
        k = f"{p}recon_trunk.{i}"
        out = out + conv(F.relu(conv(out, sd, f"{k}.conv1")), sd, f"{k}.conv2")
    out = F.leaky_relu(F.pixel_shuffle(conv(out, sd, f"{p}upconv1"), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(conv(out, sd, f"{p}upconv2"), 2), 0.1)
    out = conv(F.leaky_relu(conv(out, sd, f"{p}HRconv"), 0.1), sd, f"{p}conv_last")
    return out + F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


def ref_rcan(x, sd, p, groups=10, blocks=20):
    """The official RCAN on 0..255 input."""
    h = conv(conv(x, sd, f"{p}sub_mean"), sd, f"{p}head.0")
    res = h
    for g in range(groups):
        r = res
        for b in range(blocks):
            k = f"{p}body.{g}.body.{b}.body"
            t = conv(F.relu(conv(r, sd, f"{k}.0")), sd, f"{k}.2")
            y = t.mean(dim=(2, 3), keepdim=True)
            y = torch.sigmoid(conv(F.relu(conv(y, sd, f"{k}.3.conv_du.0")), sd, f"{k}.3.conv_du.2"))
            r = r + t * y
        res = res + conv(r, sd, f"{p}body.{g}.body.{blocks}")
    res = conv(res, sd, f"{p}body.{groups}") + h
    t = F.pixel_shuffle(conv(res, sd, f"{p}tail.0.0"), 2)
    t = F.pixel_shuffle(conv(t, sd, f"{p}tail.0.2"), 2)
    return conv(conv(t, sd, f"{p}tail.1"), sd, f"{p}add_mean")


REFS = {"fsrcnn": ref_fsrcnn, "carn": ref_carn, "srresnet": ref_srresnet, "rcan": ref_rcan}


@torch.no_grad()
def official_eval(arch, sd, x):
    """The official test-time ClassSR: argmax routing, each patch through its branch.

    ``x`` is our 0..1 input; the official RCAN got 0..255 and fed its classifier x/255.
    """
    xin = x * 255.0 if arch == "rcan" else x
    logits = ref_classifier(xin / 255.0 if arch == "rcan" else xin, sd)
    classes = logits.argmax(1)
    outs = [REFS[arch](xin, sd, f"net{k + 1}.") for k in range(3)]
    if arch == "rcan":
        outs = [o / 255.0 for o in outs]
    out = torch.stack([outs[c][i] for i, c in enumerate(classes.tolist())])
    return out, classes, logits, outs


def patches(n: int, size: int) -> torch.Tensor:
    """Patches from flat to busy, so the classifier has something to tell apart."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size)
    noise = torch.rand(n, 3, size, size, generator=g) - 0.5
    amount = torch.linspace(0, 1, n).view(n, 1, 1, 1)
    return (base + amount * noise).clamp(0, 1).contiguous()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("arch", "size", "n"),
    [
        ("fsrcnn", 12, 8),
        ("carn", 8, 8),
        ("srresnet", 8, 8),
        pytest.param("rcan", 8, 6, marks=pytest.mark.slow),  # 30M parameters, 3x200 blocks
    ],
)
def test_official_checkpoint_reproduces_official_outputs_and_routing(tmp_path, arch, size, n):
    sd = official_state(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(sd, path)
    model = from_official(path, arch=arch)
    assert not model.training
    x = patches(n, size)
    want, want_classes, want_logits, want_branches = official_eval(arch, sd, x)
    with torch.no_grad():
        logits = model.classify(x)
        out, classes = model(x)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-5)
    assert classes.tolist() == want_classes.tolist()
    assert len(set(classes.tolist())) >= 2, "the test inputs should use more than one branch"
    assert out.shape == (n, 3, 4 * size, 4 * size)
    assert want.abs().max() > 0.1  # a real signal, not a vanished one
    assert _rel_err(out, want) < 1e-4
    # and every branch on its own, whatever the classifier says
    with torch.no_grad():
        for k, (branch, ref) in enumerate(zip(model.branches, want_branches)):
            assert _rel_err(branch(x), ref) < 1e-4, f"branch {k}"


def test_wrapped_and_dataparallel_files_load(tmp_path):
    sd = official_state("fsrcnn", seed=3)
    plain = tmp_path / "plain.pth"
    wrapped = tmp_path / "wrapped.pth"
    torch.save(sd, plain)
    torch.save({"params": {f"module.{k}": v for k, v in sd.items()}, "iter": 5}, wrapped)
    x = patches(4, 12)
    a = from_official(plain, arch="fsrcnn")
    b = from_official(wrapped, arch="fsrcnn")
    with torch.no_grad():
        torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(
        a.branches[2].tail_conv.weight, sd["net3.tail_conv.weight"], rtol=0, atol=0
    )


def test_a_file_of_another_arch_is_refused_naming_keys(tmp_path):
    path = tmp_path / "fsrcnn.pth"
    torch.save(official_state("fsrcnn"), path)
    with pytest.raises(CheckpointError) as err:
        from_official(path, arch="srresnet")
    msg = str(err.value)
    assert "missing keys" in msg and "net1.conv_first.weight" in msg
    assert "unexpected keys" in msg and "net1.head_conv.0.weight" in msg
    assert "arch='fsrcnn'" in msg


def test_a_file_with_a_missing_or_misshapen_key_is_refused(tmp_path):
    sd = official_state("fsrcnn")
    del sd["net2.body_conv.5.weight"]
    sd["classifier.lastOut.weight"] = torch.zeros(4, 32)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        from_official(path, arch="fsrcnn")
    msg = str(err.value)
    assert "net2.body_conv.5.weight" in msg
    assert "classifier.lastOut.weight is (4, 32) in the file, (3, 32) in the model" in msg


class _NotAWeight:
    pass


def test_pickled_code_is_not_run(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"net1.x": _NotAWeight()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        from_official(path, arch="fsrcnn")


def test_unknown_arch_and_scale():
    with pytest.raises(InputError, match="fsrcnn, carn, srresnet, rcan"):
        from_official("x.pth", arch="edsr")
    with pytest.raises(InputError, match="x4"):
        from_official("x.pth", arch="fsrcnn", scale=2)


@pytest.mark.parametrize("arch", list(FILES))
def test_our_model_has_exactly_the_official_keys_shapes_and_params(arch):
    ref = listing(arch)
    info = ARCHS[arch]
    model = ClassWrapper(info.backbone, widths=list(info.widths), scale=4)
    ours = {to_official(k): list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref["state_dict_shapes"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]


def test_key_renames_round_trip():
    for key in listing("carn")["state_dict_shapes"]:
        assert to_official(to_ours(key)) == key
    assert to_ours("net3.b1.c1.1.running_mean") == "branches.2.b1.c1.1.running_mean"
    assert to_ours("classifier.CondNet.8.bias") == "classifier.body.8.bias"
    assert to_ours("classifier.lastOut.weight") == "classifier.fc.weight"


def test_rcan_layout_and_0_255_convention_on_a_small_rcan():
    """The full official RCAN test is slow; this checks the same layout, 2 groups x 2 blocks."""
    from classsr_plugins.backbones.rcan import rcan

    net = rcan(scale=4, n_feats=32, n_resblocks=2, n_resgroups=2, rgb_range=255).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p[0].numel(), 1)))
    sd = {k: v for k, v in net.state_dict().items()}
    x = patches(3, 8)
    with torch.no_grad():
        want = ref_rcan(x * 255.0, sd, "", groups=2, blocks=2) / 255.0
        got = net(x)
    assert want.abs().max() > 0.1
    assert _rel_err(got, want) < 1e-4


@pytest.mark.parametrize("arch", ["fsrcnn", pytest.param("rcan", marks=pytest.mark.slow)])
def test_convert_official_writes_a_file_load_model_loads(tmp_path, capsys, arch):
    sd = official_state(arch, seed=5)
    src, dst = tmp_path / "in.pth", tmp_path / "out.safetensors"
    torch.save(sd, src)
    assert main(["convert-official", str(src), str(dst), "--arch", arch]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_model(dst)
    device = next(loaded.parameters()).device
    direct = from_official(src, arch=arch).to(device)
    assert isinstance(loaded, ClassWrapper)
    x = patches(4, 8).to(device)
    with torch.no_grad():
        (a, ca), (b, cb) = loaded(x), direct(x)
    assert ca.tolist() == cb.tolist()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if arch == "rcan":  # the 0..255 convention travels with the file
        assert all(br.rgb_range == 255.0 for br in loaded.branches)


def test_convert_official_reports_a_bad_file(tmp_path, capsys):
    src = tmp_path / "in.pth"
    torch.save(official_state("carn"), src)
    rc = main(["convert-official", str(src), str(tmp_path / "o.safetensors"), "--arch", "srresnet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing keys" in err and "arch='carn'" in err
    assert not (tmp_path / "o.safetensors").exists()
