"""Building a ClassWrapper's parts from a backbone: resolve it, derive each branch's
arguments with a branch generator, build (and optionally share) the branches, record the
spec that rebuilds them, and build the classifier."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from classsr_core.checks import check_increasing
from classsr_core.errors import InputError
from classsr_core.model.options import WrapperOptions
from classsr_core.model.sharing import share_weights
from classsr_core.model.spec import ModelSpec
from classsr_core.plugins import import_code, is_code_reference, lookup, resolve

# Which branch generator a keyword of ClassWrapper selects.
_GENERATOR_KEYWORDS = {"widths": "width", "depths": "depth", "width_depths": "width_depth"}


def build_branches(
    backbone, options: WrapperOptions, trust_code: bool
) -> tuple[list[nn.Module], dict[str, Any]]:
    """The branches, cheapest first, and the spec record that rebuilds the model (the
    classifier and tiling fields of ``options`` recorded as given)."""
    if backbone is None:
        raise InputError("ClassWrapper needs a backbone name or class, or branches=[...]")
    o = options
    factory, meta, backbone_name = _resolve_backbone(backbone, o.width_arg, o.depth_arg, trust_code)
    keyword_gen, values = _pick_generator(o.widths, o.depths, o.width_depths)
    scales = meta.get("scales")
    if scales is not None and o.scale not in scales:
        raise InputError(
            f"backbone {backbone_name!r} cannot upscale by {o.scale}; "
            f"it supports scales {sorted(scales)}"
        )
    gen = lookup("branch_generators", o.generator or keyword_gen).factory
    try:
        branch_kwargs = gen(
            values, width_arg=meta.get("width_arg"), depth_arg=meta.get("depth_arg")
        )
    except InputError as exc:  # e.g. "this backbone declares no width argument": say which
        raise InputError(f"backbone {backbone_name!r}: {exc}") from None
    built = [
        _call_factory(factory, o.scale, o.in_channels, {**o.backbone_kwargs, **kw})
        for kw in branch_kwargs
    ]
    if scales is None:  # an unregistered class: check what it really does
        _probe_scale(built[0], o.scale, o.in_channels, backbone_name)
    if o.shared_weights:
        built = share_weights(built)
    # A rebuild of one's own class needs the argument names; a registered one declares them.
    own = not isinstance(backbone, str) or is_code_reference(backbone) or o.width_arg or o.depth_arg
    spec = ModelSpec(
        backbone=backbone_name,
        **{gen_name_to_keyword(keyword_gen): _plain(values)},
        scale=o.scale,
        in_channels=o.in_channels,
        backbone_kwargs=o.backbone_kwargs,
        shared_weights=o.shared_weights,
        generator=o.generator or None,
        width_arg=o.width_arg if own else None,
        depth_arg=o.depth_arg if own else None,
        **o.tiling_and_classifier(),
    )
    return built, spec.record()


def build_classifier(
    name: str, num_classes: int, in_channels: int, patch_size: int, kwargs: dict[str, Any]
) -> nn.Module | None:
    """The registered classifier for ``num_classes`` branches; ``None`` for one branch (the
    plain "-O" network: nothing to route)."""
    if num_classes < 2:
        return None
    factory, _ = resolve("classifiers", name)
    return factory(
        num_classes=num_classes, in_channels=in_channels, patch_size=patch_size, **kwargs
    )


def gen_name_to_keyword(gen_name: str) -> str:
    return {v: k for k, v in _GENERATOR_KEYWORDS.items()}[gen_name]


def _pick_generator(widths, depths, width_depths) -> tuple[str, list]:
    given = {
        k: v
        for k, v in {"widths": widths, "depths": depths, "width_depths": width_depths}.items()
        if v is not None
    }
    if len(given) != 1:
        raise InputError(
            "give exactly one of widths=[...], depths=[...] or width_depths=[(w, d), ...] "
            f"(got {', '.join(given) or 'none'})"
        )
    keyword, values = next(iter(given.items()))
    values = list(values)
    if keyword == "width_depths":
        if not values:
            raise InputError("width_depths is empty: give at least one (width, depth) pair")
        costs = [tuple(v) for v in values]
        if any(len(v) != 2 for v in costs):
            raise InputError(f"width_depths must be (width, depth) pairs, got {values}")
    else:
        check_increasing(values, keyword)
    return _GENERATOR_KEYWORDS[keyword], values


def _resolve_backbone(backbone, width_arg, depth_arg, trust_code: bool):
    if isinstance(backbone, str) and is_code_reference(backbone):
        factory = import_code(backbone, "backbone", trust_code)
        return factory, {"width_arg": width_arg, "depth_arg": depth_arg, "scales": None}, backbone
    if isinstance(backbone, str):
        factory, meta = resolve("backbones", backbone)
        if width_arg:
            meta["width_arg"] = width_arg
        if depth_arg:
            meta["depth_arg"] = depth_arg
        return factory, meta, backbone
    if not callable(backbone):
        raise InputError(f"backbone must be a registered name or a callable, got {backbone!r}")
    meta = {"width_arg": width_arg, "depth_arg": depth_arg, "scales": None}
    module = getattr(backbone, "__module__", "?")
    name = f"{module}:{getattr(backbone, '__qualname__', repr(backbone))}"
    return backbone, meta, name


def _call_factory(factory, scale: int, in_channels: int, kwargs: dict) -> nn.Module:
    """Call a backbone factory, passing scale / in_channels only where it takes them."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {}
    for key, value in (("scale", scale), ("in_channels", in_channels)):
        if key in params or takes_any:
            extra[key] = value
    if None in kwargs:
        raise InputError(
            "this backbone declares no width/depth argument; pass width_arg=... (or depth_arg=...)"
        )
    return factory(**extra, **kwargs)


@torch.no_grad()
def _probe_scale(module: nn.Module, scale: int, in_channels: int, name: str) -> None:
    x = torch.zeros(1, in_channels, 8, 8)
    was_training = module.training
    module.eval()
    try:
        y = module(x)
    finally:
        module.train(was_training)
    if y.shape[-2:] != (8 * scale, 8 * scale):
        raise InputError(
            f"backbone {name} maps 8x8 to {tuple(y.shape[-2:])}, not {8 * scale}x{8 * scale}: "
            f"it cannot upscale by {scale}; pass the scale argument it needs"
        )


def _plain(values):
    return [list(v) if isinstance(v, (tuple, list)) else v for v in values]
