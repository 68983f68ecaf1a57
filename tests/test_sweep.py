"""`classsr sweep`: budgets against PSNR, written as CSV and a PNG plot."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from classsr_core.cli import main
from classsr_core.model.wrapper import ClassWrapper


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


def test_photos_are_degraded_by_the_task_the_checkpoint_was_trained_for(tmp_path):
    """`classsr sweep` / `calibrate` without --task: the checkpoint's own task and settings."""
    from types import SimpleNamespace

    from classsr_core.commands.sweep import task_and_photos
    from classsr_core.errors import InputError
    from classsr_core.io.images import Image as Photo
    from classsr_core.io.images import write_image

    write_image(tmp_path / "a.png", Photo(np.full((8, 8, 3), 0.5, np.float32), None, False, 255))
    trained = {"config": {"task": {"name": "denoise", "sigma": 10.0}}}
    model = SimpleNamespace(scale=1, checkpoint_meta=trained)
    task, photos = task_and_photos(model, None, str(tmp_path))
    assert task.name == "denoise" and task.sigma == 10.0 and len(photos) == 1
    assert task_and_photos(model, "deblock", str(tmp_path))[0].name == "deblock"
    sr, _ = task_and_photos(SimpleNamespace(scale=4, checkpoint_meta={}), None, str(tmp_path))
    assert sr.name == "sr" and sr.scale == 4
    with pytest.raises(InputError, match="--task"):
        task_and_photos(SimpleNamespace(scale=1, checkpoint_meta={}), None, str(tmp_path))


def test_the_sweep_feeds_8_bit_inputs(monkeypatch):
    """The sweep judges the input an image file can hold, as `classsr calibrate` measures its
    edge tables: unrounded float inputs carry detail no file does."""
    from classsr_core.analysis.sweep import measure_images
    from classsr_core.plugins.registry import lookup

    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, patch_size=16, stride=12)
    seen = []
    infer = model.infer

    def spy(x, **options):
        seen.append(x.detach().double() * 255)
        return infer(x, **options)

    monkeypatch.setattr(model, "infer", spy)
    image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    measure_images(model, [image], lookup("tasks", "sr").factory(scale=2), [0.8])
    assert len(seen) == 2  # argmax and the budget
    assert all((s - s.round()).abs().max() < 1e-4 for s in seen)
