"""Models from files and from other models: load, save, official checkpoints, cuts.

Loading runs no code from a file: a checkpoint may name only registered components
(docs/safety.md). Each router's state (the edge table, ...) is saved and loaded under the
router's name, so a new router's state needs no change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from classsr_core.device import pick_device
from classsr_core.errors import CheckpointError, InputError, UntrustedCodeError
from classsr_core.io.checkpoint import load_into, read_checkpoint, shipped_models
from classsr_core.model.spec import spec_from_checkpoint
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.plugins import lookup

# Files written before routers were a plugin kind kept the edge table under this key.
_LEGACY_ROUTER_KEYS = {"edge_router": "edge"}


def load_model(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    *,
    trust_code: bool = False,
) -> ClassWrapper:
    """Load a model saved with :meth:`ClassWrapper.save`, or a shipped model by name.

    Loading runs no code from the file: it may name only registered components. A file
    whose backbone is ``module:qualname`` (a class saved from your own module) is refused
    unless ``trust_code=True``, which imports that module (docs/safety.md).
    """
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
    spec = spec_from_checkpoint(meta["model"], str(path))
    try:
        model = ClassWrapper(trust_code=trust_code, **spec.wrapper_kwargs())
    except UntrustedCodeError as exc:
        raise UntrustedCodeError(f"{path}: {exc}") from None
    load_into(model, state, str(path))
    model.router_states = router_states_from(meta, path)
    model.default_router = meta.get("default_router")
    model.checkpoint_meta = meta
    return model.to(pick_device(device)).eval()


def router_states_from(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Each router's state in a checkpoint's metadata, read by that router's state type."""
    raw = dict(meta.get("routers") or {})
    for old, name in _LEGACY_ROUTER_KEYS.items():
        if old in meta:
            raw.setdefault(name, meta[old])
    states = {}
    for name, data in raw.items():
        state_type = lookup("routers", name).factory.state_type
        if state_type is None:
            raise CheckpointError(f"{path}: router {name!r} keeps no state, but the file has one")
        states[name] = state_type.from_dict(data)
    return states


def save_model(model: ClassWrapper, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """``model.save(path, extra)``: weights, config and router states, atomically."""
    model.save(path, extra)


def from_official(path: str | Path, arch: str, **kwargs) -> ClassWrapper:
    """Load an official ClassSR ``.pth``; see :meth:`ClassWrapper.from_official`."""
    return ClassWrapper.from_official(path, arch=arch, **kwargs)


def cut_widths(model, widths) -> nn.Module:
    """A model whose branches are ``widths``, cut from the supernet of the shared-weight
    ``model`` (its leading channels, as every branch of it already is): one trained
    supernet gives any width set up to its own width, e.g. the paper's 36 / 56 and 32 / 48
    aligned to the hardware. The classifier is new (its class count may differ): route the
    result by edges (:func:`classsr_core.routing.calibration.calibrate`) or train one (stage 2)."""
    spec = getattr(model, "spec", None)
    if not spec or not spec.get("shared_weights") or "widths" not in spec:
        raise InputError(
            "cutting widths needs a shared-weight model built with widths= (a supernet); "
            "this one has separate or explicit branches"
        )
    widths = [int(w) for w in widths]
    widest = max(spec["widths"])
    if not widths or max(widths) > widest or min(widths) < 0:
        raise InputError(f"widths {widths} must lie in 0..{widest}, the supernet's width")
    kwargs = {k: v for k, v in spec.items() if k != "backbone"}
    # The supernet is already in memory, so its backbone class was imported with the
    # caller's consent (trust_code) when it was built: rebuilding a cut of it adds nothing.
    cut = ClassWrapper(spec["backbone"], **{**kwargs, "widths": widths}, trust_code=True)
    supernet = model.branches[-1].state_dict()
    target = cut.branches[-1].state_dict()
    cut.branches[-1].load_state_dict(
        {k: supernet[k][tuple(slice(0, s) for s in t.shape)] for k, t in target.items()}
    )
    return cut.to(next(model.parameters()).device).eval()
