"""``classsr export-onnx`` (issue 25): every branch and the classifier to ONNX with dynamic
height and width, the same numbers as PyTorch under onnxruntime, and the output rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import photo

from classsr_core.cli import main
from classsr_core.commands.export_onnx import standalone
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOLERANCE = 1e-4  # measured: 3.6e-7 on the branches (docs/performance.md, "ONNX export")


def _lr(h: int, w: int) -> torch.Tensor:
    """A crop of the astronaut photo, float (1, 3, h, w) in [0, 1]."""
    rgb = photo(size=128)[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255


def _check(model: ClassWrapper, out, sizes) -> None:
    """Each branch file under onnxruntime against PyTorch on two LR sizes, and the
    classifier on a batch of patches."""
    manifest = json.loads((out / "model.json").read_text())
    assert [b["file"] for b in manifest["branches"]] == [
        f"branch{i}.onnx" for i in range(len(model.branches))
    ]
    for i, branch in enumerate(model.branches):
        net = standalone(branch).eval()
        session = ort.InferenceSession(str(out / f"branch{i}.onnx"))
        for h, w in sizes:  # dynamic height and width
            x = _lr(h, w)
            got = session.run(None, {"lr": x.numpy()})[0]
            with torch.inference_mode():
                ref = net(x).numpy()
            assert got.shape == (1, 3, h * model.scale, w * model.scale)
            assert np.abs(got - ref).max() < TOLERANCE
    p = model.patch_size
    patches = torch.cat([_lr(p, p), _lr(2 * p, p)[:, :, p:]])
    got = ort.InferenceSession(str(out / "classifier.onnx")).run(None, {"patches": patches.numpy()})
    with torch.inference_mode():
        ref = model.classifier(patches).numpy()
    assert got[0].shape == (2, len(model.branches))
    assert np.abs(got[0] - ref).max() < TOLERANCE * max(1.0, np.abs(ref).max())


def test_tiny_model_exports_and_matches(tmp_path, capsys):
    model = ClassWrapper(
        "fsrcnn", widths=[0, 8, 16], scale=2, patch_size=16, stride=12,
        backbone_kwargs={"skip": "bicubic"},
    ).eval()  # fmt: skip
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("max abs diff") == 4  # three branches and the classifier
    _check(model, out, [(24, 40), (37, 19)])


def test_shipped_fast_model(tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export-onnx", "classsr-fsrcnn-x4-fast", "-o", str(out)]) == 0
    assert "edge (the model's default) is arithmetic" in capsys.readouterr().out
    manifest = json.loads((out / "model.json").read_text())
    assert [b["width"] for b in manifest["branches"]] == [0, 36, 56]
    assert manifest["default_router"] == "edge"
    _check(load_model("classsr-fsrcnn-x4-fast").eval(), out, [(20, 36), (33, 17)])


def test_existing_output_refused_without_overwrite(tmp_path, capsys, no_load):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "branch1.onnx").write_bytes(b"earlier")
    assert main(["export-onnx", "classsr-fsrcnn-x4-fast", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err
    assert (out / "branch1.onnx").read_bytes() == b"earlier"
    not_a_folder = tmp_path / "file.onnx"
    not_a_folder.write_bytes(b"x")
    assert main(["export-onnx", "classsr-fsrcnn-x4-fast", "-o", str(not_a_folder)]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_missing_onnxruntime_names_the_install(monkeypatch, tmp_path, capsys):
    import builtins

    real = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert main(["export-onnx", "classsr-fsrcnn-x4-fast", "-o", str(tmp_path / "o")]) == 2
    assert "pip install onnx onnxruntime" in capsys.readouterr().err
