"""The plugin API (#27): one stable module, ``classsr_core.api``, and built-ins that
register next to their code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_api_exports_what_a_plugin_author_needs():
    from classsr_core import api
    from classsr_core.engine.costs import PatchCosts
    from classsr_core.engine.result import InferResult
    from classsr_core.engine.run import Run
    from classsr_core.execution.base import Executor
    from classsr_core.plugins import hookspecs
    from classsr_core.routing.base import Router, Scores
    from classsr_core.tasks import Task

    for name, obj in {
        "Router": Router,
        "Scores": Scores,
        "Run": Run,
        "Executor": Executor,
        "Task": Task,
        "PatchCosts": PatchCosts,
        "InferResult": InferResult,
        "hookimpl": hookspecs.hookimpl,
    }.items():
        assert getattr(api, name) is obj, name
    assert sorted(api.__all__) == sorted(set(api.__all__))
    for name in api.__all__:
        getattr(api, name)
    specs = {n for n in vars(hookspecs) if n.startswith("classsr_register_")}
    assert set(api.HOOKS) == specs
    # The base layer's types, at their new paths and their old ones alike.
    from classsr_core.base import costs, grid, run

    assert (api.Run, api.PatchGrid, api.PatchCosts) == (run.Run, grid.PatchGrid, costs.PatchCosts)
    with pytest.raises(AttributeError):
        api.NoSuchName  # noqa: B018


def test_importing_the_api_is_cheap():
    code = "import sys, classsr_core.api\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_example_plugins_import_only_the_public_api():
    for path in sorted((REPO / "examples" / "plugins").glob("*/*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("classsr"):
                assert node.module == "classsr_core.api", f"{path.name} imports {node.module}"


@pytest.mark.parametrize(
    ("kind", "hook", "modules", "names"),
    [
        (
            "routers",
            "classsr_register_routers",
            ("classsr_core.routing.classifier", "classsr_core.routing.edge"),
            ("classifier", "edge"),
        ),
        (
            "executors",
            "classsr_register_executors",
            ("classsr_core.execution.patches", "classsr_core.execution.regions"),
            ("patches", "regions"),
        ),
    ],
)
def test_builtins_register_next_to_their_code(kind, hook, modules, names):
    import importlib

    from classsr_core.plugins.registry import Registry

    for module, name in zip(modules, names):
        reg = Registry()
        reg.add_plugin(importlib.import_module(module), module)
        entry = reg.get(kind, name)
        assert entry.metadata["description"]
    # The entry point gathers them under one plugin name, as before.
    gathered = importlib.import_module(f"classsr_plugins.{kind}.builtin")
    reg = Registry()
    reg.add_plugin(gathered, f"builtin_{kind}")
    for name in names:
        assert reg.get(kind, name).factory.name == name
