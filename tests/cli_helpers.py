"""What the command-line tests share: the tiny model, small photos, a snapshot of the files
a command must leave alone (tests/test_cli_safety.py, tests/test_outputs_reliability.py; their
fixtures `photos` and `no_load` are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from classsr_core.model.wrapper import ClassWrapper


def tiny_model(tmp_path_factory) -> str:
    """A three-branch x2 FSRCNN saved once per module: fast to load and run."""
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=2, patch_size=16, stride=12)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    model.save(path)
    return str(path)


def photo(seed: int = 0, size: int = 32) -> np.ndarray:
    from skimage import data

    rgb = data.astronaut()[:: 512 // size, :: 512 // size]
    return np.roll(rgb, seed * 5, axis=1)


def save(path: Path, seed: int = 0, pixels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(photo(seed) if pixels is None else pixels).save(path)
    return path


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under ``roots`` with its bytes: the inputs must be left byte for byte."""
    files = {}
    for root in roots:
        for p in [root] if root.is_file() else sorted(root.rglob("*")):
            if p.is_file():
                files[p] = p.read_bytes()
    return files


def up(model: str, *argv: str) -> list[str]:
    return ["upscale", *argv, "--model", model, "--no-progress"]
