"""Model files are data (#23): loading one opens no file it names, allocates nothing its
tensors cannot back, says what is wrong with a damaged one, never lets a local file replace
a shipped model unnoticed, and refuses NaN weights."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from classsr_core import ClassWrapper, load_model
from classsr_core.cli import main
from classsr_core.errors import CheckpointError, InputError, ModelNameWarning, UntrustedCodeError
from classsr_core.io.checkpoint import read_checkpoint, read_training_state
from classsr_core.model import loading
from classsr_core.model.file_checks import check_file_kwargs, weights_only_loads
from classsr_core.model.spec import ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore::classsr_core.errors.CostWarning")

SHIPPED = "classsr-fsrcnn-x4-shared"  # a shipped model (the rule holds for any of them)


class _Evil:
    """Unpickling this writes ``marker``: what a pickle named by a model file could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _evil_pickle(path: Path, marker: Path) -> Path:
    torch.save(_Evil(marker), path)
    return path


def _write(path: Path, config: str | dict, state: dict | None = None) -> Path:
    """A safetensors file with ``config`` as its classsr metadata (a dict: JSON-encoded)."""
    text = config if isinstance(config, str) else json.dumps(config)
    state = {"x": torch.zeros(1)} if state is None else state
    save_file(state, str(path), metadata={"format": "classsr/1", "config": text})
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A real two-branch FSRCNN model file (widths 8 / 16, x2)."""
    path = tmp_path_factory.mktemp("small") / "small.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CostWarning for so small a backbone
        ClassWrapper("fsrcnn", widths=[8, 16], scale=2).save(path)
    return path


def _edited(small: Path, out: Path, edit) -> Path:
    """``small`` with its weights or JSON config text changed by ``edit(state, text)``."""
    state, meta = read_checkpoint(small)
    text = json.dumps(meta)
    state, text = edit(dict(state), text)
    return _write(out, text, state)


@pytest.fixture
def only_meta_builds(monkeypatch):
    """Fail any model build off the meta device before it allocates (a real build of a
    crafted width would try to allocate gigabytes)."""

    class Guarded(ClassWrapper):
        def __init__(self, *args, **kwargs):
            assert torch.empty(0).device.type == "meta", "a real build before the shape check"
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loading, "ClassWrapper", Guarded)


# -- 1. a model file opens no file it names ---------------------------------------------------


def test_spynet_path_is_refused_before_basicsr_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6's default
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.pth", marker)
    import classsr_core._basicsr as bridge

    def no_basicsr():
        raise AssertionError("basicsr was imported for a refused file")

    monkeypatch.setattr(bridge, "arch_registry", no_basicsr)
    spec = {"backbone": "basicsr:BasicVSR", "widths": [16], "scale": 1}
    path = _write(tmp_path / "m.safetensors", {"model": {**spec, "backbone_kwargs": {}}})
    for value in ("evil.pth", str(tmp_path / "evil.pth")):  # relative and absolute
        _write(path, {"model": {**spec, "backbone_kwargs": {"spynet_path": value}}})
        with pytest.raises(UntrustedCodeError, match=r"spynet_path.*trust_code=True"):
            load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"checkpoint_path": "evil.pth"}, "checkpoint_path"),
        ({"pretrained": True}, "pretrained"),  # a download
        ({"pretrained_cfg_overlay": {"file": "evil.pth"}}, "pretrained_cfg_overlay"),
        ({"act_layer": "evil.pth"}, "act_layer"),  # the value is a file, whatever the key
        ({"norm": ["x", "https://example.com/w.bin"]}, r"norm\[1\]"),
    ],
)
def test_timm_classifier_kwargs_that_name_a_file_are_refused(tmp_path, monkeypatch, kwargs, named):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.pth", marker)
    spec = {"backbone": "fsrcnn", "widths": [8, 16], "scale": 2, "classifier": "timm:resnet10t"}
    path = _write(tmp_path / "m.safetensors", {"model": {**spec, "classifier_kwargs": kwargs}})
    with pytest.raises(UntrustedCodeError, match=rf"m\.safetensors: classifier_kwargs\.{named}"):
        load_model(path)
    assert not marker.exists()


def test_plain_kwargs_pass_the_file_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ModelSpec(
        widths=[8, 16],
        backbone_kwargs={"skip": "bicubic", "drop_path_rate": 0.1, "use_cache": True},
        classifier_kwargs={"init_scale": 1.0, "center": True, "pretrained": False},
    )
    check_file_kwargs(spec, "m.safetensors")  # nothing named: no error
    # A file named like a plain value in the current folder changes nothing: what a model
    # file means does not depend on where it is opened (a loader that read it anyway would
    # meet the weights-only guard, tested below).
    (tmp_path / "bicubic").write_text("")
    check_file_kwargs(spec, "m.safetensors")


def test_the_guard_makes_every_torch_load_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    evil = _evil_pickle(tmp_path / "evil.pth", marker)
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pth")
    original = torch.load
    with weights_only_loads("m.safetensors"):
        for load in (torch.load, torch.serialization.load):
            with pytest.raises(UntrustedCodeError, match=r"m\.safetensors: .*evil\.pth"):
                load(evil, weights_only=False)  # what the caller asks is overridden
            with pytest.raises(UntrustedCodeError, match="evil.pth"):
                load(str(evil))  # the environment's default too
        assert torch.equal(torch.load(tmp_path / "plain.pth")["w"], torch.ones(2))
    assert torch.load is original and torch.serialization.load is original
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the control: this pickle does run code
    assert marker.exists()


def test_the_guard_stops_a_pickle_the_kwargs_check_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loading, "check_file_kwargs", lambda spec, source: None)
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.pth", marker)
    spec = {"backbone": "basicsr:BasicVSR", "widths": [16], "scale": 1}
    path = _write(
        tmp_path / "m.safetensors",
        {"model": {**spec, "backbone_kwargs": {"spynet_path": "evil.pth"}}},
    )
    with pytest.raises(UntrustedCodeError, match=r"m\.safetensors: building the model.*evil\.pth"):
        load_model(path)
    assert not marker.exists()


# -- 2. widths are checked against the stored tensors before anything is allocated ------------


def test_a_float_width_is_refused(small, tmp_path, only_meta_builds):
    bad = _edited(
        small, tmp_path / "m.safetensors", lambda s, t: (s, t.replace("[8, 16]", "[8, 1e8]"))
    )
    with pytest.raises(CheckpointError, match=r"m\.safetensors: .*widths.*whole numbers"):
        load_model(bad)


@pytest.mark.parametrize("widths", ["[8, 100000000]", "[8, -16]"])
def test_an_absurd_width_is_refused(small, tmp_path, only_meta_builds, widths):
    bad = _edited(small, tmp_path / "m.safetensors", lambda s, t: (s, t.replace("[8, 16]", widths)))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: its model config's widths"):
        load_model(bad)


def test_a_width_that_does_not_match_its_tensors_fails_on_the_meta_device(
    small, tmp_path, only_meta_builds
):
    bad = _edited(
        small, tmp_path / "m.safetensors", lambda s, t: (s, t.replace("[8, 16]", "[8, 200]"))
    )
    with pytest.raises(CheckpointError) as info:
        load_model(bad)
    message = str(info.value)
    assert "m.safetensors" in message and "shape mismatch" in message
    assert "branches.1." in message and "16" in message and "200" in message


_META_SHY = """
import torch
from torch import nn


class MetaShy(nn.Module):
    def __init__(self, nf=4, scale=2):
        super().__init__()
        self.offset = float(torch.zeros(1).item())  # no data on the meta device: fails there
        self.body = nn.Sequential(
            nn.Conv2d(3, nf, 3, padding=1), nn.Conv2d(nf, 3 * scale**2, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x):
        return self.body(x) + self.offset
"""


def test_a_component_that_cannot_be_built_on_meta_is_built_and_then_compared(tmp_path, monkeypatch):
    (tmp_path / "metashy_net.py").write_text(_META_SHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    from metashy_net import MetaShy

    path = tmp_path / "m.safetensors"
    ClassWrapper(MetaShy, widths=[4], width_arg="nf", scale=2).save(path)
    assert load_model(path, trust_code=True).spec["widths"] == [4]
    bad = _edited(path, tmp_path / "bad.safetensors", lambda s, t: (s, t.replace("[4]", "[6]")))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors does not match the model"):
        load_model(bad, trust_code=True)


# -- 3. a damaged config is a message, not a traceback ----------------------------------------


@pytest.mark.parametrize(
    "config, said",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"card": {}}', "no 'model' key"),
        ('{"model": [1]}', "'model' that is a JSON list"),
        ('{"model": {"widths": [8, 16]}, "routers": [1]}', "'routers' that is a JSON list"),
    ],
)
def test_a_damaged_config_names_the_file_and_the_problem(tmp_path, capsys, config, said):
    path = _write(tmp_path / "bad.safetensors", config)
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors: .*{said}"):
        load_model(path)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    for argv in (
        ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--device", "cpu"],
        ["calibrate", str(tmp_path), "-o", str(tmp_path / "cal.safetensors")],
    ):
        assert main([*argv, "--model", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert "bad.safetensors" in err and said in err, err


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_a_training_state_that_is_no_checkpoint_is_a_message(tmp_path, content):
    path = tmp_path / "branches.pt"
    if content is None:
        torch.save([1, 2], path)  # a torch file, but no training state
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"branches\.pt .*delete"):
        read_training_state(path)


def test_a_pickled_training_state_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match="not a readable training state"):
        read_training_state(_evil_pickle(tmp_path / "branches.pt", marker))
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("empty.pth", CheckpointError, "empty.pth is not a readable PyTorch weights file"),
        # a .pth / .pt is a network file (spandrel, docs/bring-your-own.md): a state dict it
        # cannot identify says so, and how to convert an official ClassSR checkpoint
        ("model.pt", InputError, "model.pt: spandrel cannot identify.*convert-official"),
    ],
)
def test_a_torch_file_given_as_a_model_is_a_message(tmp_path, name, error, match):
    path = tmp_path / name
    if name == "empty.pth":
        path.write_bytes(b"")
    else:
        torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(error, match=match):
        load_model(path)


# -- 4. a shipped model's name means the shipped model ----------------------------------------


def test_a_local_file_does_not_replace_a_shipped_model(tmp_path, monkeypatch):
    from classsr_core.commands.outputs import model_files
    from classsr_core.commands.upscale import read_meta
    from classsr_core.io.checkpoint import shipped_models

    monkeypatch.chdir(tmp_path)
    shipped = shipped_models()[SHIPPED]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file of that name here: no warning
        assert load_model(SHIPPED).spec["widths"] == [16, 36, 56]
    Path(SHIPPED).write_bytes(b"a local file, not a model")
    with pytest.warns(ModelNameWarning, match=rf"to load the file, name it '\./{SHIPPED}'"):
        model = load_model(SHIPPED)
    assert model.spec["widths"] == [16, 36, 56]
    assert model_files(SHIPPED) == [shipped]  # what the commands plan with
    assert read_meta(SHIPPED)["model"]["widths"] == [16, 36, 56]
    for local in (f"./{SHIPPED}", str(tmp_path / SHIPPED), Path(SHIPPED)):
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            load_model(local)
        assert model_files(local) == [Path(local)]


# -- 5. NaN or Inf weights are refused -------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_the_tensor_key(small, tmp_path, bad):
    def poison(state, text):
        key = sorted(k for k in state if k.startswith("branches.1."))[0]
        state[key] = state[key].clone()
        state[key].view(-1)[0] = bad
        return state, text

    path = _edited(small, tmp_path / "nan.safetensors", poison)
    with pytest.raises(
        CheckpointError, match=r"nan\.safetensors: tensor 'branches\.1\..*NaN or Inf"
    ):
        load_model(path)
    assert load_model(small).num_classes == 2  # the clean file loads
