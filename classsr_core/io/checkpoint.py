"""Self-describing checkpoints: safetensors weights with the config that rebuilds the model.

Every file is written to a temporary name beside its target and renamed
(:mod:`classsr_core.io.atomic`), so an interrupted write never leaves a half-written
checkpoint under the real name.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classsr_core.errors import CheckpointError
from classsr_core.io.atomic import atomic_path

if TYPE_CHECKING:  # torch loads where tensors are read or written: read_meta runs without it
    import torch

FORMAT = "classsr/1"
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"  # classsr_core/weights


def save_state(state: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any]) -> None:
    """Save tensors with JSON metadata (safetensors stores string metadata only)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "config": json.dumps(meta)})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); official .pth files load "
            "with ClassWrapper.from_official or `classsr convert-official`"
        ) from None
    return state, _config(path, meta)


# safetensors' layout: an 8-byte little-endian header length, then a JSON header whose
# "__metadata__" holds the string metadata; the tensors follow.
_MAX_HEADER = 100_000_000  # safetensors' own limit


def read_meta(path: str | Path) -> dict[str, Any]:
    """The config a checkpoint carries (as :func:`read_checkpoint`'s second item), read
    from the safetensors header alone: no tensors, and no torch import (``classsr models``
    starts without it)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _MAX_HEADER:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("__metadata__ is not a mapping")
    except (OSError, ValueError, struct.error, AttributeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); official .pth files load "
            "with ClassWrapper.from_official or `classsr convert-official`"
        ) from None
    return _config(path, meta)


def _config(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path} has no classsr config in its metadata; it was not written by "
            "ClassWrapper.save. Build the model yourself and use load_state_dict."
        )
    return json.loads(meta["config"])


def describe_mismatch(
    expected: dict[str, torch.Size], found: dict[str, torch.Tensor]
) -> str | None:
    """The first missing, unexpected and misshapen keys of ``found`` against ``expected``
    shapes, or ``None`` when they match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and found[k].shape != expected[k]]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}), first: {missing[:3]}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}), first: {unexpected[:3]}")
    if wrong:
        k = wrong[0]
        parts.append(
            f"shape mismatch ({len(wrong)}), first: {k} is {tuple(found[k].shape)} "
            f"in the file, {tuple(expected[k])} in the model"
        )
    return "; ".join(parts)


def load_into(model, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict)`` with an error that names the first mismatching keys."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problem = describe_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"{source} does not match the model: {problem}")
    model.load_state_dict(state, strict=True)


def shipped_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}
