"""Images read and written band by band, for outputs larger than memory.

An LR image is read whole (it is ``scale**2`` times smaller than the output), by the
in-memory reader itself (:func:`~classsr_core.io.images.read_pixels`), unless it is an
uncompressed TIFF that can be read row by row: 8- or 16-bit grey (MINISBLACK or
MINISWHITE), RGB(A), 8-bit palette or 8-bit CMYK, stored upright or mirrored (Orientation
1 to 4). Its rows are read from the file as they are needed and converted as OpenCV
converts them (inverted, looked up in the colour map, CMYK to RGB). A TIFF turned by 90
degrees (Orientation 5 to 8) has its rows in the file's columns: it is read whole.

The output is written as bands arrive, to a temporary name renamed onto the target at the
end (atomic as :func:`~classsr_core.io.images.write_image`): BigTIFF through ``tifffile``
(uncompressed strips) or PNG through a streaming encoder here (zlib over the filtered
rows, one IDAT chunk at a time). Other formats cannot be written without the whole image
in memory: :func:`check_streamable` says so before any work.

Pixels come out exactly as :func:`~classsr_core.io.images.read_image` /
:func:`~classsr_core.io.images.write_image` would give them (same conversions, row by row);
the PNG bytes differ from OpenCV's encoder (filters, compression), the decoded pixels do not.
A write that finds the disk full (``ENOSPC``, or the short write ``tifffile`` reports as
``N requested and M written``) raises :class:`~classsr_core.io.atomic.DiskFullError`,
``disk full while writing PATH (N bytes free ...)``, and leaves no file.
"""

from __future__ import annotations

import errno
import re
import shutil
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classsr_core.errors import InputError
from classsr_core.io.atomic import DiskFullError, atomic_path
from classsr_core.io.images import (
    MAX_PIXELS,
    PALETTE,
    SEPARATED,
    Image,
    TiffInfo,
    convert_samples,
    is_tiff,
    read_pixels,
    tiff_info,
    to_array,
)

STREAM_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")
# numpy's tofile (tifffile writes strips with it) on a short write, which carries no errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space, quota reached


def check_streamable(path: str | Path) -> None:
    """Raise :class:`InputError` when ``path``'s format cannot be written band by band."""
    suffix = Path(path).suffix.lower()
    if suffix not in STREAM_SUFFIXES:
        raise InputError(
            f"{path}: {suffix or 'no suffix'} cannot be written band by band (--stream, or "
            "outputs over --stream-above pixels); write .png or .tif (BigTIFF), or raise "
            "--stream-above to hold the image in memory"
        )


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the file's header, no pixels decoded (as stored; EXIF
    rotation by 90 degrees swaps them, which a pixel count does not see)."""
    path = Path(path)
    if path.suffix.lower() in _TIFF:
        try:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except Exception:  # PIL may still read it
            pass
    from PIL import Image as PILImage

    # A size, not a decode: PIL's bomb limit is lifted for this call only (restored after,
    # so every other reader keeps it); --max-pixels decides when the pixels are read.
    limit, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
    try:
        with PILImage.open(path) as im:
            w, h = im.size
    finally:
        PILImage.MAX_IMAGE_PIXELS = limit
    return int(h), int(w)


@dataclass
class LRSource:
    """An LR image whose RGB rows are handed out as ``read_image`` would give them.

    ``raw`` holds the integer pixels :func:`~classsr_core.io.images.read_pixels` gives (HW
    or HWC, OpenCV's BGR(A) order), or ``_rows`` reads those rows from an uncompressed TIFF
    (:class:`_TiffRows`)."""

    path: Path
    height: int
    width: int
    grey: bool
    max_value: int
    has_alpha: bool
    _raw: np.ndarray | None = None
    _rows: _TiffRows | None = None

    def raw_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of ``read_pixels(path)``."""
        if self._raw is not None:
            return self._raw[y0:y1]
        return self._rows(y0, y1)

    def _float(self, y0: int, y1: int) -> np.ndarray:
        # read_image's conversion, on these rows only
        raw = self.raw_rows(y0, y1)
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[:, :, 0]
        return raw.astype(np.float32) / self.max_value

    def rgb(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as float32 HWC RGB in [0, 1] (``read_image(...).rgb``)."""
        img = self._float(y0, y1)
        if self.grey:
            rgb = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
        else:
            rgb = img[:, :, 2::-1] if img.shape[2] == 4 else img[:, :, ::-1]
        return np.ascontiguousarray(rgb)

    def alpha(self, y0: int, y1: int) -> np.ndarray | None:
        if not self.has_alpha:
            return None
        return np.ascontiguousarray(self._float(y0, y1)[:, :, 3])


def open_lr(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> LRSource:
    """The LR image at ``path`` for band-by-band use: an uncompressed TIFF of a kind
    :class:`_TiffRows` reads is read by rows from the file, anything else decoded whole by
    :func:`~classsr_core.io.images.read_pixels` (integer pixels, not float). Either way the
    pixels are ``read_image``'s."""
    from classsr_core.io.images import _check_tiff, _read_header

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if is_tiff(head):
        info = tiff_info(path)
        if info is not None:
            _read_header(path, max_pixels)  # the refusals of read_pixels, in its order
            _check_tiff(path, info, max_pixels)
            rows = _TiffRows.open(path, info)
            if rows is not None:
                return LRSource(
                    path, rows.height, rows.width, rows.channels == 1, rows.max_value,
                    rows.channels == 4, _rows=rows,
                )  # fmt: skip
    img = read_pixels(path, max_pixels)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        raise InputError(f"{path}: {channels} channels; expected grey, RGB or RGBA")
    max_value = 255 if img.dtype == np.uint8 else 65535
    h, w = img.shape[:2]
    return LRSource(path, h, w, channels == 1, max_value, channels == 4, _raw=img)


class _TiffRows:
    """Rows of an uncompressed TIFF stored in strips, one contiguous block, read from the
    file as they are asked for, converted by :func:`~classsr_core.io.images.convert_samples`
    to what :func:`~classsr_core.io.images.read_pixels` gives for them (BGR(A) order,
    MINISWHITE inverted, palette looked up, CMYK to RGB) and turned by Orientation 1 to 4
    (mirrors: the rows stay rows). :meth:`open` returns ``None`` for anything else, which is
    then read whole."""

    def __init__(self, path: Path, info: TiffInfo):
        self.path = path
        self.info = info
        self.height, self.width = info.height, info.width
        self.dtype = info.dtype
        self.row_bytes = info.width * info.samples * info.dtype.itemsize
        self.max_value = 255 if info.dtype.itemsize == 1 else 65535
        o = info.orientation
        self.flip_rows, self.flip_cols = o in (3, 4), o in (2, 3)
        self.channels = 3 if info.photometric in (PALETTE, SEPARATED) else info.samples

    @classmethod
    def open(cls, path: Path, info: TiffInfo) -> _TiffRows | None:
        readable = (
            info.convertible()
            and info.compression == 1
            and not info.tiled
            and info.offset is not None
            and (info.samples == 1 or info.planar == 1)
            and 1 <= info.orientation <= 4
        )
        return cls(path, info) if readable else None

    def __call__(self, y0: int, y1: int) -> np.ndarray:
        n, samples = y1 - y0, self.info.samples
        s0 = self.height - y1 if self.flip_rows else y0  # the rows as stored
        with open(self.path, "rb") as f:
            f.seek(self.info.offset + s0 * self.row_bytes)
            data = np.fromfile(f, dtype=self.dtype, count=n * self.width * samples)
        if data.size != n * self.width * samples:
            raise InputError(f"{self.path}: the file ends before row {y1} of {self.height}")
        raw = data.reshape(n, self.width, samples).astype(self.dtype.newbyteorder("="))
        if self.flip_rows:
            raw = raw[::-1]
        if self.flip_cols:
            raw = raw[:, ::-1]
        return convert_samples(raw, self.info)


class BandWriter:
    """Write an image of ``height x width`` by bands of rows, atomically (see module doc).

    Use as a context manager; :meth:`write` takes :class:`Image` bands (or integer arrays
    as :func:`to_array` makes them) from top to bottom."""

    def __init__(self, path: str | Path, height: int, width: int, channels: int, max_value: int):
        check_streamable(path)
        self.path = Path(path)
        self.height, self.width, self.channels = height, width, channels
        self.dtype = np.uint8 if max_value == 255 else np.uint16
        self.rows = 0
        self._atomic = None
        self._sink = None

    def _disk_full(self, exc: BaseException) -> BaseException:
        """``exc``, or a :class:`DiskFullError` that names the file and the free space when
        ``exc`` says the disk (or the quota) is full: ``ENOSPC``, or the short write that
        numpy's ``tofile`` (under ``tifffile``) reports as ``N requested and M written``."""
        if not isinstance(exc, OSError) or "bytes free" in str(exc):
            return exc
        if exc.errno not in _FULL and _SHORT_WRITE.search(str(exc)) is None:
            return exc
        try:
            free = f"{shutil.disk_usage(self.path.parent).free:,} bytes free there"
        except OSError:
            free = "free space unknown"
        size = self.height * self.width * self.channels * np.dtype(self.dtype).itemsize
        return DiskFullError(
            errno.ENOSPC,
            f"disk full while writing {self.path} ({free}; the image is {size:,} bytes "
            "uncompressed): free space or write it elsewhere",
        )

    def __enter__(self) -> BandWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        if self.path.suffix.lower() in _TIFF:
            self._sink = _TiffSink(tmp, self)
        else:
            self._sink = _PngSink(tmp, self)
        return self

    def write(self, band: Image | np.ndarray) -> None:
        arr = to_array(band) if isinstance(band, Image) else band
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[1:] != (self.width, self.channels) or arr.dtype != self.dtype:
            raise InputError(
                f"{self.path}: band of shape {arr.shape} {arr.dtype} does not fit an image of "
                f"{self.width} columns, {self.channels} channels, {np.dtype(self.dtype)}"
            )
        if self.rows + arr.shape[0] > self.height:
            raise InputError(f"{self.path}: more rows written than the image's {self.height}")
        try:
            self._sink.write(np.ascontiguousarray(arr))
        except OSError as exc:
            full = self._disk_full(exc)
            if full is exc:
                raise
            raise full from exc
        self.rows += arr.shape[0]

    def __exit__(self, kind, exc, tb) -> bool:
        error = exc
        try:
            self._sink.close(ok=kind is None)
            if kind is None and self.rows != self.height:
                raise InputError(f"{self.path}: {self.rows} of {self.height} rows written")
        except BaseException as err:
            if error is None:
                error = self._disk_full(err)
                if error is not err:
                    error.__cause__ = err
        if error is None:
            self._atomic.__exit__(None, None, None)
            return False
        self._atomic.__exit__(type(error), error, error.__traceback__)  # removes the temporary
        if exc is None:
            raise error
        return False


class _PngSink:
    """A PNG encoder fed row bands: filter "Up" per row, one zlib stream, IDAT chunks."""

    CHUNK = 1 << 20

    def __init__(self, tmp: Path, w: BandWriter, level: int = 6):
        self.f = open(tmp, "wb")  # noqa: SIM115 - closed in close()
        colour = {1: 0, 2: 4, 3: 2, 4: 6}[w.channels]
        depth = 8 if w.dtype == np.uint8 else 16
        self.f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", w.width, w.height, depth, colour, 0, 0, 0))
        self.z = zlib.compressobj(level)
        self.prev = np.zeros(w.width * w.channels * (depth // 8), dtype=np.uint8)
        self.pending: list[bytes] = []
        self.size = 0

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.f.write(struct.pack(">I", len(data)) + kind + data)
        self.f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def write(self, arr: np.ndarray) -> None:
        if arr.dtype != np.uint8:
            arr = arr.astype(">u2")
        rows = arr.reshape(arr.shape[0], -1).view(np.uint8)
        up = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        up[:, 0] = 2  # filter type Up: each byte minus the byte above it, modulo 256
        up[0, 1:] = rows[0] - self.prev
        up[1:, 1:] = rows[1:] - rows[:-1]
        self.prev = rows[-1].copy()
        self._emit(self.z.compress(up.tobytes()))

    def _emit(self, data: bytes) -> None:
        if data:
            self.pending.append(data)
            self.size += len(data)
        if self.size >= self.CHUNK:
            self._chunk(b"IDAT", b"".join(self.pending))
            self.pending, self.size = [], 0

    def close(self, ok: bool) -> None:
        try:
            if ok:
                self._emit(self.z.flush())
                if self.pending:
                    self._chunk(b"IDAT", b"".join(self.pending))
                self._chunk(b"IEND", b"")
        finally:
            self.f.close()


class _TiffSink:
    """BigTIFF through tifffile, which pulls strips from a generator fed by :meth:`write`:
    the writer runs in a thread so that bands are pushed, not pulled."""

    def __init__(self, tmp: Path, w: BandWriter):
        import queue
        import threading

        import tifffile

        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        rows_per_strip = 64
        shape = (w.height, w.width) if w.channels == 1 else (w.height, w.width, w.channels)
        photometric = "minisblack" if w.channels in (1, 2) else "rgb"
        extra = {"extrasamples": ("unassalpha",)} if w.channels in (2, 4) else {}

        ended = False  # the producer's end (None) taken from the queue

        def strips() -> Iterator[np.ndarray]:
            nonlocal ended
            buf = None
            while True:
                band = self.queue.get()
                if band is None:
                    ended = True
                    break
                buf = band if buf is None else np.concatenate([buf, band])
                while buf.shape[0] >= rows_per_strip:
                    yield buf[:rows_per_strip].reshape(-1, *shape[1:])
                    buf = buf[rows_per_strip:]
            if buf is not None and buf.shape[0]:
                yield buf.reshape(-1, *shape[1:])

        def run() -> None:
            try:
                with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
                    tw.write(
                        strips(),
                        shape=shape,
                        dtype=w.dtype,
                        photometric=photometric,
                        rowsperstrip=rows_per_strip,
                        **extra,
                    )
            except BaseException as exc:  # reported by write / close
                self.error = exc
                # Unblock the producer, up to its end; a producer that stopped early (an
                # error upstream: too few rows, which tifffile refuses) has sent it already.
                while not ended and self.queue.get() is not None:
                    pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def write(self, arr: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(arr)

    def close(self, ok: bool) -> None:
        self.queue.put(None)
        self.thread.join()
        if ok and self.error is not None:
            raise self.error


def write_bands(
    path: str | Path, bands: Iterable[Image], height: int, width: int, channels: int, maxv: int
) -> None:
    """Write ``bands`` (top to bottom) to ``path`` band by band, atomically."""
    with BandWriter(path, height, width, channels, maxv) as writer:
        for band in bands:
            writer.write(band)
            # Not held while the next band is computed: a band may be a view of a whole
            # canvas (engine.bands.stream_bands), which would then stay in memory too.
            del band
