"""`classsr sweep`: budgets against PSNR, written as CSV and a PNG plot."""

import csv

import numpy as np
import torch
from PIL import Image

from classsr_core.cli import main
from classsr_core.wrapper import ClassWrapper


def test_sweep_writes_csv_and_plot(tmp_path, capsys):
    from skimage import data

    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=2, patch_size=16, stride=12)
    model.save(tmp_path / "c.safetensors")
    ClassWrapper("fsrcnn", widths=[64], scale=2, patch_size=16, stride=12).save(
        tmp_path / "o.safetensors"
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.astronaut()[::4, ::4]).save(folder / "a.png")
    Image.fromarray(data.coffee()[::4, ::4]).save(folder / "c.png")
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            str(folder),
            "--model",
            str(tmp_path / "c.safetensors"),
            "--o-model",
            str(tmp_path / "o.safetensors"),
            "--budgets",
            "0.6,0.8,1.0",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    with open(f"{out}.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["argmax", "budget", "budget", "budget", "-O"]
    fracs = [float(r["flops_fraction"]) for r in rows if r["label"] == "budget"]
    assert all(abs(f - b) <= 0.02 for f, b in zip(fracs, (0.6, 0.8, 1.0)))
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    assert Image.open(f"{out}.png").size == (640, 420)
