"""Extension points (:mod:`~classsr_core.plugins.hookspecs`) and the registry every plugin,
built-in or third-party, registers into (:mod:`~classsr_core.plugins.registry`).

Names load on first use (PEP 562): the registry imports the hookspecs from this package
without a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_REGISTRY_NAMES = (
    "ENTRY_POINT_GROUP",
    "KINDS",
    "TRUST_HINT",
    "Entry",
    "PluginInfo",
    "Registry",
    "disabled_from_env",
    "get_registry",
    "import_code",
    "is_code_reference",
    "lookup",
    "reset_registry",
    "resolve",
)
__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "TRUST_HINT",
    "Entry",
    "PluginInfo",
    "Registry",
    "disabled_from_env",
    "get_registry",
    "import_code",
    "is_code_reference",
    "lookup",
    "reset_registry",
    "resolve",
]

if TYPE_CHECKING:  # pragma: no cover
    from classsr_core.plugins.registry import (
        ENTRY_POINT_GROUP,
        KINDS,
        TRUST_HINT,
        Entry,
        PluginInfo,
        Registry,
        disabled_from_env,
        get_registry,
        import_code,
        is_code_reference,
        lookup,
        reset_registry,
        resolve,
    )


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        return getattr(importlib.import_module("classsr_core.plugins.registry"), name)
    raise AttributeError(f"module 'classsr_core.plugins' has no attribute {name!r}")
