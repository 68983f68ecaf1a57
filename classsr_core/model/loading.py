"""Models from files and from other models: load, save, official checkpoints, cuts.

Loading runs no code from a file: a checkpoint may name only registered components
(docs/safety.md). Each router's state (the edge table, ...) is saved and loaded under the
router's name, so a new router's state needs no change here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classsr_core.device import pick_device
from classsr_core.errors import CheckpointError, ClassSRError, InputError, UntrustedCodeError
from classsr_core.io.checkpoint import (  # noqa: F401  (shipped_models: re-exported)
    describe_mismatch,
    find_model,
    load_into,
    read_checkpoint,
    shipped_models,
)
from classsr_core.model.file_checks import (
    check_branch_sizes,
    check_file_kwargs,
    check_finite,
    weights_only_loads,
)
from classsr_core.model.file_state import providing
from classsr_core.model.pretrained import from_pretrained, is_pretrained_file
from classsr_core.model.spec import ModelSpec, spec_from_checkpoint
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

    A string that is exactly a shipped model's name means that model, even where a file of
    that name is in the current folder (name the file ``./NAME``); anything else is a path.

    Loading runs no code from the file and opens no other file: it may name only registered
    components, with no keyword argument that names a file or a download, and every
    ``torch.load`` while the model is built is weights-only. A file whose backbone is
    ``module:qualname`` (a class saved from your own module), or whose arguments name a
    file, is refused unless ``trust_code=True`` (docs/safety.md). The config is checked
    against the stored tensors (shapes, on the meta device) before any weight is allocated,
    and weights with NaN or Inf values are refused.
    """
    path = find_model(name_or_path)
    source = str(path)
    if is_pretrained_file(path):  # a network file of its own (ESRGAN, SwinIR, ...)
        return from_pretrained(path, device=device)
    state, meta = read_checkpoint(path)
    spec = spec_from_checkpoint(meta["model"], source)
    if not trust_code:
        check_file_kwargs(spec, source)
    check_branch_sizes(meta["model"], state, source)
    check_finite(state, source)
    with (
        contextlib.nullcontext() if trust_code else weights_only_loads(source),
        providing(state, source),  # for a backbone built from the weights (spandrel)
    ):
        _check_shapes(spec, state, source, trust_code)
        model = _build(spec, source, trust_code)
    load_into(model, state, source)
    model.router_states = router_states_from(meta, path)
    model.default_router = meta.get("default_router")
    model.defaults = checked_defaults(meta.get("defaults"), path)
    model.checkpoint_meta = meta
    return model.to(pick_device(device)).eval()


def _build(spec: ModelSpec, source: str, trust_code: bool) -> ClassWrapper:
    try:
        return ClassWrapper(trust_code=trust_code, **spec.wrapper_kwargs())
    except UntrustedCodeError as exc:
        if str(exc).startswith(source):
            raise
        raise UntrustedCodeError(f"{source}: {exc}") from None


def _check_shapes(spec: ModelSpec, state: dict[str, torch.Tensor], source: str, trust_code):
    """Build the model the config describes on the meta device (no memory) and compare its
    shapes with the stored tensors', so that a config that does not match its weights fails
    before anything is allocated. A component that cannot be built on the meta device is
    left to the real build (its sizes were bounded by ``check_branch_sizes``), which also
    reports a config error itself: a plugin may turn the meta device's own failure into one
    (basicsr's ECBSR makes a CPU tensor in its constructor)."""
    try:
        with torch.device("meta"):
            skeleton = _build(spec, source, trust_code)
    except Exception:
        return
    problem = describe_mismatch({k: v.shape for k, v in skeleton.state_dict().items()}, state)
    if problem:
        raise CheckpointError(f"{source} does not match the model its config describes: {problem}")


def checked_defaults(data: Any, path: Path) -> dict[str, Any]:
    """A checkpoint's recorded infer() defaults, each key known and its value sane."""
    from classsr_core.model.defaults import check_defaults

    try:
        return check_defaults(data or {})
    except InputError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


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
        try:
            states[name] = state_type.from_dict(data)
        except ClassSRError:
            raise
        except Exception as exc:  # a damaged table: say so instead of a KeyError
            raise CheckpointError(
                f"{path}: the state of router {name!r} cannot be read ({type(exc).__name__}: "
                f"{exc}); the file is damaged. Calibrate again (`classsr calibrate`)"
            ) from None
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
