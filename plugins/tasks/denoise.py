"""Denoising: the input is the clean image plus white Gaussian noise (scale 1).

``sigma`` is on the 0..255 scale (the literature's sigma 15 / 25 / 50). A blind model is
trained with ``sigma_range: [lo, hi]``: every image draws its own sigma uniformly from the
range, from the generator it is given, so the same seed gives the same inputs.

The noisy image is clipped to [0, 1]: that is what a real noisy 8-bit photo is, and the
training store keeps inputs as 8-bit images anyway, so an unclipped input could not be
stored. (Clipping makes the noise slightly non-Gaussian in very dark and very bright areas.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from classsr_core import hookimpl
from classsr_core.config import StrictModel, validate
from classsr_core.errors import InputError
from classsr_core.tasks import Task

DEFAULT_SIGMA = 25.0


class DenoiseConfig(StrictModel):
    """Options of the ``denoise`` task (the ``task`` section of a training config)."""

    sigma: float | None = Field(
        None, ge=0, le=255, description="noise standard deviation on the 0..255 scale (25)"
    )
    sigma_range: tuple[float, float] | None = Field(
        None,
        description="[lo, hi]: draw sigma uniformly per image (blind denoising); replaces sigma",
    )

    @model_validator(mode="after")
    def _check(self) -> DenoiseConfig:
        if self.sigma is not None and self.sigma_range is not None:
            raise ValueError("give sigma (one noise level) or sigma_range (blind), not both")
        if self.sigma_range is not None:
            lo, hi = self.sigma_range
            if not 0 <= lo <= hi <= 255:
                raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi <= 255, got {[lo, hi]}")
        return self


def check_clean_image(hr: np.ndarray, task: str) -> None:
    """A task's input contract: a float32 HWC (or HW) image in [0, 1]."""
    if not isinstance(hr, np.ndarray) or hr.ndim not in (2, 3):
        raise InputError(
            f"{task}: expected an HWC (or HW) numpy image, got "
            f"{getattr(hr, 'shape', type(hr).__name__)}"
        )
    if hr.dtype != np.float32:
        raise InputError(
            f"{task}: expected float32 in [0, 1], got {hr.dtype}; convert with "
            "img.astype(np.float32) / 255"
        )
    if hr.size and (hr.min() < 0 or hr.max() > 1):
        raise InputError(
            f"{task}: pixel values must lie in [0, 1], got {hr.min():.3g}..{hr.max():.3g}"
        )


@dataclass
class Denoise(Task):
    """Additive white Gaussian noise; ``sigma_range`` (when set) wins over ``sigma``."""

    name: str = "denoise"
    scale: int = 1
    sigma: float = DEFAULT_SIGMA
    sigma_range: tuple[float, float] | None = None

    def draw_sigma(self, rng: np.random.Generator) -> float:
        """This image's sigma (0..255 scale)."""
        if self.sigma_range is None:
            return float(self.sigma)
        lo, hi = self.sigma_range
        return float(rng.uniform(lo, hi))

    def make_input(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        check_clean_image(hr, self.name)
        sigma = self.draw_sigma(rng) / 255.0
        noise = rng.standard_normal(hr.shape, dtype=np.float32) * np.float32(sigma)
        return np.clip(hr + noise, 0.0, 1.0).astype(np.float32)

    def crop_border(self) -> int:
        # Scale 1 has no interpolation border to ignore: score every pixel.
        return 0


def make_task(**options) -> Denoise:
    cfg = validate(DenoiseConfig, options, source="task 'denoise'")
    if cfg.sigma_range is not None:
        return Denoise(sigma_range=tuple(cfg.sigma_range))
    return Denoise(sigma=DEFAULT_SIGMA if cfg.sigma is None else cfg.sigma)


@hookimpl
def classsr_register_tasks(register):
    register("denoise", make_task, config_model=DenoiseConfig)
