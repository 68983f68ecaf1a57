"""The plugin API: everything a plugin author imports, from one module.

```python
from classsr_core.api import Router, Scores, Run, hookimpl
```

The names here are stable (docs/api.md): they keep working when the internal modules that
define them move. Names load on first use (PEP 562), so importing this module is cheap and
a task plugin does not pull in torch-heavy routing code it never uses.

- Registering: :data:`hookimpl` (decorate each ``classsr_register_*`` hook), the hook
  specifications (:data:`HOOKS`, module :mod:`classsr_core.plugins.hookspecs`), the
  registry (:func:`get_registry`, :func:`lookup`, :func:`resolve`, :class:`Registry`,
  :func:`reset_registry`).
- Routers: :class:`Router`, :class:`Scores`; what they read: :class:`Run`,
  :class:`PatchGrid`, :class:`PatchCosts`.
- Executors: :class:`Executor`, and the built-ins to subclass: :class:`PatchesExecutor`,
  :class:`RegionsExecutor`; their options: :class:`ExecutorOptions` (the base of an
  executor's ``options_model``).
- Tasks: :class:`Task`; their options: :class:`StrictModel`, :func:`validate`.
- Results and errors: :class:`InferResult`; :class:`InputError`, :class:`ConfigError`,
  :class:`PluginError` (raise them with the fix in the message).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from classsr_core.plugins.hookspecs import PROJECT, hookimpl, hookspec

# The hooks a plugin may implement, each called with ``register(name, factory, **metadata)``
# (docs/plugins.md, "Hook reference").
HOOKS = (
    "classsr_register_backbones",
    "classsr_register_branch_generators",
    "classsr_register_tasks",
    "classsr_register_classifiers",
    "classsr_register_routers",
    "classsr_register_executors",
)

_LAZY = {
    # routing
    "Router": "classsr_core.routing.base",
    "Scores": "classsr_core.routing.base",
    # what a run carries
    "Run": "classsr_core.base.run",
    "PatchGrid": "classsr_core.base.grid",
    "PatchCosts": "classsr_core.base.costs",
    # execution
    "Executor": "classsr_core.execution.base",
    "ExecutorOptions": "classsr_core.execution.base",
    "PatchesExecutor": "classsr_core.execution.patches",
    "RegionsExecutor": "classsr_core.execution.regions",
    # tasks and their options
    "Task": "classsr_core.tasks",
    "StrictModel": "classsr_core.config",
    "validate": "classsr_core.config",
    # results
    "InferResult": "classsr_core.engine.result",
    # errors
    "InputError": "classsr_core.errors",
    "ConfigError": "classsr_core.errors",
    "PluginError": "classsr_core.errors",
    # the registry
    "Registry": "classsr_core.plugins.registry",
    "get_registry": "classsr_core.plugins.registry",
    "lookup": "classsr_core.plugins.registry",
    "resolve": "classsr_core.plugins.registry",
    "reset_registry": "classsr_core.plugins.registry",
}

__all__ = [
    "ConfigError",
    "Executor",
    "ExecutorOptions",
    "HOOKS",
    "InferResult",
    "InputError",
    "PROJECT",
    "PatchCosts",
    "PatchGrid",
    "PatchesExecutor",
    "PluginError",
    "RegionsExecutor",
    "Registry",
    "Router",
    "Run",
    "Scores",
    "StrictModel",
    "Task",
    "get_registry",
    "hookimpl",
    "hookspec",
    "lookup",
    "reset_registry",
    "resolve",
    "validate",
]

if TYPE_CHECKING:  # pragma: no cover
    from classsr_core.base.costs import PatchCosts
    from classsr_core.base.grid import PatchGrid
    from classsr_core.base.run import Run
    from classsr_core.config import StrictModel, validate
    from classsr_core.engine.result import InferResult
    from classsr_core.errors import ConfigError, InputError, PluginError
    from classsr_core.execution.base import Executor, ExecutorOptions
    from classsr_core.execution.patches import PatchesExecutor
    from classsr_core.execution.regions import RegionsExecutor
    from classsr_core.plugins.registry import (
        Registry,
        get_registry,
        lookup,
        reset_registry,
        resolve,
    )
    from classsr_core.routing.base import Router, Scores
    from classsr_core.tasks import Task


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'classsr_core.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
