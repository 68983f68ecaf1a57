"""The plugin system: every hook spec, entry points, failures, clashes, blocking."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pip_helpers import install_into
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import PluginError
from classsr_core.plugins import hookspecs
from classsr_core.plugins import registry as registry_module
from classsr_core.plugins.registry import KINDS, Registry, get_registry, lookup, reset_registry

REPO = Path(__file__).resolve().parents[1]


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def test_every_hookspec_has_a_test():
    specs = [
        n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("classsr_")
    ]
    assert sorted(specs) == sorted(f"classsr_register_{k}" for k in KINDS)
    tests = {n for n in globals() if n.startswith("test_hook_")}
    missing = [s for s in specs if f"test_hook_{s}" not in tests]
    assert not missing, f"hooks without a test: {missing}"


class TinyNet(nn.Module):
    def __init__(self, scale=2, in_channels=3, nf=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)
        self.nf = nf

    def forward(self, x):
        return self.up(self.conv(x))


def test_hook_classsr_register_backbones():
    reg = Registry()
    reg.add_plugin(
        _plugin(
            classsr_register_backbones=lambda register: register("tiny", TinyNet, width_arg="nf")
        ),
        "tinyplug",
    )
    entry = reg.get("backbones", "tiny")
    assert entry.factory is TinyNet and entry.plugin == "tinyplug"
    assert entry.metadata == {"width_arg": "nf"}
    assert reg.plugins["tinyplug"].registered["backbones"] == ["tiny"]
    # built-ins come through the same hook
    assert "fsrcnn" in get_registry().names("backbones")


def test_hook_classsr_register_branch_generators():
    def halves(values, width_arg=None, depth_arg=None):
        return [{width_arg: v // 2} for v in values]

    reg = Registry()
    reg.add_plugin(
        _plugin(classsr_register_branch_generators=lambda register: register("halves", halves)),
        "gen",
    )
    assert reg.get("branch_generators", "halves").factory([8, 16], width_arg="nf") == [
        {"nf": 4},
        {"nf": 8},
    ]
    assert {"width", "depth", "width_depth"} <= set(get_registry().names("branch_generators"))


def test_hook_classsr_register_tasks():
    reg = Registry()
    reg.add_plugin(
        _plugin(classsr_register_tasks=lambda register: register("noop", dict, config_model=None)),
        "tasks",
    )
    assert reg.get("tasks", "noop").metadata == {"config_model": None}
    task = lookup("tasks", "sr").factory(scale=2)
    assert task.scale == 2 and task.name == "sr"


def test_hook_classsr_register_classifiers():
    reg = Registry()
    reg.add_plugin(
        _plugin(
            classsr_register_classifiers=lambda register: register(
                "linear", lambda num_classes, in_channels, patch_size: nn.Linear(1, num_classes)
            )
        ),
        "cls",
    )
    assert reg.get("classifiers", "linear").factory(3, 3, 32).out_features == 3
    clf = lookup("classifiers", "classsr").factory(num_classes=3, in_channels=3, patch_size=32)
    assert sum(p.numel() for p in clf.parameters()) == 60035
    assert clf(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_hook_classsr_register_routers(monkeypatch):
    from classsr_core import ClassWrapper
    from classsr_core.routing.base import Router, Scores

    class Cheapest(Router):
        name = "cheapest"

        def score(self, run):
            n = run.num_patches
            return Scores(torch.zeros(n, dtype=torch.long), np.zeros((n, 2)))

    reg = Registry()
    reg.load_entry_points()
    reg.add_plugin(
        _plugin(classsr_register_routers=lambda register: register("cheapest", Cheapest)), "r"
    )
    assert {"classifier", "edge", "cheapest"} <= set(reg.names("routers"))
    monkeypatch.setattr(registry_module, "_registry", reg)
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2)
    result = model.infer(torch.rand(1, 3, 20, 20), router="cheapest", patch_size=8, stride=8)
    assert result.router == "cheapest" and result.class_counts == [9, 0]


def test_hook_classsr_register_executors(monkeypatch):
    from classsr_core import ClassWrapper
    from classsr_core.execution.patches import PatchesExecutor

    class Counting(PatchesExecutor):
        name = "counting"
        runs = 0

        def execute(self, run, assign):
            Counting.runs += 1
            return super().execute(run, assign)

    reg = Registry()
    reg.load_entry_points()
    reg.add_plugin(
        _plugin(classsr_register_executors=lambda register: register("counting", Counting)), "e"
    )
    assert {"patches", "regions", "counting"} <= set(reg.names("executors"))
    monkeypatch.setattr(registry_module, "_registry", reg)
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=2)
    x = torch.rand(1, 3, 20, 20)
    a = model.infer(x, mode="counting").output
    assert Counting.runs == 1 and torch.equal(a, model.infer(x, mode="patches").output)


def test_duplicate_name_fails_only_its_lookups_and_names_both_plugins():
    reg = Registry()
    for name in ("first", "second"):
        reg.add_plugin(
            _plugin(classsr_register_backbones=lambda register: register("dup", TinyNet)), name
        )
    reg.add_plugin(
        _plugin(classsr_register_backbones=lambda register: register("other", TinyNet)), "third"
    )
    assert reg.get("backbones", "other").plugin == "third"  # the rest still works
    with pytest.raises(PluginError, match="'first' and 'second'") as err:
        reg.get("backbones", "dup")
    assert "CLASSSR_DISABLE_PLUGINS=first" in str(err.value)
    assert "CLASSSR_DISABLE_PLUGINS=second" in str(err.value)
    rows = {row["name"]: row for row in reg.describe()}  # the diagnosis tool still works
    for name in ("first", "second"):
        assert rows[name]["backbones"] == ["dup"]
        assert rows[name]["clashes"] == [
            {"kind": "backbones", "name": "dup", "plugins": ["first", "second"]}
        ]
    assert "clashes" not in rows["third"]


def test_unknown_name_lists_registered():
    with pytest.raises(PluginError, match="unknown backbone 'nope'.*fsrcnn"):
        lookup("backbones", "nope")


def test_builtins_come_from_this_distribution():
    rows = {r["name"]: r for r in get_registry().describe()}
    for name in ("fsrcnn", "srresnet", "carn", "rcan", "sr", "branch_generators"):
        assert rows[name]["dist"] == "classsr", rows[name]
        assert "error" not in rows[name], rows[name]


def _run_cli(args, env_extra=None, cwd=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _make_dist(root: Path, name: str, module_body: str, entry_point: str | None = None) -> Path:
    """A real third-party plugin distribution: its own pyproject and entry point."""
    src = root / name
    pkg = src / f"{name}_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(module_body))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "1.2.3"

            [project.entry-points.classsr]
            {entry_point or name} = "{name}_pkg"
            """
        )
    )
    return src


GOOD_PLUGIN = """
    from torch import nn
    from classsr_core import hookimpl

    class EchoNet(nn.Module):
        def __init__(self, scale=2, in_channels=3, nf=8):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, nf, 3, padding=1)
            self.out = nn.Conv2d(nf, in_channels * scale * scale, 3, padding=1)
            self.up = nn.PixelShuffle(scale)

        def forward(self, x):
            return self.up(self.out(self.conv(x)))

    @hookimpl
    def classsr_register_backbones(register):
        register("echonet", EchoNet, width_arg="nf", scales=(2, 4))
"""


def _net_plugin(backbone: str) -> str:
    return GOOD_PLUGIN.replace('"echonet"', f'"{backbone}"')


BROKEN_PLUGIN = """
    raise RuntimeError("this plugin is broken on purpose")
"""


@pytest.fixture(scope="module")
def third_party(tmp_path_factory):
    root = tmp_path_factory.mktemp("dists")
    target = root / "site"
    install_into(_make_dist(root, "classsr_echo", GOOD_PLUGIN), target)
    install_into(_make_dist(root, "classsr_broken", BROKEN_PLUGIN), target)
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def clashing(tmp_path_factory):
    """An entry point named like a built-in, and two plugins registering one name."""
    root = tmp_path_factory.mktemp("clash")
    target = root / "site"
    install_into(_make_dist(root, "classsr_shadow", _net_plugin("shadownet"), "fsrcnn"), target)
    install_into(_make_dist(root, "classsr_one", _net_plugin("clashnet")), target)
    install_into(_make_dist(root, "classsr_two", _net_plugin("clashnet")), target)
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_third_party_plugin_listed_usable_and_blockable(third_party, tmp_path):
    res = _run_cli(["plugins", "--json"], third_party)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    echo = rows["classsr_echo"]
    assert (echo["dist"], echo["version"], echo["backbones"]) == (
        "classsr_echo",
        "1.2.3",
        ["echonet"],
    )
    assert rows["fsrcnn"]["dist"] == "classsr"
    # a plugin that raises on import is reported by name with its error; the others load
    assert "broken on purpose" in rows["classsr_broken"]["error"]
    assert "classsr_broken" in res.stderr

    script = (
        "from classsr_core import ClassWrapper\n"
        "import torch\n"
        "m = ClassWrapper('echonet', widths=[4, 8], scale=2).eval()\n"
        "print(tuple(m(torch.rand(2, 3, 32, 32))[0].shape))\n"
    )
    env = dict(os.environ, **third_party)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 3, 64, 64)"

    blocked = _run_cli(
        ["plugins", "--json"],
        {**third_party, "CLASSSR_DISABLE_PLUGINS": "classsr_echo,classsr_broken"},
    )
    names = {r["name"] for r in json.loads(blocked.stdout)}
    assert "classsr_echo" not in names and "classsr_broken" not in names
    assert "fsrcnn" in names


def test_entry_point_named_like_a_builtin_loads_with_a_warning(clashing):
    res = _run_cli(["plugins", "--json"], clashing)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["fsrcnn"]["dist"] == "classsr"
    assert rows["fsrcnn@classsr_shadow"]["backbones"] == ["shadownet"]
    assert "'fsrcnn' of classsr_shadow" in res.stderr


def test_clash_is_listed_and_fails_only_commands_that_need_the_name(clashing):
    res = _run_cli(["plugins"], clashing)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("CLASH: backbone 'clashnet'") == 2
    as_json = {r["name"]: r for r in json.loads(_run_cli(["plugins", "--json"], clashing).stdout)}
    assert as_json["classsr_one"]["clashes"][0]["plugins"] == ["classsr_one", "classsr_two"]
    bad = _run_cli(["flops", "--backbone", "clashnet", "--widths", "4,8", "--scale", "2"], clashing)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "CLASSSR_DISABLE_PLUGINS=classsr_one" in bad.stderr
    assert "CLASSSR_DISABLE_PLUGINS=classsr_two" in bad.stderr
    good = _run_cli(["flops", "--backbone", "fsrcnn", "--widths", "16,56", "--json"], clashing)
    assert good.returncode == 0, good.stderr
    blocked = _run_cli(
        ["flops", "--backbone", "clashnet", "--widths", "4,8", "--scale", "2", "--json"],
        {**clashing, "CLASSSR_DISABLE_PLUGINS": "classsr_two"},
    )
    assert blocked.returncode == 0, blocked.stderr


def test_plugins_text_output():
    res = _run_cli(["plugins"])
    assert res.returncode == 0, res.stderr
    assert "fsrcnn  (classsr" in res.stdout


def test_reset_registry_reloads(monkeypatch):
    monkeypatch.setenv("CLASSSR_DISABLE_PLUGINS", "rcan")
    reset_registry()
    try:
        assert "rcan" not in get_registry().plugins
    finally:
        monkeypatch.delenv("CLASSSR_DISABLE_PLUGINS")
        reset_registry()
    assert "rcan" in get_registry().plugins


def test_describe_shows_what_each_component_declares():
    def resolve(name):
        return TinyNet, {}

    def register_backbones(register):
        register(
            "tiny",
            TinyNet,
            width_arg="nf",
            scales=(2, 4),
            paper_widths=(4, 8),
            description="a tiny net",
            resolve=resolve,  # a callable: left out
            config_model=TinyNet,  # a class: left out
            gain=float("nan"),  # not valid JSON: left out
        )

    reg = Registry()
    reg.add_plugin(_plugin(classsr_register_backbones=register_backbones), "decl")
    reg.add_plugin(
        _plugin(classsr_register_backbones=lambda register: register("tiny", TinyNet, nf=1)),
        "clash",
    )
    rows = {row["name"]: row for row in reg.describe()}
    assert rows["decl"]["backbones"] == ["tiny"]  # the lists of names keep their shape
    assert rows["decl"]["declared"] == {
        "backbones": {
            "tiny": {
                "width_arg": "nf",
                "scales": [2, 4],
                "paper_widths": [4, 8],
                "description": "a tiny net",
            }
        }
    }
    # the clash kept the first entry: what the second declared is not known
    assert rows["clash"]["declared"] == {"backbones": {"tiny": {}}}
    json.dumps(rows)  # all of it serialisable


def test_plugins_json_and_text_show_declared_fields():
    res = _run_cli(["plugins", "--json"])
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    fsrcnn = rows["fsrcnn"]["declared"]["backbones"]["fsrcnn"]
    assert fsrcnn["width_arg"] == "d" and fsrcnn["scales"] == [1, 2, 3, 4]
    assert "paper_widths" in fsrcnn
    assert "description" in rows["builtin_routers"]["declared"]["routers"]["edge"]
    assert rows["sr"]["declared"] == {"tasks": {"sr": {}}}  # its config_model is a class
    text = _run_cli(["plugins"])
    assert text.returncode == 0, text.stderr
    assert "    backbones: fsrcnn\n      fsrcnn: width_arg=d depth_arg=m scales=1,2,3,4" in (
        text.stdout
    )
    assert "      classifier: the model's Class-Module" in text.stdout


@pytest.mark.parametrize("args", [["plugins", "--json"], ["plugins"]])
def test_closed_stdout_ends_quietly(args):
    """`classsr plugins --json | head -1`: the reader leaving is no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "classsr_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # before the command writes anything (it takes a while to start)
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    proc.stderr.close()
