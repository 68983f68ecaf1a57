"""Super-resolution: the input is the MATLAB-bicubic downscale of the clean image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from classsr_core import hookimpl
from classsr_core.config import StrictModel
from classsr_core.tasks import Task


class SRConfig(StrictModel):
    scale: int = Field(4, ge=2, le=4, description="upscaling factor: 2, 3 or 4")


@dataclass
class SuperResolution(Task):
    name: str = "sr"
    scale: int = 4

    def make_input(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from classsr_core._basicsr import imresize

        lr = imresize(self.modcrop(hr), 1.0 / self.scale)
        return np.clip(lr, 0.0, 1.0).astype(np.float32)


def make_task(**options) -> SuperResolution:
    return SuperResolution(scale=SRConfig(**options).scale)


@hookimpl
def classsr_register_tasks(register):
    register("sr", make_task, config_model=SRConfig)
