import numpy as np
import pytest
import torch

# Tiny tensors: one thread is as fast, and far more robust on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
