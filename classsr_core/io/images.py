"""Reading and writing images: PNG/JPEG/TIFF, 8- or 16-bit, grey, RGB or RGBA.

Models see RGB float in [0, 1]. Grey images are replicated to RGB and averaged back;
an alpha channel is not sent through the network: it is resized with bicubic
interpolation (scale > 1) or kept as it is (scale 1), then re-attached. Outputs keep the
input's bit depth and channel layout. Every write is atomic (temporary name, then rename).
Reading applies the EXIF orientation (pixels come out as viewers show them) and refuses,
from the header and before decoding, an image over a pixel limit (``MAX_PIXELS``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classsr_core.errors import InputError
from classsr_core.io.atomic import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass
class Image:
    """RGB pixels as float32 HWC in [0, 1], plus what is needed to write it back alike."""

    rgb: np.ndarray
    alpha: np.ndarray | None  # float32 HW in [0, 1]
    grey: bool
    max_value: int  # 255 or 65535


# The default pixel limit of ``read_image`` (``--max-pixels``), counted on the input: 100
# megapixels is three 8K frames (33 MP each) and above the photos of all but the largest
# medium-format cameras, yet far below what a decompression bomb claims: a 74-byte PNG
# header can claim 30000x30000 = 900 MP, which OpenCV would allocate (2.7 GB) before finding
# the data missing. A genuine image that large would need tens of GB for its output anyway.
MAX_PIXELS = 100_000_000


def _read_header(path: Path, max_pixels: int | None) -> int:
    """Refuse an image whose header claims more than ``max_pixels`` pixels, then return its
    EXIF orientation (1..8; 1: as stored). Decodes no pixels: PIL opens lazily."""
    from PIL import Image as PILImage

    def too_big(claim: str) -> InputError:
        return InputError(
            f"{path}: its header claims {claim} pixels, over the limit of {max_pixels:,}; "
            "raise it with --max-pixels (max_pixels=) if the file is genuine"
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: our limit decides
        try:
            im = PILImage.open(path)
        except PILImage.DecompressionBombError:
            # PIL refuses a header over twice its own limit before telling the size.
            limit = 2 * (PILImage.MAX_IMAGE_PIXELS or 0)
            if max_pixels and max_pixels < limit:
                raise too_big(f"more than {limit:,}") from None
            return 1
        except Exception:  # a format PIL does not know (OpenCV may), or no image at all
            return 1
        with im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise too_big(f"{w}x{h} = {w * h:,}")
            try:
                # PNG's getexif() decodes the whole image when the header has no eXIf chunk.
                if im.format == "PNG" and "exif" not in im.info:
                    return 1
                value = im.getexif().get(0x0112, 1)
            except Exception:  # unreadable EXIF: show the pixels as stored
                return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` the way viewers show them (the same as
    ``PIL.ImageOps.exif_transpose``); works for HW and HWC arrays of any dtype."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:
        return img.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(img, k=-1)  # 90 degrees clockwise
    if orientation == 7:
        return img[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(img, k=1)
    return img


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Image:
    """Decode an image file, turned as its EXIF orientation says (as viewers show it).

    ``max_pixels``: refuse a file whose header claims more pixels, before decoding it
    (``None`` or 0: no limit). Every decoding problem is an :class:`InputError`.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    orientation = _read_header(path, max_pixels)
    try:
        # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores EXIF: orientation is applied below.
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise InputError(f"{path}: cannot decode ({reason})") from None
    if img is None:
        raise InputError(f"{path}: not a readable image (PNG, JPEG, TIFF, BMP or WebP)")
    img = apply_orientation(img, orientation)
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
    alpha = None if alpha is None else np.ascontiguousarray(alpha)
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
    """Write atomically; the format follows the suffix (8-bit only for JPEG).

    The image is encoded in memory by ``path``'s suffix, then written to a temporary file
    beside ``path`` (ending in ``.tmp``, so no folder listing takes it for an image) and
    renamed onto it: a reader sees the old file or the new one, never half of one."""
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
    """Expand folders (non-recursive) into their image files, sorted; keep files as given.
    A file named twice (``d/`` and ``d/a.png``) is listed once: it is one job, not two
    writers of one output."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found = [item]
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(path)
    return out
