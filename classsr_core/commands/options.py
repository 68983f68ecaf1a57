"""Options shared by the commands, validated once by argparse (exit 2, one clear line)
before any model loads."""

from __future__ import annotations

import argparse
import math

TRUST_CODE_HELP = (
    "allow the model file to name a backbone as module:qualname, which imports and runs that "
    "code; only for files you trust (docs/safety.md)"
)


def add_trust_code(p: argparse.ArgumentParser) -> None:
    """``--trust-code``, shared by every command that loads a model file."""
    p.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)


def budget_arg(text: str) -> float:
    """``--budget``: a fraction in (0, 1], checked once by argparse, not once per image."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a FLOPs fraction; give a number in (0, 1], e.g. 0.7"
        )
    return value


def tolerance_arg(text: str) -> float:
    """``--tolerance``: dB of expected loss against the widest branch, a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tolerance; give the dB of expected loss against the widest "
            "branch as a number >= 0, e.g. 0.05"
        )
    return value


def device_arg(text: str) -> str:
    """``--device``: a device this machine has, checked before the model loads."""
    from classsr_core.device import check_device
    from classsr_core.errors import InputError

    try:
        check_device(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_job_device(p: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that run under ``torchrun`` (upscale, run, sweep)."""
    p.add_argument(
        "--device",
        type=device_arg,
        default=None,
        help="cpu, cuda, cuda:N, mps (default: best; under torchrun each rank takes "
        "cuda:LOCAL_RANK when CUDA is there, else the CPU)",
    )


def pixels_arg(text: str) -> int:
    """``--max-pixels``: a pixel count (``_`` and ``e`` notation welcome); 0: no limit."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of pixels, 0: no limit")
    return int(value)


def positive_int_arg(text: str) -> int:
    """A count or size that must be at least 1 (``--band-rows``, ``--patch``, ``--stride``,
    ``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def quality_arg(text: str) -> int:
    """``--quality``: JPEG / WebP quality, a whole number 1..100."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a quality from 1 to 100, e.g. 90")
    return value


def outscale_arg(text: str) -> float:
    """``--outscale``: a factor above 0 (and at most 16: an output 256 times the input's
    pixels is a typo more often than a wish)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 16:
        raise argparse.ArgumentTypeError(f"{text!r}: give an output scale above 0, e.g. 2 or 3.5")
    return value


def non_negative_int_arg(text: str) -> int:
    """A size that may be 0 (``--halo``)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 0")
    return value


def mode_option_arg(text: str) -> tuple[str, object]:
    """``--mode-option NAME=VALUE``: one option of the executor (``--mode``), the value read
    as JSON when it is JSON (``4``, ``true``, ``0.5``, ``"x"``), else as text. The executor's
    ``options_model`` validates it (an unknown name is refused with the names it knows)."""
    import json

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=VALUE, e.g. halo=8")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return name, parsed


def add_mode_options(p: argparse.ArgumentParser) -> None:
    """``--mode-option NAME=VALUE`` (repeatable): the executor's own options, any executor's
    (a plugin's too), with no flag of their own."""
    p.add_argument(
        "--mode-option",
        type=mode_option_arg,
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="an option of the executor (--mode), repeatable: e.g. max_cells=4 for regions, "
        "blend=window for patches, or a plugin executor's own",
    )


def plugin_arg(kind: str, what: str):
    """An argparse ``type`` accepting the names registered for ``kind`` (``routers``,
    ``executors``): the choices come from the registry, so a plugin's router or mode is a
    valid value with no change here. The registry loads only when the flag is given."""

    def check(text: str) -> str:
        from classsr_core.plugins import get_registry

        names = get_registry().names(kind)
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}; registered: {', '.join(names)} (see `classsr plugins`)"
            )
        return text

    check.__name__ = what  # argparse names the type in its messages
    return check


def add_engine_options(p: argparse.ArgumentParser, default_mode: str | None = None) -> None:
    """``--mode`` and ``--router``: the engine's executor and router, any registered one;
    both default to the model's own (``None``)."""
    p.add_argument(
        "--mode",
        type=plugin_arg("executors", "mode"),
        default=default_mode,
        help="a registered executor: patches (the paper's overlapping patches) or regions "
        "(same-class patches merged into tiles with a halo: faster, no seams; "
        "docs/performance.md), or a plugin's; default: the model's own (regions for the "
        "shipped ClassSR models), else patches",
    )
    p.add_argument(
        "--router",
        type=plugin_arg("routers", "router"),
        default=None,
        help="a registered router: classifier (the Class-Module, the paper), edge (the "
        "model's calibrated edge table), or a plugin's; default: the model's own",
    )
