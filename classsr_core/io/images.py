"""Reading and writing images: PNG/JPEG/TIFF, 8- or 16-bit, grey, RGB or RGBA.

Models see RGB float in [0, 1]. Grey images are replicated to RGB and averaged back;
an alpha channel is not sent through the network: it is resized with bicubic
interpolation (scale > 1) or kept as it is (scale 1), then re-attached. Outputs keep the
input's bit depth and channel layout. Every write is atomic (temporary name, then rename).
Reading applies the EXIF orientation (pixels come out as viewers show them) and refuses,
from the header and before decoding, an image over a pixel limit (``MAX_PIXELS``).

TIFF is decoded by OpenCV too, which turns the image by its Orientation tag itself (unlike
its PNG, JPEG and WebP readers under ``IMREAD_UNCHANGED``): the tag is applied once, not
twice. Its colour types come out as a viewer shows them: MINISWHITE inverted (OpenCV
inverts 8-bit only; 16-bit is inverted here), palette through its colour map, CMYK
(``separated``) as RGB without the opaque alpha channel OpenCV adds. What OpenCV does is
checked once on tiny images (:func:`_opencv_tiff`), not assumed from its version.

Where OpenCV's pixels would be wrong (:func:`opencv_misreads`), the TIFF is decoded by
``tifffile`` and converted here (:func:`convert_samples`, the conversions OpenCV makes):
an 8-bit RGBA with unassociated alpha (OpenCV, through libtiff's RGBA interface,
multiplies its colours by the alpha: dark fringes wherever it is not 255, and no exact way
back), and an 8-bit tiled TIFF turned by a mirroring orientation (2, 3, 6, 7: OpenCV 5.1
mirrors each tile on its own). Associated (premultiplied) alpha is read as stored, as
before.
"""

from __future__ import annotations

import functools
import io
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


# TIFF Photometric values (tag 262)
MINISWHITE, MINISBLACK, RGB, PALETTE, SEPARATED = 0, 1, 2, 3, 5
_PHOTOMETRIC = {0: "MINISWHITE", 1: "MINISBLACK", 2: "RGB", 3: "palette", 4: "mask",
                5: "CMYK (separated)", 6: "YCbCr", 8: "CIELab"}  # fmt: skip
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class TiffInfo:
    """The tags of a TIFF's first page that decide how its pixels are read (no pixels)."""

    height: int
    width: int
    photometric: int
    samples: int  # samples per pixel, extra samples included
    extra: tuple[int, ...]  # ExtraSamples: 0 unspecified, 1 associated, 2 unassociated alpha
    bits: int
    sampleformat: int  # 1: unsigned integer
    planar: int  # 1: chunky (contiguous), 2: planar
    compression: int  # 1: none
    tiled: bool
    orientation: int  # tag 274, 1..8
    inkset: int  # tag 332 (separated): 1 CMYK
    dtype: np.dtype | None  # numpy dtype in the file's byte order
    offset: int | None  # where the pixels start, when they are one contiguous block
    colormap: np.ndarray | None  # palette: (3, 2**bits) uint16

    def describe(self) -> str:
        kind = _PHOTOMETRIC.get(self.photometric, f"photometric {self.photometric}")
        return f"{self.bits}-bit {kind}, {self.samples} samples per pixel"

    def convertible(self) -> bool:
        """Whether :func:`convert_samples` turns its stored samples into OpenCV's pixels:
        8/16-bit grey or RGB(A), 8-bit palette of 256 colours, 8-bit CMYK."""
        kind = self.photometric, self.samples, self.bits
        return (
            self.dtype is not None
            and self.dtype.kind == "u"
            and self.sampleformat == 1
            and (
                (self.photometric in (MINISBLACK, MINISWHITE) and kind[1:] in ((1, 8), (1, 16)))
                or (self.photometric == RGB and self.samples in (3, 4) and self.bits in (8, 16))
                or (
                    kind == (PALETTE, 1, 8)
                    and self.colormap is not None
                    and self.colormap.shape == (3, 256)
                )
                or (kind == (SEPARATED, 4, 8) and not self.extra and self.inkset == 1)
            )
        )


def is_tiff(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a TIFF (or BigTIFF), whatever its suffix:
    OpenCV picks its decoder by these bytes too."""
    return bytes(head[:4]) in _TIFF_MAGIC


def tiff_info(path: str | Path) -> TiffInfo | None:
    """The first page's :class:`TiffInfo`, or ``None`` when ``tifffile`` cannot parse it."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            tags = page.tags
            orientation = int(tags[274].value) if 274 in tags else 1
            inkset = int(tags[332].value) if 332 in tags else 1
            contiguous = page.is_contiguous  # a bool, or (offset, bytes) in older tifffile
            if isinstance(contiguous, tuple):
                offset = int(contiguous[0])
            elif contiguous and page.dataoffsets:
                offset = int(page.dataoffsets[0])
            else:
                offset = None
            try:
                dtype = np.dtype(page.dtype).newbyteorder(tf.byteorder)
            except TypeError:  # no numpy type for these samples (1-bit, 12-bit, ...)
                dtype = None
            colormap = None if page.colormap is None else np.asarray(page.colormap)
            return TiffInfo(
                height=int(page.imagelength),
                width=int(page.imagewidth),
                photometric=int(page.photometric),
                samples=int(page.samplesperpixel),
                extra=tuple(int(e) for e in page.extrasamples or ()),
                bits=int(page.bitspersample),
                sampleformat=int(page.sampleformat),
                planar=int(page.planarconfig),
                compression=int(page.compression),
                tiled=bool(page.is_tiled),
                orientation=orientation if 1 <= orientation <= 8 else 1,
                inkset=inkset,
                dtype=dtype,
                offset=offset,
                colormap=colormap,
            )
    except Exception:
        return None


def convert_samples(raw: np.ndarray, tiff: TiffInfo) -> np.ndarray:
    """Stored samples ``(rows, cols, samples)`` (native byte order) of a TIFF whose
    :meth:`TiffInfo.convertible` holds, as OpenCV gives them: HW grey or HWC BGR(A), in the
    colours a viewer shows (libtiff's conversions, which OpenCV uses for 8 bits)."""
    if tiff.photometric == PALETTE:  # as libtiff: a colour map over 255 is cut to 8 bits
        cmap = tiff.colormap.astype(np.uint16)
        cmap = cmap >> 8 if int(cmap.max()) >= 256 else cmap
        return cmap[::-1].T.astype(np.uint8)[raw[:, :, 0]]  # index -> B, G, R
    if tiff.photometric == SEPARATED:  # libtiff: (255 - ink) * (255 - K) // 255
        ink = 255 - raw.astype(np.uint16)
        return (ink[:, :, 2::-1] * ink[:, :, 3:] // 255).astype(np.uint8)  # Y M C: B G R
    if tiff.photometric == MINISWHITE:
        return np.iinfo(raw.dtype).max - raw[:, :, 0]
    if raw.shape[2] == 1:
        return np.ascontiguousarray(raw[:, :, 0])
    return np.ascontiguousarray(raw[:, :, [2, 1, 0, 3][: raw.shape[2]]])


def _read_tifffile(path: Path, tiff: TiffInfo, why: str) -> np.ndarray:
    """The first page decoded by ``tifffile`` (exact; it turns nothing) and converted by
    :func:`convert_samples`, where OpenCV would give wrong pixels (``why``). Without the
    ``imagecodecs`` package ``tifffile`` decodes no LZW or JPEG: such a file is refused."""
    import tifffile

    fix = "save it uncompressed, with deflate, or as PNG"
    if not tiff.convertible():
        raise InputError(f"{path}: a TIFF of {tiff.describe()}: {why}; {fix}")
    try:
        with tifffile.TiffFile(path) as tf:
            raw = tf.pages[0].asarray()
    except Exception as exc:
        if "imagecodecs" not in str(exc):
            raise InputError(f"{path}: cannot decode ({exc})") from None
        raise InputError(
            f"{path}: a TIFF of {tiff.describe()}, compression {tiff.compression}: {why}, and "
            "tifffile needs the imagecodecs package for this compression; install it (pip "
            f"install imagecodecs), or {fix}"
        ) from None
    if tiff.planar == 2 and raw.ndim == 3 and raw.shape[0] == tiff.samples:
        raw = np.moveaxis(raw, 0, 2)
    raw = raw.reshape(tiff.height, tiff.width, tiff.samples)
    return convert_samples(raw.astype(raw.dtype.newbyteorder("=")), tiff)


@functools.cache
def _opencv_tiff(photometric: int, bits: int, orientation: int, tiled: bool = False) -> str:
    """What OpenCV's TIFF reader does with a tiny image of this kind: ``"upright"`` (it
    applied the Orientation tag), ``"stored"`` (it did not), ``"inverted"`` (MINISWHITE:
    it inverted the values, which it does for 8 bits and not for 16), or ``"other"`` (it
    scrambles it: OpenCV 5.1 mirrors each tile of an 8-bit tiled TIFF on its own). Checked
    once per kind (milliseconds), so that a change in OpenCV cannot make the tag applied
    twice, or a MINISWHITE image inverted twice."""
    import cv2
    import tifffile

    dtype = np.uint8 if bits == 8 else np.uint16
    stored = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (32, 48), dtype=dtype)
    buf = io.BytesIO()
    layout = {"tile": (16, 16), "compression": "zlib"} if tiled else {"rowsperstrip": 8}
    photo = "miniswhite" if photometric == MINISWHITE else "minisblack"
    tags = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(buf, stored, photometric=photo, extratags=tags, **layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    want = apply_orientation(stored, orientation)
    if out is None or out.dtype != dtype:
        return "other"
    inverted = np.iinfo(dtype).max - stored
    if photometric == MINISWHITE and out.shape == stored.shape and np.array_equal(out, inverted):
        return "inverted"
    if out.shape == want.shape and np.array_equal(out, want):
        return "upright"
    if out.shape == stored.shape and np.array_equal(out, stored):
        return "stored"
    return "other"


def _check_tiff(path: Path, tiff: TiffInfo, max_pixels: int | None) -> None:
    """Refuse, before decoding, what OpenCV would read wrong or not at all."""
    if max_pixels and tiff.height * tiff.width > max_pixels:
        raise InputError(
            f"{path}: its header claims {tiff.width}x{tiff.height} = "
            f"{tiff.height * tiff.width:,} pixels, over the limit of {max_pixels:,}; raise it "
            "with --max-pixels (max_pixels=) if the file is genuine"
        )
    if tiff.photometric == SEPARATED and (
        tiff.bits != 8 or tiff.samples != 4 or tiff.extra or tiff.inkset != 1
    ):
        inks = ", inks other than CMYK" if tiff.inkset != 1 else ""
        raise InputError(
            f"{path}: a TIFF of {tiff.describe()}{inks}; of CMYK (separated) TIFFs only 8-bit "
            "CMYK without alpha is read (the decoder would drop the alpha or fail): convert it "
            "to RGB first"
        )


def opencv_misreads(tiff: TiffInfo) -> str | None:
    """Why OpenCV's reader would give wrong pixels for this TIFF, or ``None``: an 8-bit RGBA
    with unassociated alpha (libtiff's RGBA interface multiplies the colours by the alpha:
    dark fringes wherever it is not 255, and no exact way back), or an orientation that
    this OpenCV scrambles (:func:`_opencv_tiff`)."""
    if tiff.photometric == RGB and tiff.samples == 4 and tiff.bits == 8 and tiff.extra == (2,):
        return "OpenCV would multiply its colours by its (unassociated) alpha"
    if tiff.orientation != 1:
        bits = 16 if tiff.bits == 16 else 8
        done = _opencv_tiff(MINISBLACK, bits, tiff.orientation, tiff.tiled)
        if done not in ("upright", "stored"):
            layout = "tiled" if tiff.tiled else "in strips"
            return f"OpenCV turns Orientation {tiff.orientation} wrongly ({layout})"
    return None


def read_pixels(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """The integer pixels :func:`read_image` converts: uint8 or uint16, HW (grey) or HWC in
    OpenCV's BGR(A) order, turned upright (the orientation applied once) and in the colours
    a viewer shows (see the module docstring)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    orientation = _read_header(path, max_pixels)
    magic = is_tiff(data[:4].tobytes())
    tiff = tiff_info(path) if magic else None
    invert = False
    if tiff is not None:
        _check_tiff(path, tiff, max_pixels)
        why = opencv_misreads(tiff)
        if why is not None:
            del data
            return apply_orientation(_read_tifffile(path, tiff, why), tiff.orientation)
        orientation = tiff.orientation
        if tiff.photometric == MINISWHITE and tiff.samples == 1 and tiff.bits in (8, 16):
            invert = _opencv_tiff(MINISWHITE, tiff.bits, 1) != "inverted"
    if magic and orientation != 1:
        bits = 16 if tiff is not None and tiff.bits == 16 else 8
        tiled = tiff is not None and tiff.tiled
        done = _opencv_tiff(MINISBLACK, bits, orientation, tiled)
        if done == "upright":
            orientation = 1  # OpenCV's TIFF reader turned it already
        elif done != "stored":  # a TIFF tifffile cannot parse: nothing else reads it
            raise InputError(
                f"{path}: TIFF Orientation {orientation}: this OpenCV ({cv2.__version__}) "
                "turns it wrongly; save the image upright (Orientation 1)"
            )
    try:
        # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores EXIF: orientation is applied
        # below (TIFF's Orientation tag is another matter: see the module docstring).
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise InputError(f"{path}: cannot decode ({reason})") from None
    del data
    if img is None:
        if tiff is not None:
            raise InputError(
                f"{path}: a TIFF the decoder cannot read ({tiff.describe()}, compression "
                f"{tiff.compression}); save it as 8- or 16-bit grey or RGB(A)"
            )
        raise InputError(f"{path}: not a readable image (PNG, JPEG, TIFF, BMP or WebP)")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported pixel type {img.dtype}; use 8- or 16-bit images")
    img = apply_orientation(img, orientation)
    if invert and img.ndim == 2:
        img = np.iinfo(img.dtype).max - img
    if tiff is not None and tiff.photometric == SEPARATED and img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]  # OpenCV's opaque alpha: a CMYK file has none (_check_tiff)
    return img


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Image:
    """Decode an image file, turned as its EXIF orientation says (as viewers show it).

    ``max_pixels``: refuse a file whose header claims more pixels, before decoding it
    (``None`` or 0: no limit). Every decoding problem is an :class:`InputError`.
    """
    img = read_pixels(path, max_pixels)
    max_value = 255 if img.dtype == np.uint8 else 65535
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


def write_image(path: str | Path, img: Image | np.ndarray, quality: int | None = None) -> None:
    """Write atomically; the format follows the suffix (8-bit only for JPEG and WebP, and
    no alpha in a JPEG). ``quality``: JPEG / WebP quality 1..100 (default 95).

    The image is encoded in memory by ``path``'s suffix, then written to a temporary file
    beside ``path`` (ending in ``.tmp``, so no folder listing takes it for an image) and
    renamed onto it: a reader sees the old file or the new one, never half of one."""
    import cv2

    path = Path(path)
    arr = to_array(img) if isinstance(img, Image) else img
    if arr.ndim == 3:  # OpenCV wants BGR(A)
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] == 4 else arr[:, :, ::-1]
    suffix = path.suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg", ".webp"):
        if arr.dtype != np.uint8:
            arr = (arr / 257).round().astype(np.uint8)
        if suffix != ".webp" and arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]  # JPEG has no alpha
        flag = cv2.IMWRITE_WEBP_QUALITY if suffix == ".webp" else cv2.IMWRITE_JPEG_QUALITY
        params = [flag, int(quality if quality is not None else 95)]
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(arr), params)
    if not ok:
        raise InputError(f"cannot encode {path.name}: unknown image format {path.suffix!r}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand folders (non-recursive) into their image files, sorted; keep files as given.
    A file named twice (``d/`` and ``d/a.png``) is listed once: it is one job, not two
    writers of one output. Only regular files are images: what else a folder holds (a FIFO,
    a symlink loop) is left out unopened (:func:`classsr_core.io.inputs.list_inputs`, which
    also says so, is what the commands use)."""
    from classsr_core.io.inputs import list_inputs

    return list_inputs(inputs)[0]
