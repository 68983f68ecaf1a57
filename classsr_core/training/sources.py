"""Where the images of ``data.train`` / ``data.val`` come from: a folder of clean photos,
scikit-image's sample photos (``skimage:astronaut,coffee``), whose inputs the task makes,
or paired folders (``{inputs: DIR, targets: DIR}``), whose inputs are read as they are.

Paired folders are matched by file name without the extension (``rain/001.png`` with
``clean/001.jpg``); every file must have its partner, and every target must be its input's
size times the task's scale: both are checked for the whole folder before any work, and
refused with the names that do not fit (docs/tasks/paired.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classsr_core.errors import ConfigError, InputError
from classsr_core.io.images import IMAGE_SUFFIXES, read_image

SKIMAGE_PREFIX = "skimage:"
SHOWN = 10  # names an error lists before "and N more"


@dataclass
class Source:
    """One training image: a name, a stamp that changes when a file does, and a loader of
    the target (HR, clean) image; paired data also loads its given input."""

    name: str
    stamp: str
    load: Callable[[], np.ndarray]  # -> RGB float32 HWC in [0, 1]
    load_input: Callable[[], np.ndarray] | None = None  # paired data: the degraded input

    @property
    def paired(self) -> bool:
        return self.load_input is not None


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


def pair_folders(spec: Any) -> tuple[str, str] | None:
    """``(inputs, targets)`` of a paired entry (a mapping or an object with those two
    fields); ``None`` for a folder or ``skimage:`` string."""
    if spec is None or isinstance(spec, str):
        return None
    if isinstance(spec, Mapping):
        return str(spec["inputs"]), str(spec["targets"])
    return str(spec.inputs), str(spec.targets)


def describe(spec: Any) -> str:
    """A data entry as a message names it."""
    pair = pair_folders(spec)
    return str(spec) if pair is None else f"inputs {pair[0]} / targets {pair[1]}"


def list_sources(spec: Any, key: str, scale: int = 1) -> list[Source]:
    """The images of a ``data.train`` / ``data.val`` entry: a folder, ``skimage:a,b``, or
    paired folders ``{inputs, targets}`` (``scale``: the task's, which a target must be
    of its input's size)."""
    pair = pair_folders(spec)
    if pair is not None:
        return list_pairs(pair[0], pair[1], key, scale)
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

    files = _image_files(
        Path(spec),
        f"data.{key}",
        "give a folder of HR images (scripts/fetch_photos.sh makes data/photos/train and "
        "data/photos/val)",
        "put HR photos there",
    )
    return [Source(path.name, _stamp(path), _file_loader(path)) for path in files]


def list_pairs(inputs: str, targets: str, key: str, scale: int = 1) -> list[Source]:
    """The pairs of two folders, matched by file name without the extension, in the
    targets' order; an :class:`InputError` lists every file without a partner and every
    pair whose target is not its input's size x ``scale``."""
    where = f"data.{key}"
    hint = "give a folder of {} (docs/tasks/paired.md)"
    by_stem = {
        side: _by_stem(
            _image_files(Path(folder), f"{where}.{side}", hint.format(side), f"put {side} there"),
            f"{where}.{side}",
        )
        for side, folder in (("inputs", inputs), ("targets", targets))
    }
    ins, outs = by_stem["inputs"], by_stem["targets"]
    _check_matched(ins, outs, where, inputs, targets)
    _check_sizes([(ins[stem], outs[stem]) for stem in outs], where, scale)
    return [
        Source(
            outs[stem].name,
            f"pair:{_stamp(outs[stem])}/{_stamp(ins[stem])}",
            _file_loader(outs[stem]),
            _file_loader(ins[stem]),
        )
        for stem in outs
    ]


def _image_files(folder: Path, where: str, missing_hint: str, empty_hint: str) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{where}: folder {folder} does not exist; {missing_hint}")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ConfigError(
            f"{where}: folder {folder} holds no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); {empty_hint}"
        )
    return files


def _by_stem(files: list[Path], where: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        if path.stem in out:
            raise InputError(
                f"{where}: {out[path.stem].name} and {path.name} share the name "
                f"{path.stem!r}; pairs are matched by file name without the extension, so "
                "keep one of them"
            )
        out[path.stem] = path
    return out


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _check_matched(ins: dict, outs: dict, where: str, inputs: str, targets: str) -> None:
    lonely_in = [ins[s].name for s in ins if s not in outs]
    lonely_out = [outs[s].name for s in outs if s not in ins]
    if not (lonely_in or lonely_out):
        return
    parts = []
    if lonely_in:
        parts.append(
            f"{len(lonely_in)} input(s) without a target in {targets}: {_names(lonely_in)}"
        )
    if lonely_out:
        parts.append(
            f"{len(lonely_out)} target(s) without an input in {inputs}: {_names(lonely_out)}"
        )
    raise InputError(
        f"{where}: unmatched files; {'; '.join(parts)}. Inputs and targets are paired by "
        "file name without the extension (rain/001.png with clean/001.jpg): rename or remove "
        "the files without a partner"
    )


def _check_sizes(pairs: list[tuple[Path, Path]], where: str, scale: int) -> None:
    wrong = []
    for x, y in pairs:
        got, base = header_size(y), header_size(x)
        if got is None or base is None:
            continue  # a format PIL cannot size: prepare checks the decoded pixels
        want = (base[0] * scale, base[1] * scale)
        if got != want:
            wrong.append(
                f"{y.name} is {got[0]}x{got[1]}, its input {x.name} {base[0]}x{base[1]} "
                f"(expected {want[0]}x{want[1]})"
            )
    if wrong:
        raise InputError(
            f"{where}: {len(wrong)} pair(s) of the wrong size; a target must be its input's "
            f"size x the task's scale {scale} (height x width): {_names(wrong)}"
        )


def check_pair_size(name: str, target: np.ndarray, given: np.ndarray, scale: int) -> None:
    """The same check on decoded pixels (for files whose header PIL cannot read)."""
    (h, w), (ih, iw) = target.shape[:2], given.shape[:2]
    if (h, w) != (ih * scale, iw * scale):
        raise InputError(
            f"{name}: the target is {h}x{w}, its input {ih}x{iw} (expected "
            f"{ih * scale}x{iw * scale}); a target must be its input's size x the task's "
            f"scale {scale}"
        )


def header_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` as the image is shown (EXIF orientation applied), read from the
    header without decoding; ``None`` when PIL cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = False
            if not (im.format == "PNG" and "exif" not in im.info):  # PNG: would decode
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:
        return None
    return (w, h) if turned else (h, w)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _read_file(path)
