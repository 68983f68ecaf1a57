"""Every example and documented training recipe runs (#25): `python examples/denoise.py`,
`python examples/deblock.py`, and the -O recipe `classsr train examples/configs/X.yaml
--set out=runs/X-o --set "model.widths=[64]"` as docs/tasks/X.md and the config write it.
Each is shortened by options (fewer steps, shallower networks, a tiny photo set), never by
editing the text a user copies."""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from classsr_core.cli import main
from classsr_core.errors import CostWarning

REPO = Path(__file__).parents[1]
TASKS = ("denoise", "deblock")


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_example_script_runs(task, tmp_path, monkeypatch, capsys):
    argv = [f"examples/{task}.py", "--steps", "2", "--depth", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    # DnCNN two convolutions deep is cheaper than the Class-Module: built so on purpose.
    with pytest.warns(CostWarning):
        runpy.run_path(str(REPO / "examples" / f"{task}.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "== 3/3" in out and re.search(r"ClassSR:\s+PSNR", out)
    assert (tmp_path / "classsr" / "model.safetensors").is_file()


def recipes(task: str) -> list[list[str]]:
    """The `classsr train` lines for ``task`` in its doc page and its config's comments."""
    found = []
    for path in (
        REPO / "docs" / "tasks" / f"{task}.md",
        REPO / "examples/configs" / f"{task}.yaml",
    ):
        for line in path.read_text().splitlines():
            line = line.lstrip("# ").split("  #")[0]
            if line.startswith("classsr train "):
                found.append(shlex.split(line)[1:])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_documented_one_branch_recipe_runs(task, tmp_path, monkeypatch):
    lines = [r for r in recipes(task) if "model.widths=[64]" in r]
    assert lines, f"docs/tasks/{task}.md lost its -O recipe"
    assert all(r == lines[0] for r in lines)  # the doc page and the config agree
    monkeypatch.chdir(REPO)  # the config's path is relative to the clone
    short = [
        f"out={tmp_path / 'o'}",
        f"data.store={tmp_path / 'data'}",
        "data.train=skimage:astronaut",
        "data.val=skimage:chelsea",
        "model.backbone_kwargs={nb: 2}",
        "stages.branches.iterations=2",
        "stages.branches.warmup=0",
        "stages.branches.save_every=2",
    ]
    argv = [*lines[0], *(a for s in short for a in ("--set", s)), "--no-progress"]
    assert main(argv) == 0
    assert (tmp_path / "o" / "model.safetensors").is_file()
