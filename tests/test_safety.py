"""Opening a model file or a config runs no code unless the caller opts in (trust_code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from nets import TinyNet
from safetensors.torch import save_file

from classsr_core import ClassWrapper, load_model
from classsr_core.errors import CheckpointError, ConfigError, InputError, UntrustedCodeError
from classsr_core.training.config import validate_train_config


def _crafted(path: Path, marker: Path, **spec_extra) -> Path:
    """A file whose backbone is os:popen, with the command in backbone_kwargs."""
    spec = {
        "backbone": "os:popen",
        "widths": [1],
        "scale": 1,
        "backbone_kwargs": {"cmd": f"touch {marker}"},
        **spec_extra,
    }
    meta = {"format": "classsr/1", "config": json.dumps({"model": spec})}
    save_file({"x": torch.zeros(1)}, str(path), metadata=meta)
    return path


def test_crafted_safetensors_runs_nothing_and_names_the_component(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "evil.safetensors", marker)
    with pytest.raises(UntrustedCodeError, match="backbone 'os:popen'.*trust_code=True"):
        load_model(path)
    assert not marker.exists()


def test_a_file_cannot_grant_itself_trust(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "evil.safetensors", marker, trust_code=True)
    with pytest.raises(CheckpointError, match="trust_code"):
        load_model(path)
    assert not marker.exists()


def test_crafted_file_through_the_cli_exits_2_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "evil.safetensors", marker)
    img = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(img)
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", "run", str(img), "-o", str(tmp_path / "o")]
        + ["--model", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "--trust-code" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()


def test_own_class_loads_with_trust_code(tmp_path):
    model = ClassWrapper(TinyNet, widths=[2, 4], width_arg="nf", scale=2).eval()
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(UntrustedCodeError, match="nets:TinyNet"):
        load_model(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors", trust_code=True)
    assert [type(b) for b in loaded.branches] == [TinyNet, TinyNet]


def test_class_name_string_needs_trust_code():
    with pytest.raises(UntrustedCodeError, match="trust_code"):
        ClassWrapper("nets:TinyNet", widths=[2, 4], width_arg="nf", scale=2)
    model = ClassWrapper("nets:TinyNet", widths=[2, 4], width_arg="nf", scale=2, trust_code=True)
    assert model.spec["backbone"] == "nets:TinyNet"
    assert model.spec["width_arg"] == "nf"


def test_saving_a_main_module_class_fails_with_the_fix(tmp_path):
    Main = type("MainNet", (TinyNet,), {"__module__": "__main__"})
    model = ClassWrapper(Main, widths=[2], width_arg="nf", scale=2)
    with pytest.raises(CheckpointError, match="importable module.*register it"):
        model.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def _config(**model):
    return {
        "task": {"name": "sr", "scale": 2},
        "model": {"backbone": "fsrcnn", "widths": [8, 16], **model},
        "data": {"train": "skimage:astronaut"},
    }


def test_config_naming_code_needs_trust_code():
    data = _config(backbone="os:popen", widths=[1], backbone_kwargs={"cmd": "true"})
    with pytest.raises(ConfigError, match="os:popen.*--trust-code"):
        validate_train_config(data)
    ok = _config(backbone="nets:TinyNet", width_arg="nf", widths=[2, 4])
    assert validate_train_config(ok, trust_code=True).trust_code
    with pytest.raises(ConfigError):  # trust is the command's flag, not a key of the file
        validate_train_config({**ok, "trust_code": True})


@pytest.mark.parametrize(
    ("model", "divide", "match"),
    [
        ({"backbone": "fsrcn"}, {}, "unknown backbone 'fsrcn'"),
        ({"widths": [16, 8]}, {}, "strictly increasing"),
        ({"classifier": "nope"}, {}, "unknown classifier 'nope'"),
        ({}, {"ratios": [1, 1, 2]}, "ratios has 3 values but the model has 2"),
    ],
)
def test_config_model_errors_fail_at_validation(model, divide, match):
    data = {**_config(**model), "divide": divide}
    with pytest.raises(ConfigError, match=match):
        validate_train_config(data)


def test_prepare_refuses_a_bad_backbone_before_any_work(tmp_path):
    cfg = _config(backbone="fsrcn")
    cfg["out"] = str(tmp_path / "run")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [sys.executable, "-m", "classsr_core.cli", "prepare", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "unknown backbone 'fsrcn'" in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("scale_by", [255.0, -1.0])
def test_float_image_outside_unit_range_is_refused(scale_by):
    model = ClassWrapper("fsrcnn", widths=[8], scale=2).eval()
    img = torch.rand(1, 3, 16, 16) * scale_by
    with pytest.raises(InputError, match=r"must be in \[0, 1\]"):
        model.infer(img)
    model.infer(torch.rand(1, 3, 16, 16) * 1.02 - 0.01)  # a little overshoot is fine
