"""``basicsr:<ArchName>``: any architecture in basicsr's ``ARCH_REGISTRY`` as a backbone.

basicsr is imported only when such a name is resolved (through ``classsr_core._basicsr``,
the one place that imports it). The common architectures have their width and depth
argument, scale keyword and default arguments known below; for any other one the width
argument is ``num_feat`` when the class takes it, or what the user names with
``ClassWrapper(..., width_arg=...)``, and the scales it supports are probed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from classsr_core import hookimpl
from classsr_core.errors import InputError, PluginError

PREFIX = "basicsr:"


@dataclass(frozen=True)
class ArchInfo:
    """What classsr needs to know about one basicsr architecture."""

    width_arg: str | None = "num_feat"
    depth_arg: str | None = "num_block"
    scales: tuple[int, ...] | None = None  # None: probe the built network
    defaults: dict[str, Any] = field(default_factory=dict)


# Checked against basicsr 1.4.2's signatures. Scales are what each network's upsampler
# builds; RRDBNet always upsamples x4 and folds the input with pixel-unshuffle for x1 / x2.
KNOWN: dict[str, ArchInfo] = {
    "EDSR": ArchInfo(scales=(2, 3, 4)),
    "MSRResNet": ArchInfo(scales=(2, 3, 4)),
    "RCAN": ArchInfo(scales=(2, 3, 4)),
    "RRDBNet": ArchInfo(scales=(1, 2, 4)),
    "SRVGGNetCompact_basicsr": ArchInfo(depth_arg="num_conv", scales=(1, 2, 3, 4)),
    "ECBSR": ArchInfo(
        width_arg="num_channel",
        scales=(1, 2, 3, 4),
        defaults={"with_idt": False, "act_type": "prelu"},
    ),
    # SwinIR: widths must be multiples of its head count (6 by default); its default
    # upsampler ('') does not upsample, so pick the classic pixel shuffle and windows that
    # tile a 32x32 patch.
    "SwinIR": ArchInfo(
        width_arg="embed_dim",
        depth_arg=None,
        scales=(1, 2, 3, 4),
        defaults={"upsampler": "pixelshuffle", "window_size": 8, "img_size": 32},
    ),
    "RIDNet": ArchInfo(width_arg="mid_channels", scales=(1,)),
}

_SCALE_KWS = ("upscale", "scale")
_CHANNEL_KWS = (("num_in_ch", "num_out_ch"), ("in_chans",), ("in_channels", "out_channels"))


def _params(cls) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return {}


def make_factory(cls, arch: str, info: ArchInfo) -> Callable[..., Any]:
    """A factory ``(scale, in_channels, **kw)`` speaking basicsr's keyword names."""
    params = _params(cls)
    scale_kw = next((k for k in _SCALE_KWS if k in params), None)
    channel_kws = next((kws for kws in _CHANNEL_KWS if kws[0] in params), ())

    def factory(scale: int = 4, in_channels: int = 3, **kw):
        args = dict(info.defaults)
        if scale_kw:
            args[scale_kw] = scale
        elif scale != 1:
            raise InputError(f"basicsr:{arch} has no scale argument; it only works at scale 1")
        if "upsampler" in args and scale == 1:
            args["upsampler"] = ""  # SwinIR's restoration mode keeps the size
        for key in channel_kws:
            args[key] = in_channels
        args.update(kw)
        try:
            return cls(**args)
        except TypeError as exc:  # a missing or unknown keyword: name them all
            raise InputError(
                f"basicsr:{arch} cannot be built with {sorted(args)} ({exc}); its arguments "
                f"are {', '.join(p for p in params if p != 'self')}. Pass the missing ones "
                "with backbone_kwargs={...}"
            ) from None

    factory.__name__ = f"basicsr_{arch}"
    factory.__doc__ = f"basicsr's {arch} ({cls.__module__}.{cls.__qualname__})"
    return factory


def resolve(full_name: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``basicsr:EDSR`` -> (factory, metadata). Imports basicsr."""
    from classsr_core._basicsr import arch_registry

    arch = full_name[len(PREFIX) :]
    archs = dict(iter(arch_registry()))  # basicsr's Registry iterates (name, class) pairs
    if arch not in archs and f"{arch}_basicsr" in archs:
        arch = f"{arch}_basicsr"  # basicsr renames a few to avoid clashes with realesrgan
    if arch not in archs:
        names = ", ".join(sorted(archs))
        raise PluginError(f"basicsr has no architecture {arch!r}. Its ARCH_REGISTRY holds: {names}")
    cls = archs[arch]
    params = _params(cls)
    info = KNOWN.get(arch)
    if info is None:  # unknown: guess the common names, probe the scale
        info = ArchInfo(
            width_arg="num_feat" if "num_feat" in params else None,
            depth_arg="num_block" if "num_block" in params else None,
        )
    meta = {"width_arg": info.width_arg, "depth_arg": info.depth_arg, "scales": info.scales}
    return make_factory(cls, arch, info), meta


def _family(*args, **kwargs):
    raise InputError("name a basicsr architecture after the prefix, e.g. 'basicsr:EDSR'")


@hookimpl
def classsr_register_backbones(register):
    register(PREFIX, _family, resolve=resolve, known=sorted(KNOWN))
