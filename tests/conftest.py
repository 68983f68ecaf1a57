import os

import numpy as np
import pytest
import torch

# Two cores: more threads than that only adds contention and noise.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
