"""Self-describing checkpoints: safetensors weights with the config that rebuilds the model.

Every file is written to a temporary name beside its target and renamed
(:mod:`classsr_core.io.atomic`), so an interrupted write never leaves a half-written
checkpoint under the real name.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classsr_core.errors import CheckpointError, ModelNameWarning
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
    try:
        config = json.loads(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: its classsr config (metadata 'config') is not valid JSON ({exc}); the "
            "file is damaged or was not written by ClassWrapper.save"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: its classsr config (metadata 'config') is a JSON {_json_kind(config)}, "
            "not an object; the file is damaged or was not written by ClassWrapper.save"
        )
    if not isinstance(config.get("model"), dict):
        what = "has no 'model' key"
        if "model" in config:
            what = f"has a 'model' that is a JSON {_json_kind(config['model'])}, not an object"
        raise CheckpointError(
            f"{path}: its classsr config {what} (the backbone, widths and scale that rebuild "
            "the model); the file is damaged or was not written by ClassWrapper.save"
        )
    for key in ("routers", "card", "config"):  # read with .get / .items by the loaders
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise CheckpointError(
                f"{path}: its classsr config has a '{key}' that is a JSON "
                f"{_json_kind(config[key])}, not an object; the file is damaged"
            )
    return config


def _json_kind(value: Any) -> str:
    for kind, name in ((dict, "object"), (list, "list"), (str, "string"), (bool, "boolean")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "number"


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


def find_model(name_or_path: str | Path) -> Path:
    """The file behind a model name or path (``load_model``, ``--model``).

    A string that is exactly a shipped model's name (``classsr-fsrcnn-x4``: no folder, no
    suffix) always means the shipped model, even where a file of that name sits in the
    current folder (it would otherwise replace the shipped model unnoticed): that file is
    named ``./classsr-fsrcnn-x4``, which a warning says. Anything else is a path; a
    :class:`~pathlib.Path` that is no file but spells a shipped name means that model.
    """
    shipped = shipped_models()
    if isinstance(name_or_path, str) and name_or_path in shipped:
        if Path(name_or_path).is_file():
            warnings.warn(
                f"'{name_or_path}' names the shipped model, not the file of that name in the "
                f"current folder; to load the file, name it './{name_or_path}'",
                ModelNameWarning,
                stacklevel=3,
            )
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    names = ", ".join(shipped) or "none"
    raise CheckpointError(
        f"{name_or_path} is neither a file nor a shipped model (shipped: {names})"
    )


def read_training_state(path: str | Path) -> dict[str, Any]:
    """The optimiser / scheduler / RNG state a training run saves beside its weights
    (``OUT/state/<stage>.pt``), read with ``weights_only=True`` (no pickled code runs); an
    empty, truncated or foreign file is a :class:`CheckpointError` that names it."""
    import torch

    path = Path(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # empty (EOFError), truncated, pickled code, not a torch file
        first = str(exc).splitlines()[0] if str(exc) else ""
        empty = " (the file is empty)" if path.is_file() and path.stat().st_size == 0 else ""
        raise CheckpointError(
            f"{path} is not a readable training state{empty} ({type(exc).__name__}: {first}); "
            "it is written beside the stage's .safetensors while training runs: delete both "
            "to restart the stage"
        ) from None
    if not isinstance(state, dict) or not {"part", "iteration"} <= state.keys():
        raise CheckpointError(
            f"{path} is a torch file but not a classsr training state (no 'part' and "
            "'iteration'); delete it and the stage's .safetensors beside it to restart the stage"
        )
    return state
