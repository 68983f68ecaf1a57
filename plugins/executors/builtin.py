"""The built-in execution modes' entry point (``builtin_executors``), registered like any
third-party executor. Each executor registers next to its code
(``classsr_core.execution.patches``, ``classsr_core.execution.regions``); this module only
gathers them under one plugin name."""

from __future__ import annotations

from classsr_core import hookimpl


@hookimpl
def classsr_register_executors(register):
    # Imported here, not at the top: loading the plugin list stays cheap.
    from classsr_core.execution import patches, regions

    patches.classsr_register_executors(register)
    regions.classsr_register_executors(register)
