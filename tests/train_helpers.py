"""Shared by the training tests: synthetic photos and a micro config that trains in seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from classsr_core.training.config import STAGES, TrainConfig, validate_train_config


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 RGB: smooth colour gradients on the left, fine random texture on the right, so
    sub-images range from easy to hard as in real photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / h, x / w
    base = np.stack(
        [0.5 + 0.3 * np.sin(3 * x + seed), 0.5 + 0.3 * np.cos(2 * y), 0.4 + 0.3 * x * y], axis=-1
    )
    texture = (rng.random((h, w, 3)).astype(np.float32) - 0.5) * (x > 0.5)[..., None]
    return (np.clip(base + 0.6 * texture, 0, 1) * 255).round().astype(np.uint8)


def write_photos(folder: Path, n: int, size=(72, 88), seed: int = 0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(photo(*size, seed=seed + i)).save(folder / f"img{i:02d}.png")
    return folder


def deep_update(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def micro_config(
    tmp_path: Path, train_dir: Path, val_dir: Path | None = None, **over
) -> TrainConfig:
    """x2 FSRCNN with two 4/8-wide branches, 32 px HR sub-images, a few iterations."""
    data = {
        "seed": 0,
        "out": str(tmp_path / "run"),
        "num_workers": 0,
        "task": {"name": "sr", "scale": 2},
        "model": {
            "backbone": "fsrcnn",
            "widths": [4, 8],
            "patch_size": 8,
            "stride": 6,
            "backbone_kwargs": {"m": 1},
        },
        "data": {
            "train": str(train_dir),
            "val": str(val_dir) if val_dir else None,
            "crop": 32,
            "step": 16,
        },
        "stages": {
            s: {"iterations": 6, "batch_size": 4, "lr": 1e-3, "log_every": 2, "save_every": 2}
            for s in STAGES
        },
    }
    return validate_train_config(deep_update(data, over))
