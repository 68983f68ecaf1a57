"""An example task plugin: removing salt-and-pepper (impulse) noise.

A task says how the network's input is made from a clean image (``make_input``) and how an
output is scored (``score``, ``crop_border``). Here a share ``amount`` of the pixels is
replaced by white (salt) or black (pepper), all channels of a pixel together, as a dead or
saturated sensor pixel would be. The output has the input's size: ``scale = 1``.

Its options are a pydantic model registered as ``config_model``: in a training config they
are the keys of the ``task`` section, next to ``name: saltpepper``, and a typo there fails
with the key's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from classsr_core.api import StrictModel, Task, hookimpl, validate

__version__ = "0.1.0"


class SaltPepperConfig(StrictModel):
    amount: float = Field(0.05, gt=0, le=1, description="share of pixels replaced")
    salt: float = Field(0.5, ge=0, le=1, description="share of the replaced pixels set white")


@dataclass
class SaltPepper(Task):
    name: str = "saltpepper"
    scale: int = 1
    amount: float = 0.05
    salt: float = 0.5

    def make_input(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``hr``: float32 HWC in [0, 1]. All randomness comes from ``rng`` (reproducible)."""
        out = hr.astype(np.float32, copy=True)
        hit = rng.random(hr.shape[:2]) < self.amount
        white = rng.random(hr.shape[:2]) < self.salt
        out[hit & white] = 1.0
        out[hit & ~white] = 0.0
        return out

    def crop_border(self) -> int:
        return 0  # no interpolation at scale 1: score every pixel


def make_task(**options) -> SaltPepper:
    # validate() turns pydantic's errors into classsr's ConfigError, naming the bad key.
    cfg = validate(SaltPepperConfig, options, source="task 'saltpepper'")
    return SaltPepper(amount=cfg.amount, salt=cfg.salt)


@hookimpl
def classsr_register_tasks(register):
    register("saltpepper", make_task, config_model=SaltPepperConfig)
