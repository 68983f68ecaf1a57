"""The tile engine: a short :func:`infer` that composes grid -> router -> policy ->
executor -> result (docs/architecture.md).

Names load on first use (PEP 562), so importing a submodule such as
``classsr_core.engine.run`` does not pull in the whole engine first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_NAMES = {
    "InferOptions": "classsr_core.engine.options",
    "InferResult": "classsr_core.engine.result",
    "PatchGrid": "classsr_core.base.grid",
    "patch_grid": "classsr_core.base.grid",
    "infer": "classsr_core.engine.pipeline",
    "check_router": "classsr_core.engine.pipeline",
    "default_batch_size": "classsr_core.engine.pipeline",
}
__all__ = [
    "InferOptions",
    "InferResult",
    "PatchGrid",
    "check_router",
    "default_batch_size",
    "infer",
    "patch_grid",
]

if TYPE_CHECKING:  # pragma: no cover
    from classsr_core.base.grid import PatchGrid, patch_grid
    from classsr_core.engine.options import InferOptions
    from classsr_core.engine.pipeline import check_router, default_batch_size, infer
    from classsr_core.engine.result import InferResult


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'classsr_core.engine' has no attribute {name!r}")
