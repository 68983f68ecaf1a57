"""Reading and writing images: PNG/JPEG/TIFF, 8- or 16-bit, grey, RGB or RGBA.

Models see RGB float in [0, 1]. Grey images are replicated to RGB and averaged back;
an alpha channel is not sent through the network: it is resized with bicubic
interpolation (scale > 1) or kept as it is (scale 1), then re-attached. Outputs keep the
input's bit depth and channel layout. Every write is atomic (temporary name, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classsr_core.checkpoint import atomic_path
from classsr_core.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass
class Image:
    """RGB pixels as float32 HWC in [0, 1], plus what is needed to write it back alike."""

    rgb: np.ndarray
    alpha: np.ndarray | None  # float32 HW in [0, 1]
    grey: bool
    max_value: int  # 255 or 65535


def read_image(path: str | Path) -> Image:
    import cv2

    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise InputError(f"{path}: no such file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image (PNG, JPEG, TIFF, BMP or WebP)")
    if img.dtype == np.uint8:
        max_value = 255
    elif img.dtype == np.uint16:
        max_value = 65535
    else:
        raise InputError(f"{path}: unsupported pixel type {img.dtype}; use 8- or 16-bit images")
    img = img.astype(np.float32) / max_value
    alpha = None
    grey = img.ndim == 2 or img.shape[2] == 1
    if grey:
        rgb = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    elif img.shape[2] == 4:
        rgb, alpha = img[:, :, 2::-1], img[:, :, 3]
    elif img.shape[2] == 3:
        rgb = img[:, :, ::-1]
    else:
        raise InputError(f"{path}: {img.shape[2]} channels; expected grey, RGB or RGBA")
    return Image(np.ascontiguousarray(rgb), alpha, grey, max_value)


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return alpha
    import torch

    t = torch.from_numpy(alpha)[None, None]
    out = torch.nn.functional.interpolate(
        t, scale_factor=scale, mode="bicubic", align_corners=False
    )
    return out[0, 0].clamp(0, 1).numpy()


def to_array(img: Image) -> np.ndarray:
    """HWC (or HW for grey) integer array in the image's own bit depth, channels RGB(A)."""
    rgb = img.rgb.mean(axis=2, keepdims=True) if img.grey else img.rgb
    if img.alpha is not None:
        rgb = np.concatenate([rgb, img.alpha[:, :, None]], axis=2)
    dtype = np.uint8 if img.max_value == 255 else np.uint16
    out = np.clip(np.rint(rgb * img.max_value), 0, img.max_value).astype(dtype)
    return out[:, :, 0] if out.shape[2] == 1 else out


def write_image(path: str | Path, img: Image | np.ndarray) -> None:
    """Write atomically; the format follows the suffix (8-bit only for JPEG)."""
    import cv2

    path = Path(path)
    arr = to_array(img) if isinstance(img, Image) else img
    if arr.ndim == 3:  # OpenCV wants BGR(A)
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] == 4 else arr[:, :, ::-1]
    if path.suffix.lower() in (".jpg", ".jpeg") and arr.dtype != np.uint8:
        arr = (arr / 257).round().astype(np.uint8)
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(arr))
    if not ok:
        raise InputError(f"cannot encode {path.name}: unknown image format {path.suffix!r}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand folders (non-recursive) into their image files, sorted; keep files as given."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out
