"""The ``classsr`` command line. Each sub-command lives in ``classsr_core/commands/<name>.py``
with ``add_parser(subparsers)`` and ``run(args) -> int``; command modules import torch and the
rest inside ``run`` so that ``classsr --help`` and ``classsr plugins`` start fast."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings

from classsr_core.errors import (
    BudgetWarning,
    ClassSRError,
    CostWarning,
    DeviceWarning,
    ModelNameWarning,
)

COMMANDS = [
    "plugins",
    "flops",
    "models",
    "upscale",
    "run",
    "sweep",
    "convert_official",
    "prepare",
    "divide",
    "train",
    "widths",
    "calibrate",
    "export_onnx",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classsr",
        description="Make low-level vision networks cheaper on large images.",
    )
    from classsr_core import __version__

    parser.add_argument("--version", action="version", version=f"classsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"classsr_core.commands.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    plain = warnings.formatwarning
    warnings.formatwarning = _one_line(plain, args.command)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`classsr plugins --json | head -1`): stop quietly, as a
        # Unix tool killed by SIGPIPE would (128 + 13). Python flushes stdout again at
        # exit, so point it at devnull first (the recipe in the signal module's docs).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ClassSRError as exc:
        print(f"classsr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from classsr_core.io.atomic import disk_full

        if not disk_full(exc):
            raise
        # "disk full while writing PATH" (io.atomic), not a traceback
        print(f"classsr {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = plain


_OWN = (CostWarning, ModelNameWarning, BudgetWarning, DeviceWarning)


def _one_line(plain, command: str):
    """Show classsr's own warnings (:class:`CostWarning`, :class:`ModelNameWarning`,
    :class:`BudgetWarning`, :class:`DeviceWarning`) as ``classsr COMMAND: warning: ...`` on
    the command line (not Python's file:line and source); every other
    warning as Python shows it."""

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, _OWN):
            return f"classsr {command}: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    return formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
