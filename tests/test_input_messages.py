"""Inputs that `infer` or a training config cannot take fail with a message that names the
mix-up and the fix (issue #23); a grey uint8 image, which the docs promise, is accepted."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from classsr_core.cli import main
from classsr_core.engine import infer
from classsr_core.errors import ConfigError, CostWarning, InputError
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.training.config import load_train_config, validate_train_config
from tests.nets import TinyNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with warnings.catch_warnings():  # tiny branches: the classifier costs more than they do
        warnings.simplefilter("ignore", CostWarning)
        net = ClassWrapper(branches=[TinyNet(4), TinyNet(8)], scale=2, patch_size=8, stride=8)
    return net.eval()


def _u8(*shape) -> np.ndarray:
    return (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)


# -- grey uint8 images ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["patches", "regions"])
@pytest.mark.parametrize("shape", [(13, 18), (13, 18, 1)])
def test_grey_uint8_goes_through_an_rgb_model(model, mode, shape):
    """Replicated to RGB, the output averaged back to one channel and rounded once: what
    `classsr upscale` does with a grey file."""
    img = _u8(*shape)
    out = infer(model, img, mode=mode).output
    assert out.dtype == np.uint8 and out.shape == (26, 36, *shape[2:])
    rgb = torch.from_numpy(img.reshape(13, 18)).float().div(255).expand(1, 3, 13, 18)
    ref = infer(model, rgb.contiguous(), mode=mode).output[0].mean(0)
    want = ref.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(out.reshape(26, 36), want)


# -- layouts mixed up -----------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expect",
    [
        (
            (3, 20, 30),
            r"shape \(3, 20, 30\): uint8 arrays are HWC \(H, W, 3\).*transpose\(1, 2, 0\)",
        ),
        ((1, 20, 30, 3), r"shape \(1, 20, 30, 3\).*one image.*arr\[0\]"),
        ((1, 3, 20, 30), r"arr\[0\]\.transpose\(1, 2, 0\)"),
        ((2, 20, 30, 3), "one image at a time"),
        ((20, 30, 4), r"drop the alpha channel with arr\[:, :, :3\]"),
        ((20, 30, 5), r"5 channels, but the model takes 3"),
    ],
)
def test_uint8_array_layout_is_named(model, shape, expect):
    with pytest.raises(InputError, match=expect):
        infer(model, _u8(*shape))


@pytest.mark.parametrize(
    "shape, fix",
    [((20, 30, 3), r"t\.permute\(2, 0, 1\)"), ((1, 20, 30, 3), r"t\.permute\(0, 3, 1, 2\)")],
)
def test_channels_last_float_tensor_is_named(model, shape, fix):
    with pytest.raises(InputError) as err:
        infer(model, torch.rand(*shape))
    msg = str(err.value)
    assert "float tensors are (1, 3, H, W) or (3, H, W)" in msg
    assert "20 channels" not in msg and "30 channels" not in msg
    assert re.search(fix, msg)


def test_uint8_tensor_is_told_to_divide(model):
    with pytest.raises(InputError, match=r"float\(\) / 255"):
        infer(model, torch.zeros(3, 20, 30, dtype=torch.uint8))


def test_read_only_array_gives_no_torch_warning(model):
    img = np.asarray(Image.fromarray(_u8(20, 30, 3)))
    assert not img.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = infer(model, img).output
        grey = infer(model, np.asarray(Image.fromarray(_u8(20, 30)))).output
    assert out.shape == (40, 60, 3) and grey.shape == (40, 60)


def test_meta_tensor_is_refused(model):
    with pytest.raises(InputError, match="on the meta device"):
        infer(model, torch.empty(1, 3, 20, 30, device="meta"))


# -- training configs: every value checked up front ---------------------------------------


def _config(tmp_path, **over) -> dict:
    data = {
        "out": str(tmp_path / "run"),
        "task": {"name": "sr", "scale": 2},
        "model": {"backbone": "fsrcnn", "widths": [4, 8], "patch_size": 8, "stride": 6},
        "data": {"train": str(tmp_path / "photos")},
    }
    data.update(over)
    return data


@pytest.mark.parametrize(
    "over, expect",
    [
        (
            {"stages": {"branches": {"optimizer": "banana"}}},
            r"stages\.branches\.optimizer is 'banana', not a timm optimizer; allowed: .*adamw",
        ),
        ({"stages": {"joint": {"optimizer": "adamm"}}}, r"did you mean 'adam'"),
        ({"stages": {"classifier": {"betas": [0.9, 1.5]}}}, r"stages\.classifier: .*beta"),
        ({"stages": {"joint": {"loss": {"w_l1": -1}}}}, r"stages\.joint\.loss\.w_l1"),
        ({"device": "banana"}, r"'device'.*cpu, cuda, cuda:N, mps.*'banana'"),
        ({"task": {"name": "banana"}}, r"task\.name: unknown task 'banana'.*sr"),
    ],
)
def test_bad_values_name_key_value_and_choices(tmp_path, over, expect):
    with pytest.raises(ConfigError, match=expect):
        validate_train_config(_config(tmp_path, **over))


def test_good_optimizers_and_devices_pass(tmp_path):
    stages = {"branches": {"optimizer": "lookahead_adamw"}, "joint": {"optimizer": "SGD"}}
    cfg = validate_train_config(_config(tmp_path, stages=stages, device="cuda:3"))
    assert cfg.stages.branches.optimizer == "lookahead_adamw" and cfg.device == "cuda:3"


def test_out_and_store_must_be_folders(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=f"out must be a folder; {afile} is a file"):
        validate_train_config(_config(tmp_path, out=str(afile)))
    with pytest.raises(ConfigError, match=f"out must be a folder; {afile} .*is a file"):
        validate_train_config(_config(tmp_path, out=str(afile / "sub")))
    with pytest.raises(ConfigError, match="data.store must be a folder"):
        validate_train_config(_config(tmp_path, data={"train": "x", "store": str(afile)}))
    validate_train_config(_config(tmp_path, out=str(tmp_path)))  # an existing folder is fine


@pytest.mark.parametrize(
    "setting, expect",
    [
        ("stages.branches.optimizer=banana", "stages.branches.optimizer is 'banana'"),
        ("out={afile}", "out must be a folder; {afile} is a file"),
    ],
)
def test_train_refuses_before_any_work(tmp_path, capsys, setting, expect):
    """`classsr train CONFIG --set ...` fails in one line, exit 2, before prepare runs."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    setting = setting.format(afile=afile)
    assert main(["train", str(path), "--set", setting, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert expect.format(afile=afile) in err and "Traceback" not in err
    assert "preparing" not in out and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError):  # prepare and divide load the config the same way
        load_train_config(path, [setting])
