"""#27: the model depends on no engine module at import time and names no router: building,
training and saving a ClassWrapper load neither the engine nor the routers and executors;
its ``infer`` imports the engine when first called."""

import subprocess
import sys

import pytest

from classsr_core.model.options import WrapperOptions
from classsr_core.model.wrapper import ClassWrapper

ENGINE_SIDE = ("classsr_core.engine", "classsr_core.execution", "classsr_core.api")


def _loaded_after(code: str, prefixes=ENGINE_SIDE) -> list[str]:
    """The modules under ``prefixes`` loaded in a fresh interpreter after running ``code``."""
    probe = (
        "import sys\n"
        f"{code}\n"
        f"prefixes = {tuple(prefixes)!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(prefixes)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    return eval(out.stdout.strip().splitlines()[-1])


def test_importing_the_wrapper_loads_no_engine_module():
    assert _loaded_after("import classsr_core.model.wrapper") == []


def test_building_saving_and_loading_a_model_loads_no_engine(tmp_path):
    """(The registry's first lookup loads every plugin, the built-in executors among them:
    those arrive as plugins, not as the model's imports.)"""
    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from classsr_core import ClassWrapper, load_model\n"
        "m = ClassWrapper('fsrcnn', widths=[4, 8], scale=2, patch_size=8, stride=6)\n"
        f"m.save({str(tmp_path / 'm.safetensors')!r})\n"
        f"load_model({str(tmp_path / 'm.safetensors')!r})\n"
    )
    assert _loaded_after(code, ["classsr_core.engine"]) == []


def test_infer_imports_the_engine_when_called():
    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import numpy as np\n"
        "from classsr_core import ClassWrapper\n"
        "m = ClassWrapper('fsrcnn', widths=[4, 8], scale=2, patch_size=8, stride=6)\n"
        "m.infer(np.zeros((16, 16, 3), np.uint8))\n"
    )
    assert "classsr_core.engine" in _loaded_after(code)


def test_the_model_names_no_router():
    """The wrapper keeps router states by name and records the default router's name; it
    names no router itself, but in the deprecated ``edge_table`` alias."""
    import ast
    import inspect

    from classsr_core.model import wrapper
    from classsr_core.plugins import get_registry

    tree = ast.parse(inspect.getsource(wrapper))
    alias = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "edge_table"]
    in_alias = {id(c) for fn in alias for c in ast.walk(fn)}
    strings = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in in_alias
    }
    assert not strings & set(get_registry().names("routers"))


def test_options_group_the_keywords_and_the_keyword_call_still_works():
    keywords = dict(widths=[4, 8], scale=2, patch_size=8, stride=6, backbone_kwargs={"m": 1})
    by_keywords = ClassWrapper("fsrcnn", **keywords)
    by_options = ClassWrapper("fsrcnn", options=WrapperOptions(**keywords))
    assert by_keywords.spec == by_options.spec
    # Keywords beside options override its fields; the positional widths too.
    wider = ClassWrapper("fsrcnn", [4, 12], options=WrapperOptions(**keywords), stride=4)
    assert wider.spec["widths"] == [4, 12] and wider.stride == 4
    with pytest.raises(TypeError, match="unexpected keyword argument 'scael'"):
        ClassWrapper("fsrcnn", widths=[4, 8], scael=2)
