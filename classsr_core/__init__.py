"""classsr: make low-level vision networks cheaper on large images by data characteristic.

Importing this package is cheap: torch-heavy names load on first use, and basicsr, timm and
fvcore are imported only where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from classsr_core.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "ClassWrapper": "classsr_core.wrapper",
    "ClassSRLoss": "classsr_core.losses",
    "ClassModule": "classsr_core.classifier",
    "load_model": "classsr_core.checkpoint",
    "InferResult": "classsr_core.tiling",
    "get_registry": "classsr_core.plugins",
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
    from classsr_core.checkpoint import load_model
    from classsr_core.classifier import ClassModule
    from classsr_core.losses import ClassSRLoss
    from classsr_core.plugins import get_registry
    from classsr_core.tiling import InferResult
    from classsr_core.wrapper import ClassWrapper


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'classsr_core' has no attribute {name!r}")
