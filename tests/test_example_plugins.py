"""The example plugin packages under examples/plugins/ install and work as documented.

Each is built and installed like a user would (``pip install``, here into a temporary
``--target`` folder put on ``PYTHONPATH``), then used by name from a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pip_helpers import install_into

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "plugins"
DISTS = {
    "classsr-tinynet": "tinynet",
    "classsr-saltpepper": "saltpepper",
    "classsr-gradrouter": "gradient",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("example_plugins")
    target = root / "site"
    for dist in DISTS:
        # Build from a copy: building writes build/ and *.egg-info next to the sources.
        src = shutil.copytree(EXAMPLES / dist, root / dist)
        install_into(src, target)
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _python(code: str, env: dict) -> str:
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_examples_are_listed_by_classsr_plugins(env):
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    tiny, salt, grad = rows["tinynet"], rows["saltpepper"], rows["gradrouter"]
    assert (tiny["dist"], tiny["version"], tiny["backbones"]) == (
        "classsr-tinynet",
        "0.1.0",
        ["tinynet"],
    )
    assert (salt["dist"], salt["version"], salt["tasks"]) == (
        "classsr-saltpepper",
        "0.1.0",
        ["saltpepper"],
    )
    assert (grad["dist"], grad["version"], grad["routers"]) == (
        "classsr-gradrouter",
        "0.1.0",
        ["gradient"],
    )
    assert "no calibration" in grad["declared"]["routers"]["gradient"]["description"]
    assert tiny["declared"]["backbones"]["tinynet"] == {
        "width_arg": "nf",
        "depth_arg": "nb",
        "scales": [1, 2, 3, 4],
    }
    assert not any("error" in r for r in rows.values()), rows
    # the built-in scale-1 tasks and backbone sit next to them
    assert rows["denoise"]["tasks"] == ["denoise"] and rows["deblock"]["tasks"] == ["deblock"]
    assert rows["dncnn"]["backbones"] == ["dncnn"]


def test_example_backbone_builds_classsr_models(env):
    out = _python(
        """
        import torch
        from classsr_core import ClassWrapper
        torch.manual_seed(0)
        for scale in (1, 2, 4):
            m = ClassWrapper("tinynet", widths=[4, 8, 16], scale=scale).eval()
            with torch.no_grad():
                y, classes = m(torch.rand(3, 3, 16, 16))
            print(scale, tuple(y.shape), [b.head.out_channels for b in m.branches])
        m = ClassWrapper("tinynet", depths=[1, 3], scale=2, backbone_kwargs={"nf": 8})
        print([len(b.body) for b in m.branches])
        try:
            ClassWrapper("tinynet", widths=[4, 8], scale=8)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """,
        env,
    )
    lines = out.strip().splitlines()
    assert lines[:3] == [
        "1 (3, 3, 16, 16) [4, 8, 16]",
        "2 (3, 3, 32, 32) [4, 8, 16]",
        "4 (3, 3, 64, 64) [4, 8, 16]",
    ]
    assert lines[3] == "[1, 3]"
    assert lines[4].startswith("InputError") and "cannot upscale by 8" in lines[4]


def test_example_task_makes_inputs_and_validates_its_options(env):
    out = _python(
        """
        import numpy as np
        from classsr_core.plugins.registry import lookup
        from classsr_core.training.config import validate_train_config

        task = lookup("tasks", "saltpepper").factory(amount=0.2)
        hr = np.full((100, 100, 3), 0.5, np.float32)
        x = task.make_input(hr, np.random.default_rng(0))
        y = task.make_input(hr, np.random.default_rng(0))
        print(task.scale, x.dtype, x.shape, bool((x == y).all()))
        print(round(float((x != 0.5).any(axis=2).mean()), 2), sorted(np.unique(x).tolist()))
        cfg = validate_train_config({
            "task": {"name": "saltpepper", "amount": 0.1},
            "model": {"backbone": "tinynet", "widths": [4, 8]},
            "data": {"train": "skimage:astronaut"},
        })
        print(cfg.make_task())
        try:
            validate_train_config({
                "task": {"name": "saltpepper", "amout": 0.1},
                "model": {"backbone": "tinynet", "widths": [4, 8]},
                "data": {"train": "skimage:astronaut"},
            })
        except Exception as exc:
            print(type(exc).__name__, str(exc).splitlines()[1].strip())
        """,
        env,
    )
    lines = out.strip().splitlines()
    assert lines[0] == "1 float32 (100, 100, 3) True"
    assert lines[1] == "0.2 [0.0, 0.5, 1.0]"
    assert lines[2] == "SaltPepper(name='saltpepper', scale=1, amount=0.1, salt=0.5)"
    assert lines[3] == (
        "ConfigError unknown key 'task.amout'; allowed keys here: amount, salt, name"
    )


def test_plugins_text_lists_the_examples(env):
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "tinynet  (classsr-tinynet 0.1.0)\n    backbones: tinynet\n" in res.stdout
    assert "saltpepper  (classsr-saltpepper 0.1.0)\n    tasks: saltpepper\n" in res.stdout


def test_docs_plugins_snippets_run(env):
    """Every Python block of docs/plugins.md, in order, in one interpreter."""
    text = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 6
    out = _python("\n".join(blocks) + "\nprint('snippets ok')\n", env)
    assert out.strip().endswith("snippets ok")
    assert "'psnr'" in out  # the task snippet prints its scores
    # the two listings quote the example packages: every line must be in the real file
    for dist, module in (
        ("classsr-tinynet", "classsr_tinynet"),
        ("classsr-saltpepper", "classsr_saltpepper"),
    ):
        source = set((EXAMPLES / dist / f"{module}.py").read_text().splitlines())
        listing = next(b for b in blocks if f'register("{DISTS[dist]}"' in b)
        stale = [line for line in listing.splitlines() if line not in source]
        assert not stale, f"docs/plugins.md quotes lines not in {module}.py: {stale}"


def test_example_router_routes_a_shipped_model(env):
    """The router plugin works with no edit to classsr: by name, with a budget, FLOPs counted."""
    out = _python(
        """
        import numpy as np
        from skimage import data
        from classsr_core.model.loading import load_model

        model = load_model("classsr-fsrcnn-x4-fast")
        img = data.astronaut()[::4, ::4].copy()  # 128x128 real photo
        r = model.infer(img, router="gradient", mode="patches")  # 25 overlapping patches
        print(r.router, r.output.shape, sum(r.class_counts), r.flops_per_patch.router)
        b = model.infer(img, router="gradient", budget=0.6, mode="patches")
        print(abs(b.flops_fraction - 0.6) < 0.05, b.class_counts != r.class_counts)
        flat = model.infer(np.full((48, 48, 3), 128, np.uint8), router="gradient")
        print(flat.class_counts)
        """,
        env,
    )
    lines = out.strip().splitlines()
    # 20 operations a pixel on a 32x32 patch, and a square root and a halving
    assert lines[0] == f"gradient (512, 512, 3) 25 {20 * 32 * 32 + 2}.0"
    assert lines[1] == "True True"  # the utility is monotone: the budget policy lands
    assert lines[2] == "[4, 0, 0]"  # a flat image: every patch to the cheapest branch


def test_example_router_from_the_command_line(env, tmp_path):
    from PIL import Image
    from skimage import data

    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(data.astronaut()[::8, ::8]).save(src)  # 64x64
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", "upscale", str(src), "-o", str(dst)]
        + ["--model", "classsr-fsrcnn-x4-fast", "--router", "gradient", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    with Image.open(dst) as out:
        assert out.size == (256, 256)


def test_docs_quote_the_example_files_exactly():
    """A block after ``<!-- code: PATH -->`` in docs/plugins.md is the whole of PATH."""
    text = (REPO / "docs" / "plugins.md").read_text()
    quoted = re.findall(r"<!-- code: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    paths = [path for path, _ in quoted]
    assert "examples/plugins/classsr-gradrouter/classsr_gradrouter.py" in paths
    for path, block in quoted:
        assert block == (REPO / path).read_text(), f"docs/plugins.md differs from {path}"
