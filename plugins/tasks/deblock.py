"""JPEG deblocking: the input is the clean image saved as a JPEG and decoded again (scale 1).

The image is rounded to 8 bits, encoded by Pillow (libjpeg) at ``quality`` 1..100 into
memory and decoded: the same bytes a camera or a website would produce at that quality.
``quality_range: [lo, hi]`` draws an integer quality per image (a blind model). Colour
images use Pillow's default chroma subsampling 4:2:0 unless ``subsampling`` says otherwise.

Besides PSNR and SSIM (RGB), :meth:`Deblock.score` reports ``psnr_y`` (PSNR on BT.601
luma) and ``psnr_b`` (Yim & Bovik, 2011, on the same luma): PSNR with the mean squared error
raised by the output's blocking-effect factor, so a result that leaves visible 8x8 block
edges scores lower. ``psnr_y - psnr_b`` is the blocking penalty.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from classsr_plugins.tasks.denoise import check_clean_image
from pydantic import Field, model_validator

from classsr_core import hookimpl
from classsr_core.config import StrictModel, validate
from classsr_core.errors import InputError
from classsr_core.tasks import Task

DEFAULT_QUALITY = 20
BLOCK = 8  # the JPEG block size


class DeblockConfig(StrictModel):
    """Options of the ``deblock`` task (the ``task`` section of a training config)."""

    quality: int | None = Field(None, ge=1, le=100, description="JPEG quality 1..100 (20)")
    quality_range: tuple[int, int] | None = Field(
        None, description="[lo, hi]: draw the quality per image (blind); replaces quality"
    )
    subsampling: Literal["4:2:0", "4:2:2", "4:4:4"] = Field(
        "4:2:0", description="chroma subsampling of colour images (Pillow's default 4:2:0)"
    )

    @model_validator(mode="after")
    def _check(self) -> DeblockConfig:
        if self.quality is not None and self.quality_range is not None:
            raise ValueError("give quality (one level) or quality_range (blind), not both")
        if self.quality_range is not None:
            lo, hi = self.quality_range
            if not 1 <= lo <= hi <= 100:
                raise ValueError(f"quality_range must satisfy 1 <= lo <= hi <= 100, got {[lo, hi]}")
        return self


def jpeg_roundtrip(img: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode an HWC / HW float image in [0, 1] as JPEG in memory and decode it (float32)."""
    from PIL import Image

    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    squeeze = u8.ndim == 3 and u8.shape[2] == 1
    if u8.ndim == 2 or squeeze:
        pil = Image.fromarray(u8.reshape(u8.shape[:2]), mode="L")
    elif u8.shape[2] == 3:
        pil = Image.fromarray(u8, mode="RGB")
    else:
        raise InputError(
            f"deblock: JPEG holds grey or RGB images, got {u8.shape[2]} channels; "
            "drop the alpha channel first"
        )
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = np.asarray(decoded.convert(pil.mode), dtype=np.float32) / 255.0
    return out[:, :, None] if squeeze else out


def luma(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma on the 16..235 scale (as MATLAB's rgb2ycbcr) of an RGB [0, 1] image."""
    if img.ndim == 2 or img.shape[2] == 1:
        return img.reshape(img.shape[:2]).astype(np.float64) * 255.0
    rgb = img.astype(np.float64)
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def blocking_effect_factor(y: np.ndarray, block: int = BLOCK) -> float:
    """BEF of a grey image on the 0..255 scale: how much more neighbouring pixels differ
    across block edges than inside blocks, weighted by ``log2(block) / log2(min(H, W))``."""
    h, w = y.shape
    dx = (y[:, 1:] - y[:, :-1]) ** 2  # pair (j, j+1) crosses an edge when (j+1) % block == 0
    dy = (y[1:, :] - y[:-1, :]) ** 2
    edge_x = (np.arange(1, w) % block) == 0
    edge_y = (np.arange(1, h) % block) == 0
    across = dx[:, edge_x].sum() + dy[edge_y, :].sum()
    inside = dx[:, ~edge_x].sum() + dy[~edge_y, :].sum()
    n_across = h * edge_x.sum() + w * edge_y.sum()
    n_inside = h * (~edge_x).sum() + w * (~edge_y).sum()
    if n_across == 0 or n_inside == 0 or min(h, w) < 2:
        return 0.0
    d_b, d_bc = across / n_across, inside / n_inside
    if d_b <= d_bc:
        return 0.0
    eta = math.log2(block) / math.log2(min(h, w))
    return float(eta * (d_b - d_bc))


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def luma_scores(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """``psnr_y`` and ``psnr_b`` (dB) of ``out`` against ``ref`` (HWC in [0, 1]) on luma.

    Both are on the same channel, so ``psnr_b <= psnr_y`` always; the gap is the blocking.
    """
    a = luma(np.clip(np.rint(out * 255.0), 0, 255) / 255.0)
    b = luma(np.clip(np.rint(ref * 255.0), 0, 255) / 255.0)
    mse = float(np.mean((a - b) ** 2))
    return {"psnr_y": _psnr(mse), "psnr_b": _psnr(mse + blocking_effect_factor(a))}


@dataclass
class Deblock(Task):
    """JPEG compression artefacts; ``quality_range`` (when set) wins over ``quality``."""

    name: str = "deblock"
    scale: int = 1
    quality: int = DEFAULT_QUALITY
    quality_range: tuple[int, int] | None = None
    subsampling: str = "4:2:0"

    def draw_quality(self, rng: np.random.Generator) -> int:
        """This image's JPEG quality."""
        if self.quality_range is None:
            return int(self.quality)
        lo, hi = self.quality_range
        return int(rng.integers(lo, hi + 1))

    def make_input(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        check_clean_image(hr, self.name)
        return jpeg_roundtrip(hr, self.draw_quality(rng), self.subsampling)

    def crop_border(self) -> int:
        # Scale 1: no interpolation border. Every pixel, block edges included, counts.
        return 0

    def score(self, out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        return {**super().score(out, ref), **luma_scores(out, ref)}


def make_task(**options) -> Deblock:
    cfg = validate(DeblockConfig, options, source="task 'deblock'")
    if cfg.quality_range is not None:
        return Deblock(quality_range=tuple(cfg.quality_range), subsampling=cfg.subsampling)
    quality = DEFAULT_QUALITY if cfg.quality is None else cfg.quality
    return Deblock(quality=quality, subsampling=cfg.subsampling)


@hookimpl
def classsr_register_tasks(register):
    register("deblock", make_task, config_model=DeblockConfig)
