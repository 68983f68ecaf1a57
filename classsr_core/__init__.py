"""classsr: make low-level vision networks cheaper on large images by data characteristic.

Importing this package is cheap: torch-heavy names load on first use, and basicsr, timm and
fvcore are imported only where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from classsr_core.plugins.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "ClassWrapper": "classsr_core.model.wrapper",
    "ClassSRLoss": "classsr_core.training.losses",
    "ClassModule": "classsr_core.model.classifier",
    "load_model": "classsr_core.model.loading",
    "InferResult": "classsr_core.engine.result",
    "get_registry": "classsr_core.plugins.registry",
}

__all__ = [
    "ClassModule",
    "ClassSRLoss",
    "ClassWrapper",
    "InferResult",
    "__version__",
    "get_registry",
    "hookimpl",
    "load_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from classsr_core.engine import InferResult
    from classsr_core.model.classifier import ClassModule
    from classsr_core.model.loading import load_model
    from classsr_core.model.wrapper import ClassWrapper
    from classsr_core.plugins.registry import get_registry
    from classsr_core.training.losses import ClassSRLoss


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'classsr_core' has no attribute {name!r}")
