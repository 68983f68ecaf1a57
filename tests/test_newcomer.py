"""The newcomer's path (#19): fast, torch-free `classsr --help` / `classsr models`, a
header-only checkpoint reader, `classsr flops --backbone-kwargs`, and the warning when
routing costs more than it saves."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from classsr_core import ClassWrapper, load_model
from classsr_core.cli import main
from classsr_core.errors import CheckpointError, CostWarning
from classsr_core.io.checkpoint import read_checkpoint, read_meta, shipped_models
from classsr_core.model.checks import routing_costs

NO_TORCH = """
import contextlib, io, sys
from classsr_core.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main({argv!r})
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in ("torch", "fvcore", "safetensors.torch") if m in sys.modules]
print(code, heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["models", "--json"]])
def test_help_and_models_do_not_import_torch(argv):
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "0"
    assert out[1:] == ["[]"], f"classsr {' '.join(argv)} imported {' '.join(out[1:])}"


def test_read_meta_is_the_checkpoints_config():
    assert shipped_models()
    for path in shipped_models().values():
        assert read_meta(path) == read_checkpoint(path)[1]


def test_read_meta_refuses_what_read_checkpoint_refuses(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01")
    for path, message in [
        (junk, "not a readable safetensors"),
        (short, "not a readable safetensors"),
        (tmp_path / "missing.safetensors", "not a readable safetensors"),
        (foreign, "no classsr config"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            read_meta(path)


def test_flops_backbone_kwargs(capsys):
    base = ["flops", "--backbone", "dncnn", "--scale", "1", "--widths", "16,32"]
    counts = {}
    for nb in (4, 10):
        assert main([*base, "--json", "--backbone-kwargs", json.dumps({"nb": nb})]) == 0
        counts[nb] = json.loads(capsys.readouterr().out)["branches"][-1]["flops"]
    assert counts[4] < counts[10]


@pytest.mark.parametrize(
    ("value", "message"),
    [("{nb: 4}", "is not valid JSON"), ("[4]", "not an object")],
)
def test_flops_backbone_kwargs_errors(value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["flops", "--backbone", "dncnn", "--widths", "16", "--backbone-kwargs", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--backbone-kwargs" in err and message in err


def _built(*args, **kwargs) -> tuple[ClassWrapper, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model = ClassWrapper(*args, **kwargs)
    return model, [w for w in said if issubclass(w.category, CostWarning)]


def test_shipped_models_do_not_warn():
    for name in shipped_models():
        with warnings.catch_warnings():
            warnings.simplefilter("error", CostWarning)
            load_model(name)


def test_routing_that_cannot_pay_warns():
    # A 10-layer DnCNN a few channels wide: the Class-Module (3.8M multiply-adds per 32x32
    # patch) is 74% of the widest branch, more than an even split saves.
    model, said = _built("dncnn", widths=[4, 6, 8], scale=1, backbone_kwargs={"nb": 10})
    assert len(said) == 1
    message = str(said[0].message)
    assert "classsr calibrate" in message and "router='edge'" in message
    assert said[0].filename == __file__  # points at the caller's line
    classifier, branches = routing_costs(model)
    assert classifier >= max(branches) - sum(branches) / len(branches)
    # The same network wide enough to be worth routing: no warning.
    assert not _built("dncnn", widths=[16, 32, 64], scale=1, backbone_kwargs={"nb": 10})[1]


def test_meta_device_and_single_branch_are_not_counted():
    with torch.device("meta"):
        model, said = _built("dncnn", widths=[4, 6, 8], scale=1, backbone_kwargs={"nb": 10})
    assert not said
    assert routing_costs(model) is None
    assert routing_costs(ClassWrapper("fsrcnn", widths=[56])) is None


def test_uncountable_ops_still_warn_at_infer_time():
    from classsr_core.analysis.flops import count_flops

    class Cumsum(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x.cumsum(1), scale_factor=2)

    # The check counted these branches at build time, quietly, and found ops it cannot
    # count: no verdict, and the FLOPs warning still comes when the costs are used.
    model, said = _built(branches=[Cumsum(), Cumsum()], scale=2)
    assert not said
    assert routing_costs(model) is None
    with pytest.warns(UserWarning, match="aten::cumsum"):
        count_flops(model.branches[0], (1, 3, 32, 32))


@pytest.mark.parametrize(
    "command", ["upscale", "run", "prepare", "divide", "train", "calibrate", "sweep"]
)
def test_commands_with_a_progress_bar_take_no_progress(command):
    """The commands that draw a progress bar take --no-progress; the others (widths,
    flops, convert-official, models, plugins) draw none and refuse it."""
    from classsr_core.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "--no-progress" in sub.choices[command]._option_string_actions
    for other in ("widths", "flops", "convert-official"):
        assert "--no-progress" not in sub.choices[other]._option_string_actions


def test_own_class_by_name_trains_from_yaml_with_trust_code(tmp_path, capsys):
    """A config naming ``module:Class`` with ``model.width_arg`` validates, prepares,
    divides, trains all three stages and saves a model that reloads, with --trust-code;
    without the flag it stops at once with the fix (exit 2, one line, no traceback)."""
    import yaml
    from nets import TinyNet
    from train_helpers import micro_config, write_photos

    photos = write_photos(tmp_path / "photos", 3)
    data = micro_config(tmp_path, photos, threads=1).resolved()
    data["model"].update(backbone="nets:TinyNet", width_arg="nf", backbone_kwargs={})
    config = tmp_path / "own.yaml"
    config.write_text(yaml.safe_dump(data))

    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nets:TinyNet" in err and "--trust-code" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work

    assert main(["train", str(config), "--stage", "all", "--trust-code", "--no-progress"]) == 0
    out = tmp_path / "run" / "model.safetensors"
    assert read_meta(out)["model"]["backbone"] == "nets:TinyNet"
    model = load_model(out, trust_code=True)
    assert [type(b) for b in model.branches] == [TinyNet, TinyNet]
    assert [b.c1.out_channels for b in model.branches] == [4, 8]


def test_flops_counts_an_own_class_by_name_with_trust_code(capsys):
    """`classsr flops --backbone module:Class`: the one rule, as in Python and configs."""
    base = ["flops", "--backbone", "nets:TinyNet", "--scale", "2", "--widths", "8,16"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "nets:TinyNet" in err and "--trust-code" in err
    assert main([*base, "--trust-code"]) == 2  # TinyNet declares no width keyword
    assert "width_arg" in capsys.readouterr().err
    assert main([*base, "--trust-code", "--width-arg", "nf", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["backbone"] == "nets:TinyNet"
    # c1 (3 -> nf, 3x3) and c2 (nf -> 12, 3x3) on a 32x32 patch
    assert [b["flops"] for b in counted["branches"]] == [
        32 * 32 * 9 * (3 * nf + nf * 12) for nf in (8, 16)
    ]


def test_the_command_line_shows_a_cost_warning_on_one_line():
    argv = ["flops", "--backbone", "dncnn", "--scale", "1", "--widths", "4,6,8"]
    argv += ["--backbone-kwargs", '{"nb": 10}', "--convention", "fvcore"]
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("classsr flops: warning: the classifier costs 3.8M")
    assert res.stderr.count("\n") == 1 and "ClassWrapper(" not in res.stderr
    assert res.stdout.startswith("dncnn x1: 3 branch(es)")
