"""Strict configs: a typo names the key's path and the keys allowed there."""

import pytest
from pydantic import Field

from classsr_core.config import StrictModel, load_config, validate
from classsr_core.errors import ConfigError
from classsr_core.plugins.registry import lookup


class Optim(StrictModel):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)


class Train(StrictModel):
    batch_size: int = Field(16, ge=1)
    optim: Optim = Optim()


def test_typo_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        validate(Train, {"optim": {"lr_rate": 1}}, source="x.yaml")
    msg = str(err.value)
    assert "x.yaml" in msg and "optim.lr_rate" in msg and "lr, betas" in msg


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="batch_size"):
        validate(Train, {"batch_size": 0})


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 4\noptim:\n  lr: 0.5\n")
    assert load_config(Train, path).optim.lr == 0.5
    path.write_text("batch_sise: 4\n")
    with pytest.raises(ConfigError, match="batch_sise.*allowed keys here: batch_size, optim"):
        load_config(Train, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Train, tmp_path / "missing.yaml")


def test_plugin_section_validated_by_plugin_model():
    model = lookup("tasks", "sr").metadata["config_model"]
    assert validate(model, {"scale": 2}).scale == 2
    with pytest.raises(ConfigError, match="scael"):
        validate(model, {"scael": 2})


def test_every_example_training_config_validates():
    """The configs the docs tell users to run must at least load (no typos, no stale keys)."""
    from pathlib import Path

    from classsr_core.training.config import load_train_config

    root = Path(__file__).resolve().parents[1] / "examples" / "configs"
    paths = sorted(root.rglob("*.yaml"))
    assert len(paths) >= 10
    for path in paths:
        load_train_config(path)
