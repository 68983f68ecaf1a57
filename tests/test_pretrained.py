"""Bring your own network (docs/bring-your-own.md): pretrained SR files that spandrel reads,
made into routed ClassSR models without training. Small random-weight instances of four
architectures are made here, saved as .pth and .safetensors, loaded, routed, calibrated."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("spandrel")

from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.SPAN import SPAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

from classsr_core import ClassWrapper, load_model  # noqa: E402
from classsr_core.cli import main  # noqa: E402
from classsr_core.errors import InputError, UntrustedCodeError  # noqa: E402
from classsr_core.io.images import write_image  # noqa: E402

# Tiled (every 16x16 cell its own tile, with the network's halo) against the whole image:
# the tolerance docs/bring-your-own.md states for random-weight test networks.
TILED_PSNR_DB = 50.0


def _nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "ESRGAN": ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2),
        "Compact": Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2),
        "SwinIR": SwinIR(
            img_size=16,
            window_size=4,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            mlp_ratio=2,
            upscale=2,
            upsampler="pixelshuffle",
        ),
        "SPAN": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    }


ARCHS = list(_nets())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each network saved as .pth (a plain state dict, as model zoos ship them, wrapped in
    ``params_ema`` as BasicSR saves) and as .safetensors."""
    root = tmp_path_factory.mktemp("nets")
    out = {}
    for name, net in _nets().items():
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        out[name, "pth"] = root / f"{name}.pth"
        torch.save({"params_ema": state}, out[name, "pth"])
        out[name, "safetensors"] = root / f"{name}.safetensors"
        save_file(state, str(out[name, "safetensors"]))
    return out


def _image(h=48, w=56, seed=0) -> torch.Tensor:
    """A smooth gradient with a textured block: both kinds of patch."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.2 + 0.5 * y, 0.3 + 0.4 * x, 0.5 + 0.2 * x * y])[None]
    ys, xs = slice(h // 3, 2 * h // 3), slice(w // 2, w)
    block = img[..., ys, xs]
    img[..., ys, xs] = block + 0.3 * torch.rand(block.shape, generator=g)
    return img.clamp(0, 1).mul(255).round().div(255)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("arch", ARCHS)
def test_loads_routes_and_tiles_like_the_whole_image(files, arch, fmt, tmp_path):
    model = ClassWrapper.from_pretrained(files[arch, fmt], patch_size=16, stride=16)
    assert [type(b).__name__ for b in model.branches] == ["Bicubic", "SpandrelNet"]
    assert model.branches[1].arch == arch and model.scale == 2
    x = _image()
    with torch.no_grad():
        whole = model.branches[1](x).clamp(0, 1)
    # Uncalibrated: every patch to the network.
    result = model.infer(x, mode="regions", max_cells=1)  # every cell its own tile
    assert result.class_counts[0] == 0
    assert _psnr(result.output.clamp(0, 1), whole) >= TILED_PSNR_DB
    # The routed file records the architecture and weights and loads back the same.
    path = tmp_path / "routed.safetensors"
    model.save(path)
    again = load_model(path)
    assert again.branches[1].arch == arch
    out = again.infer(x, mode="regions", max_cells=1).output
    torch.testing.assert_close(out, result.output)
    # spandrel on the whole image (its own padding and clamping) is the reference.
    import spandrel

    desc = spandrel.ModelLoader().load_from_file(files[arch, fmt]).eval()
    assert _psnr(result.output.clamp(0, 1), desc(x)) >= TILED_PSNR_DB


def test_size_requirements_are_padded(files):
    """SwinIR needs a minimum size and a multiple of its window: odd tiles still run."""
    model = ClassWrapper.from_pretrained(files["SwinIR", "safetensors"], patch_size=8, stride=8)
    net = model.branches[1]
    assert net.minimum >= 4 and net.multiple_of >= 1
    x = _image(13, 21)
    with torch.no_grad():
        assert net(x).shape[-2:] == (26, 42)
    out = model.infer(x, mode="regions", max_cells=1).output
    assert out.shape[-2:] == (26, 42)


def test_load_model_and_upscale_take_a_network_file(files, tmp_path):
    path = files["Compact", "pth"]
    model = load_model(str(path))
    assert model.branches[1].arch == "Compact"
    write_image(tmp_path / "a.png", (_image()[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "a_x2.png"),
                 "--model", str(path)]) == 0  # fmt: skip
    assert (tmp_path / "a_x2.png").is_file()


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    evil = tmp_path / "evil.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}, "x": Evil()}, evil)
    for call in (lambda: ClassWrapper.from_pretrained(evil), lambda: load_model(str(evil))):
        with pytest.raises(UntrustedCodeError, match="evil.pth"):
            call()
    assert not marker.exists()
    assert main(["upscale", str(evil), "-o", str(tmp_path / "o.png"), "--model", str(evil)]) != 0
    assert not marker.exists()


def test_bad_files_say_what_is_wrong(files, tmp_path):
    junk = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, junk)
    with pytest.raises(InputError, match=r"classifier\.pth: spandrel cannot identify"):
        ClassWrapper.from_pretrained(junk)
    with pytest.raises(InputError, match=r"ESRGAN\.pth: .*upscales x2, not x4"):
        ClassWrapper.from_pretrained(files["ESRGAN", "pth"], scale=4)
    text = tmp_path / "notes.pth"
    text.write_text("not a model")
    with pytest.raises(Exception, match="notes.pth"):
        ClassWrapper.from_pretrained(text)
    # The spandrel backbone outside a file: says how to build it.
    with pytest.raises(InputError, match="from_pretrained"):
        ClassWrapper("spandrel", widths=[0, 1], scale=2, backbone_kwargs={"archs": ["SPAN"]})


def test_a_cheaper_network_is_a_middle_branch(files):
    model = ClassWrapper.from_pretrained(
        files["ESRGAN", "pth"], cheaper=[files["Compact", "safetensors"]], patch_size=16, stride=16
    )
    assert [getattr(b, "arch", None) for b in model.branches] == [None, "Compact", "ESRGAN"]
    with pytest.raises(InputError, match="x2, not x"):
        bigger = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4)
        path = files["ESRGAN", "pth"].parent / "span4.pth"
        torch.save(bigger.state_dict(), path)
        ClassWrapper.from_pretrained(files["ESRGAN", "pth"], cheaper=[path])


@pytest.mark.parametrize("no_hr", [False, True])
def test_calibrate_a_network_file(files, tmp_path, no_hr, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        img = _image(128, 128, seed=i)[0].permute(1, 2, 0).numpy()
        write_image(photos / f"p{i}.png", (img * 255).round().astype(np.uint8))
    out = tmp_path / "routed.safetensors"
    args = ["calibrate", str(photos), "--model", str(files["Compact", "pth"]), "-o", str(out)]
    args += ["--bins", "2", "--tolerance", "0.5", *(["--no-hr"] if no_hr else [])]
    assert main(args) == 0
    said = capsys.readouterr()
    assert "region halo" in said.out
    model = load_model(out)
    assert model.default_router == "edge" and model.edge_table is not None
    assert model.branches[1].halo in (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    result = model.infer(_image(), mode="regions")
    assert result.output.shape[-2:] == (96, 112)
    # Every patch forced to the network: the network on the whole image, within tolerance.
    forced = model.infer(_image(), mode="regions", classes=np.ones(4, dtype=int), max_cells=1)
    with torch.no_grad():
        whole = model.branches[1](_image()).clamp(0, 1)
    assert _psnr(forced.output.clamp(0, 1), whole) >= TILED_PSNR_DB


def test_no_hr_needs_a_network_file(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "p.png", np.zeros((40, 40, 3), np.uint8))
    args = ["calibrate", str(photos), "-o", str(tmp_path / "o.safetensors"), "--no-hr"]
    assert main(args) == 2
