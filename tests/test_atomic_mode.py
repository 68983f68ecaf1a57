"""Atomically written files get the mode a plain open() gives them (0666 less the umask),
also when the writer replaces the temporary file with its own (safetensors made it 0600)."""

from __future__ import annotations

import os
import stat

import torch

from classsr_core.io.atomic import atomic_write_text
from classsr_core.io.checkpoint import save_state


def _plain() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_outputs_are_not_private(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    save_state({"w": torch.zeros(1)}, tmp_path / "m.safetensors", {"model": {}})
    for name in ("a.txt", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == _plain(), name
