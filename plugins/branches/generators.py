"""Branch generators: how one backbone becomes M branches of increasing cost."""

from __future__ import annotations

from classsr_core import hookimpl
from classsr_core.errors import InputError


def _need(arg: str | None, what: str) -> str:
    if not arg:
        raise InputError(
            f"this backbone declares no {what} argument; pass {what}_arg=... to ClassWrapper"
        )
    return arg


def width(values, width_arg=None, depth_arg=None) -> list[dict]:
    """One branch per width: ``[16, 36, 56]`` -> ``[{d: 16}, {d: 36}, {d: 56}]``."""
    key = _need(width_arg, "width")
    return [{key: int(v)} for v in values]


def aligned_width(values, width_arg=None, depth_arg=None) -> list[dict]:
    """One branch per width, each rounded to a multiple of 16 (the channel block of CPU and
    most GPU convolution kernels): ``[36, 52, 64]`` -> widths 32 / 48 / 64. Widths off the
    blocks save FLOPs but little time (docs/performance.md; ``classsr widths`` measures
    other devices)."""
    from classsr_core.analysis.widths import snap_widths

    return width(snap_widths([int(v) for v in values], 16), width_arg, depth_arg)


def depth(values, width_arg=None, depth_arg=None) -> list[dict]:
    """One branch per block count."""
    key = _need(depth_arg, "depth")
    return [{key: int(v)} for v in values]


def width_depth(values, width_arg=None, depth_arg=None) -> list[dict]:
    """One branch per ``(width, depth)`` pair."""
    wkey, dkey = _need(width_arg, "width"), _need(depth_arg, "depth")
    return [{wkey: int(w), dkey: int(d)} for w, d in values]


@hookimpl
def classsr_register_branch_generators(register):
    register("width", width)
    register("aligned_width", aligned_width)
    register("depth", depth)
    register("width_depth", width_depth)
