"""Pictures of where the compute went: the class-map overlay and side-by-side strips."""

from __future__ import annotations

import numpy as np

# Cheapest branch green, then yellow, orange, red: as the paper's figure.
PALETTE = np.array(
    [
        [0.20, 0.80, 0.20],
        [0.95, 0.85, 0.10],
        [0.95, 0.50, 0.10],
        [0.90, 0.15, 0.15],
        [0.6, 0.1, 0.6],
    ],
    dtype=np.float32,
)


def class_colours(num_classes: int) -> np.ndarray:
    if num_classes <= 3:
        return PALETTE[[0, 1, 3][:num_classes]]
    return PALETTE[:num_classes]


def class_map_overlay(
    image: np.ndarray,
    class_map: np.ndarray,
    origins: np.ndarray,
    patch: int,
    stride: int,
    num_classes: int,
    strength: float = 0.45,
) -> np.ndarray:
    """Colour each patch's own cell of ``image`` (HWC float, output pixels) by its class.

    ``origins`` are the patches' top-left corners in output pixels (rows*cols, 2) and
    ``patch`` / ``stride`` are in output pixels too. Where patches overlap, each pixel takes
    the class of the patch whose centre is nearest, so the map reads as a clean grid.
    """
    h, w = image.shape[:2]
    colours = class_colours(num_classes)
    flat = class_map.reshape(-1)
    label = np.zeros((h, w), dtype=np.int64)
    best = np.full((h, w), np.inf, dtype=np.float32)
    ys, xs = np.mgrid[0:patch, 0:patch].astype(np.float32)
    dist = np.maximum(np.abs(ys - (patch - 1) / 2), np.abs(xs - (patch - 1) / 2))
    for k, (y, x) in enumerate(origins):
        y1, x1 = min(y + patch, h), min(x + patch, w)
        d = dist[: y1 - y, : x1 - x]
        region = best[y:y1, x:x1]
        closer = d < region
        region[closer] = d[closer]
        label[y:y1, x:x1][closer] = flat[k]
    tint = colours[label]
    out = (1 - strength) * image + strength * tint
    # thin borders between cells of different classes make the grid legible
    edge = np.zeros((h, w), dtype=bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    out[edge] = 0.15
    return np.clip(out, 0, 1).astype(np.float32)


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Concatenate equally tall HWC images left to right with white gaps."""
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        pad = np.ones((h, im.shape[1], 3), dtype=np.float32)
        pad[: im.shape[0]] = im
        parts.append(pad)
        if i < len(images) - 1:
            parts.append(np.ones((h, gap, 3), dtype=np.float32))
    return np.concatenate(parts, axis=1)


def result_overlay(output: np.ndarray, result, num_classes: int) -> np.ndarray:
    """The class-map overlay of an :class:`~classsr_core.engine.InferResult` on its output
    (HWC float): patch positions come from the result, scaled to output pixels."""
    s = result.scale
    return class_map_overlay(
        output,
        result.class_map,
        result.origins * s,
        result.patch_size * s,
        result.stride * s,
        num_classes,
    )


COLOUR_NAMES = ("green", "yellow", "orange", "red", "purple")


def colour_names(num_classes: int) -> list[str]:
    """The names of :func:`class_colours`, branch by branch (cheapest first)."""
    if num_classes <= 3:
        return [COLOUR_NAMES[i] for i in (0, 1, 3)[:num_classes]]
    return list(COLOUR_NAMES[:num_classes])


def most_different(a: np.ndarray, b: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size`` x ``size`` window where HWC images ``a`` and
    ``b`` differ most (mean absolute difference; ties: the first in row-major order)."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=2)
    h, w = diff.shape
    size = min(size, h, w)
    c = np.zeros((h + 1, w + 1))
    c[1:, 1:] = diff.cumsum(0).cumsum(1)
    sums = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def labelled_strip(
    panels: list[tuple[str, np.ndarray]], detail: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Equally sized HWC float images side by side, each under its label; with ``detail``
    ``(y, x, size)`` the window is outlined on every panel and shown enlarged below it
    (nearest neighbour, to the panel's width), where the methods' differences are visible.
    """
    from PIL import Image, ImageDraw, ImageFont

    columns = []
    for label, img in panels:
        img = np.clip(img, 0, 1).astype(np.float32)
        h, w = img.shape[:2]
        font = ImageFont.load_default(size=max(14, w // 28))  # legible at the image's size
        line = max(1, w // 300)
        parts = [img]
        if detail is not None:
            y, x, size = detail
            crop = img[y : y + size, x : x + size]
            zoom = max(1, w // crop.shape[1])
            big = crop.repeat(zoom, axis=0).repeat(zoom, axis=1)
            pad = np.ones((big.shape[0], w, 3), dtype=np.float32)
            pad[:, : big.shape[1]] = big
            marked = img.copy()
            red = np.array([0.9, 0.1, 0.1], dtype=np.float32)
            y1, x1 = min(y + size, h), min(x + size, w)
            marked[y : y + line, x:x1] = marked[y1 - line : y1, x:x1] = red
            marked[y:y1, x : x + line] = marked[y:y1, x1 - line : x1] = red
            parts = [marked, np.ones((4, w, 3), dtype=np.float32), pad]
        bar = Image.new("RGB", (w, int(font.size * 1.5)), "white")
        ImageDraw.Draw(bar).text((6, font.size // 4), label, fill="black", font=font)
        head = np.asarray(bar, dtype=np.float32) / 255.0
        columns.append(np.concatenate([head, *parts], axis=0))
    return side_by_side(columns, gap=6)
