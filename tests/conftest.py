import numpy as np
import pytest
import torch
from cli_helpers import save as cli_save

# Tiny tensors: one thread is as fast, and far more robust on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


# -- the command-line tests' photos and refusal guard (tests/cli_helpers.py) ---------------


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "in"
    cli_save(folder / "a.png", 0)
    cli_save(folder / "b.png", 1)
    return folder


@pytest.fixture()
def no_load(monkeypatch):
    """Fail the test if a model is loaded: refusals must come before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    from classsr_core.model import loading

    monkeypatch.setattr(loading, "load_model", refuse)
