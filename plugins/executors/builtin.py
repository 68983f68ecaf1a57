"""The built-in execution modes, registered like any third-party executor."""

from __future__ import annotations

from classsr_core import hookimpl


@hookimpl
def classsr_register_executors(register):
    from classsr_core.execution.patches import PatchesExecutor
    from classsr_core.execution.regions import RegionsExecutor

    register(
        "patches",
        PatchesExecutor,
        description="every patch on its own, overlaps averaged (the paper)",
    )
    register(
        "regions",
        RegionsExecutor,
        description="same-class patches merged into tiles with a halo; every pixel written "
        "once (faster, no seams)",
    )
