"""`classsr upscale` / `run`: image kinds, reports, atomic outputs, bad files, budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from classsr_core.cli import main
from classsr_core.io.images import read_image, write_image
from classsr_core.model.wrapper import ClassWrapper


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=2, patch_size=16, stride=12)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    model.save(path)
    return str(path)


@pytest.fixture()
def photos(tmp_path):
    from skimage import data

    rgb = data.astronaut()[::8, ::8]  # 64x64 real photo
    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(rgb).save(folder / "rgb.png")
    PILImage.fromarray(rgb[:, :, 0]).save(folder / "grey.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 200, np.uint8)], axis=2)
    PILImage.fromarray(rgba).save(folder / "rgba.png")
    write_image(folder / "deep.png", (rgb.astype(np.uint16) * 257))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_folder_with_every_kind_and_a_broken_file(model_path, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "upscale",
            str(photos),
            "-o",
            str(out),
            "--model",
            model_path,
            "--json",
            "--class-map",
            str(tmp_path / "maps"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # one bad file: reported, the rest processed
    assert "broken.png" in captured.err
    rows = json.loads(captured.out)
    assert sorted(r["input"].rsplit("/", 1)[1] for r in rows) == [
        "deep.png",
        "grey.png",
        "rgb.png",
        "rgba.png",
    ]
    from classsr_core.commands.upscale import ROW_KEYS

    for r in rows:  # the report's schema (docs/api.md), and the class map's path
        assert list(r) == [*ROW_KEYS, "class_map"]
        assert (r["task"], r["scale"]) == ("sr", 2)
        assert sum(r["class_counts"]) > 0 and 0 < r["flops_fraction"] < 2
    grey = np.asarray(PILImage.open(out / "grey_x2.png"))
    assert grey.shape == (128, 128)
    rgba = read_image(out / "rgba_x2.png")
    assert rgba.alpha is not None and np.allclose(rgba.alpha, 200 / 255, atol=2 / 255)
    deep = read_image(out / "deep_x2.png")
    assert deep.max_value == 65535 and deep.rgb.shape == (128, 128, 3)
    assert (tmp_path / "maps" / "rgb_classes.png").is_file()
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


def test_never_overwrites_an_input(model_path, photos, capsys):
    src = photos / "rgb.png"
    before = src.read_bytes()
    code = main(["upscale", str(src), "-o", str(src), "--model", model_path])
    assert code == 2  # refused up front, before the model loads
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_budget_flag_moves_the_fraction(model_path, photos, tmp_path, capsys):
    fractions = []
    for budget in ("0.6", "0.95"):
        main(
            [
                "run",
                str(photos / "rgb.png"),
                "-o",
                str(tmp_path / f"b{budget}.png"),
                "--model",
                model_path,
                "--budget",
                budget,
                "--json",
            ]
        )
        fractions.append(json.loads(capsys.readouterr().out)[0]["flops_fraction"])
    assert fractions[0] < fractions[1]


def test_unknown_model_is_a_clear_error(photos, tmp_path, capsys):
    code = main(["upscale", str(photos / "rgb.png"), "-o", str(tmp_path), "--model", "nope"])
    assert code == 2
    assert "neither a file nor a shipped model" in capsys.readouterr().err


def test_regions_mode_flag(photos, tmp_path, capsys):
    torch.manual_seed(0)
    model = ClassWrapper(
        "fsrcnn",
        widths=[8, 16],
        scale=2,
        patch_size=16,
        stride=12,
        backbone_kwargs={"skip": "bicubic", "init_scale": 1.0},  # a visible, non-zero output
    )
    model_path = str(tmp_path / "skip.safetensors")
    model.save(model_path)
    out = {}
    for mode in ("patches", "regions"):
        dst = tmp_path / f"{mode}.png"
        argv = ["upscale", str(photos / "rgb.png"), "-o", str(dst), "--model", model_path]
        assert main([*argv, "--mode", mode, "--json"]) == 0
        json.loads(capsys.readouterr().out)
        out[mode] = read_image(dst).rgb
    assert out["regions"].shape == out["patches"].shape == (128, 128, 3)
    # Same routing, different stitching: close but not identical.
    assert 0 < np.abs(out["regions"].astype(int) - out["patches"].astype(int)).mean() < 10
