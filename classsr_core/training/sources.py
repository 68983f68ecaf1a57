"""Where the HR images of ``data.train`` / ``data.val`` come from: a folder of photos or
scikit-image's sample photos (``skimage:astronaut,coffee``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classsr_core.errors import ConfigError
from classsr_core.io.images import IMAGE_SUFFIXES, read_image

SKIMAGE_PREFIX = "skimage:"


@dataclass
class Source:
    """One HR image: a name, a stamp that changes when the file does, and a loader."""

    name: str
    stamp: str
    load: Callable[[], np.ndarray]  # -> RGB float32 HWC in [0, 1]


def _read_file(path: Path) -> np.ndarray:
    return read_image(path).rgb  # grey -> RGB, alpha dropped, 8/16-bit -> [0, 1]


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3]
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        return (img.astype(np.float32) / scale).clip(0, 1)

    return load


def list_sources(spec: str, key: str) -> list[Source]:
    """The images of a ``data.train`` / ``data.val`` entry: a folder or ``skimage:a,b``."""
    if spec.startswith(SKIMAGE_PREFIX):
        names = [n.strip() for n in spec[len(SKIMAGE_PREFIX) :].split(",") if n.strip()]
        if not names:
            raise ConfigError(f"data.{key}: '{spec}' names no image (e.g. skimage:astronaut)")
        try:
            import skimage.data
        except ImportError:
            raise ConfigError(
                f"data.{key} uses scikit-image's photos but scikit-image is not installed "
                "(pip install scikit-image)"
            ) from None
        unknown = [n for n in names if not callable(getattr(skimage.data, n, None))]
        if unknown:
            raise ConfigError(
                f"data.{key}: scikit-image has no image {unknown[0]!r} "
                "(try astronaut, coffee, chelsea, rocket, retina, hubble_deep_field)"
            )
        return [Source(f"{n}.skimage", "skimage", _skimage_loader(n)) for n in names]

    folder = Path(spec)
    if not folder.is_dir():
        raise ConfigError(
            f"data.{key}: folder {folder} does not exist; give a folder of HR images "
            "(scripts/fetch_photos.sh makes data/photos/train and data/photos/val)"
        )
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ConfigError(
            f"data.{key}: folder {folder} holds no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); put HR photos there"
        )
    out = []
    for path in files:
        st = path.stat()
        out.append(Source(path.name, f"{st.st_size}:{st.st_mtime_ns}", _file_loader(path)))
    return out


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _read_file(path)
