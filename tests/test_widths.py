"""Hardware-aligned branch widths."""

from __future__ import annotations

import json

import pytest

from classsr_core.analysis.widths import efficient_widths, measure_widths, snap_widths
from classsr_core.cli import main
from classsr_core.errors import InputError


def test_snap_rounds_to_the_step_and_keeps_branches_distinct():
    assert snap_widths([36, 52, 64]) == [32, 48, 64]
    assert snap_widths([16, 36, 56]) == [16, 32, 64]
    assert snap_widths([60, 62, 64], step=16) == [32, 48, 64]
    with pytest.raises(InputError, match="do not fit"):
        snap_widths([1, 2, 3], step=16)


def test_efficient_widths_pick_the_most_multiply_adds_per_second():
    # Issue 9's CPU table for MSRResNet (time and FLOPs shares of width 64).
    time = {16: 0.16, 24: 0.27, 32: 0.33, 36: 0.49, 40: 0.56, 48: 0.63, 52: 0.84, 56: 0.86}
    flops = {16: 0.06, 24: 0.14, 32: 0.25, 36: 0.32, 40: 0.39, 48: 0.56, 52: 0.66, 56: 0.77}
    measured = {w: {"seconds": time[w], "flops": flops[w]} for w in time}
    measured[64] = {"seconds": 1.0, "flops": 1.0}
    assert efficient_widths([36, 52, 64], measured) == [32, 56, 64]  # 0.90 vs 0.89 for 48
    with pytest.raises(InputError, match="collide"):
        efficient_widths([56, 60, 64], measured)


def test_measure_and_the_command(capsys):
    got = measure_widths("fsrcnn", [4, 8], scale=2, patch=8, reps=1, device="cpu")
    assert set(got) == {4, 8}
    assert all(v["seconds"] > 0 for v in got.values())
    assert got[4]["flops"] < got[8]["flops"]
    argv = ["widths", "--backbone", "fsrcnn", "--widths", "4,8", "--scale", "2", "--patch", "8"]
    assert main([*argv, "--step", "2", "--reps", "1", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requested"] == [4, 8] and report["efficient"][-1] == 8
    assert report["snapped"] == "2 widths do not fit below 16 in steps of 16"
    assert [r["width"] for r in report["rows"]] == [2, 4, 6, 8]


def test_aligned_width_generator_builds_snapped_branches_and_saves(tmp_path):
    from classsr_core.errors import PluginError
    from classsr_core.model.loading import load_model
    from classsr_core.model.wrapper import ClassWrapper

    model = ClassWrapper("fsrcnn", widths=[20, 36, 56], scale=2, generator="aligned_width")
    assert [b.head_conv[0].out_channels for b in model.branches] == [16, 32, 64]
    model.save(tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    assert [b.head_conv[0].out_channels for b in again.branches] == [16, 32, 64]
    with pytest.raises((InputError, PluginError), match="no_such_generator"):
        ClassWrapper("fsrcnn", widths=[8, 16], scale=2, generator="no_such_generator")
