"""`import classsr_core` stays light: basicsr, timm and fvcore load only where used; and the
layers import as docs/architecture.md says, with no cycle behind the lazy `__init__`s."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_pulls_no_heavy_dependency():
    code = (
        "import sys, classsr_core\n"
        "from classsr_core import cli\n"
        "cli.build_parser()\n"
        "print(sorted(m for m in ('basicsr', 'timm', 'fvcore') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_basicsr_imports_through_the_shim():
    from classsr_core._basicsr import arch_registry

    assert "MSRResNet" in arch_registry()


# --- Layering (#27): the lazy ``__init__`` files hide no cycle, and docs/architecture.md's
# dependency table is the real imports.

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "classsr_core"

# Every package __init__ that loads names on first use, made eager: importing the package
# imports every module it names, as a plain ``from x import y`` __init__ would.
EAGER = """
import importlib, importlib.abc, importlib.util, sys

LAZY = {"classsr_core": "_LAZY", "classsr_core.engine": "_NAMES"}


class Eager(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in LAZY:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for target in getattr(module, LAZY[name]).values():
                importlib.import_module(target)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, Eager())
importlib.import_module(sys.argv[1])
"""


@pytest.mark.parametrize(
    "module",
    [
        "classsr_core.base.run",
        "classsr_core.routing.base",
        "classsr_core.routing.policies",
        "classsr_core.execution.base",
        "classsr_core.engine",
    ],
)
def test_eager_inits_import_without_a_cycle(module):
    res = subprocess.run(
        [sys.executable, "-c", EAGER, module], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr


def _folder(module: str) -> str | None:
    """``classsr_core.routing.base`` -> ``routing``; a top-level module -> ``None``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (CORE / parts[1]).is_dir() else None


def _imports(tree: ast.Module):
    """Every ``classsr_core`` module a file imports at run time (``TYPE_CHECKING`` blocks
    left out; imports inside functions counted: they are dependencies too)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "classsr_core":
                yield from (f"classsr_core.{a.name}" for a in node.names)
            else:
                yield node.module
        stack.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt))


def _real_dependencies() -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for path in CORE.rglob("*.py"):
        me = _folder(".".join(path.relative_to(REPO).with_suffix("").parts))
        if me is None:
            continue
        for module in _imports(ast.parse(path.read_text())):
            other = _folder(module) if module.startswith("classsr_core.") else None
            deps.setdefault(me, set())
            if other is not None and other != me:
                deps[me].add(other)
    return deps


def _documented_dependencies() -> dict[str, set[str] | None]:
    """The ``depends on`` column of docs/architecture.md's folder table (``None``:
    "everything")."""
    text = (REPO / "docs" / "architecture.md").read_text()
    out: dict[str, set[str] | None] = {}
    for row in re.findall(r"^\| `(\w+)/`[^|]*\|[^|]*\| ([^|]*) \|$", text, flags=re.M):
        folder, cell = row
        if cell.strip() == "everything":
            out[folder] = None
        elif cell.strip() == "-":
            out[folder] = set()
        else:
            out[folder] = {re.match(r"\s*(\w+)", item).group(1) for item in cell.split(",")}
    return out


def test_architecture_table_is_the_real_imports():
    real, documented = _real_dependencies(), _documented_dependencies()
    assert set(documented) == set(real), "a folder of classsr_core is missing from the table"
    for folder, deps in documented.items():
        if deps is not None:
            assert real[folder] == deps, f"{folder}/ imports {sorted(real[folder])}"


def test_base_layer_imports_nothing_above_it():
    real = _real_dependencies()
    assert real["base"] == set()
    # Routers and executors read a run: they import the base layer, never the engine.
    for folder in ("routing", "execution", "plugins", "io", "training"):
        assert "engine" not in real[folder], folder


def test_no_package_level_cycle():
    """The packages form layers: following imports (those inside functions too) from any
    package never leads back to it."""
    real = _real_dependencies()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in real.get(start, ()):
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    cycles = [pkg for pkg in real if reaches(pkg, pkg, {pkg})]
    assert not cycles, f"packages in an import cycle: {cycles}"
