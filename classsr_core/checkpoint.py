"""Self-describing checkpoints: safetensors weights with the config that rebuilds the model.

Every file is written to a temporary name beside its target and renamed, so an interrupted
write never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from classsr_core.errors import CheckpointError, UntrustedCodeError

FORMAT = "classsr/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path} has no classsr config in its metadata; it was not written by "
            "ClassWrapper.save. Build the model yourself and use load_state_dict."
        )
    return state, json.loads(meta["config"])


def save_model(model, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    if model.spec is None:
        raise CheckpointError(
            "this model was built from explicit branch modules and cannot be rebuilt from a "
            "config; save its state_dict with safetensors instead"
        )
    backbone = str(model.spec["backbone"])
    if backbone.startswith("__main__:") or "<locals>" in backbone:
        raise CheckpointError(
            f"the backbone {backbone} is defined in a script or a function, so no later "
            "process could rebuild it from the file. Define it in an importable module (and "
            "load with trust_code=True) or, better, register it as a plugin (docs/plugins.md)"
        )
    meta = {"model": model.spec, **(extra or {})}
    if getattr(model, "edge_table", None) is not None:
        meta["edge_router"] = model.edge_table.to_dict()
    save_state(model.state_dict(), path, meta)


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


def load_model(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    *,
    trust_code: bool = False,
):
    """Load a model saved with :meth:`ClassWrapper.save`, or a shipped model by name.

    Loading runs no code from the file: it may name only registered components. A file
    whose backbone is ``module:qualname`` (a class saved from your own module) is refused
    unless ``trust_code=True``, which imports that module (docs/safety.md).
    """
    from classsr_core.device import pick_device
    from classsr_core.wrapper import ClassWrapper

    path = Path(name_or_path)
    if not path.is_file():
        shipped = shipped_models()
        if str(name_or_path) not in shipped:
            names = ", ".join(shipped) or "none"
            raise CheckpointError(
                f"{name_or_path} is neither a file nor a shipped model (shipped: {names})"
            )
        path = shipped[str(name_or_path)]
    state, meta = read_checkpoint(path)
    spec = dict(meta["model"])
    if "trust_code" in spec:  # consent is the caller's to give, never the file's
        raise CheckpointError(f"{path}: its model config sets trust_code; refused")
    backbone = spec.pop("backbone")
    try:
        model = ClassWrapper(backbone, trust_code=trust_code, **spec)
    except UntrustedCodeError as exc:
        raise UntrustedCodeError(f"{path}: {exc}") from None
    load_into(model, state, str(path))
    if "edge_router" in meta:
        from classsr_core.edge_router import EdgeTable

        model.edge_table = EdgeTable.from_dict(meta["edge_router"])
    model.checkpoint_meta = meta
    return model.to(pick_device(device)).eval()
