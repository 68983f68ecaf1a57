"""The built-in routers' entry point (``builtin_routers``), registered like any third-party
router. Each router registers next to its code (``classsr_core.routing.classifier``,
``classsr_core.routing.edge``); this module only gathers them under one plugin name."""

from __future__ import annotations

from classsr_core import hookimpl


@hookimpl
def classsr_register_routers(register):
    # Imported here, not at the top: loading the plugin list stays cheap.
    from classsr_core.routing import classifier, edge

    classifier.classsr_register_routers(register)
    edge.classsr_register_routers(register)
