"""PSNR against FLOPs over a range of budgets: the trade-off curve of one trained model.

For every clean image in a folder, the model's task makes the degraded input; the model
then runs with argmax routing and at each budget, and the optional -O model once. Rows
are averaged over the images and written as CSV and as a PNG plot (drawn with Pillow, no
plotting library needed).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classsr_core.base.defaults import default_mode
from classsr_core.io.atomic import atomic_path
from classsr_core.tasks import degraded_pairs


@dataclass
class SweepRow:
    label: str  # "budget", "tolerance", "argmax" / "price" (the router's own), "-O"
    budget: float | None  # the budget or the tolerance (dB) of the row
    flops_fraction: float  # mean over images (true multiply-adds, classifier included)
    psnr: float  # mean over images


def run_sweep(
    model,
    images: list[np.ndarray],
    task,
    budgets,
    o_model=None,
    mode: str | None = None,
    router: str | None = None,
    tolerances=(),
) -> list[SweepRow]:
    """``images``: clean HWC float32 arrays in [0, 1]. ``mode``: the engine's (default: the
    model's own; the -O model runs in the same mode; in "regions" fractions are of the
    widest branch on the whole image, for -O too).
    ``router``: a registered router (default: the model's own, as ``infer`` picks it); the
    -O model has none."""
    kw = {"o_model": o_model, "router": router, "tolerances": tolerances}
    per_image = measure_images(model, images, task, budgets, mode=mode, **kw)
    return sweep_rows(model, budgets, [per_image[i] for i in range(len(images))], **kw)


def _settings(model, budgets, o_model, router, tolerances) -> list[tuple[str, float | None]]:
    """``(label, budget or tolerance)`` of every row, in the rows' order."""
    # No budget: the router's own routing, labelled by what the router is: one that keeps
    # calibrated state (an edge table) routes at its calibrated price, one without (the
    # classifier, a fixed-threshold plugin) by the argmax of its scores.
    own = "price" if _router(model, router).state_type is not None else "argmax"
    rows = [(own, None)]
    rows += [("budget", float(b)) for b in budgets]
    rows += [("tolerance", float(t)) for t in tolerances]
    return rows + ([("-O", None)] if o_model is not None else [])


def _router(model, name: str | None):
    """The registered router ``name`` (``None``: the model's default), as the engine picks
    it: asked, not assumed by name."""
    from classsr_core.engine.pipeline import get_router

    return get_router(model, name)


def measure_images(
    model,
    images: list[np.ndarray],
    task,
    budgets,
    o_model=None,
    mode: str | None = None,
    router: str | None = None,
    tolerances=(),
    indices=None,
    done=None,
) -> dict[int, list[tuple[float, float]]]:
    """``(flops_fraction, psnr)`` of every row of the sweep, per image, for the images at
    ``indices`` (default: all). Every image is degraded (the task's random stream runs
    through the whole list, in order), so that a share measures what the whole does.
    ``done``: called after each image (a progress bar's tick)."""
    # Rounded to 8-bit levels, as a degraded image read from disk is and as `classsr
    # calibrate` measures the edge tables: unrounded inputs carry detail no file holds.
    pairs = degraded_pairs(task, images, uint8=True)
    mode = default_mode(model, mode)  # the -O model runs the same executor
    device = next(model.parameters()).device
    settings = _settings(model, budgets, o_model, router, tolerances)
    out = {}
    for i in range(len(pairs)) if indices is None else indices:
        clean, x = pairs[i]
        x = x.to(device)
        values = []
        for label, value in settings:
            if label == "-O":
                res = o_model.infer(x.to(next(o_model.parameters()).device), mode=mode)
            else:
                budget = value if label == "budget" else None
                tolerance = value if label == "tolerance" else None
                res = model.infer(x, budget=budget, mode=mode, router=router, tolerance=tolerance)
            sr = res.output[0].permute(1, 2, 0).cpu().numpy()
            values.append((float(res.flops_fraction), float(task.score(sr, clean)["psnr"])))
        out[i] = values
        if done is not None:
            done()
    return out


def sweep_rows(
    model,
    budgets,
    per_image: list[list[tuple[float, float]]],
    o_model=None,
    router: str | None = None,
    tolerances=(),
) -> list[SweepRow]:
    """The rows: each setting's fraction and PSNR averaged over ``per_image`` (in its order,
    so that the same values give the same means however they were computed)."""
    rows = []
    for k, (label, value) in enumerate(_settings(model, budgets, o_model, router, tolerances)):
        fracs = [v[k][0] for v in per_image]
        psnrs = [v[k][1] for v in per_image]
        rows.append(SweepRow(label, value, float(np.mean(fracs)), float(np.mean(psnrs))))
    return rows


def write_csv(rows: list[SweepRow], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "budget", "flops_fraction", "psnr"])
        for r in rows:
            w.writerow(
                [
                    r.label,
                    "" if r.budget is None else f"{r.budget:.4f}",
                    f"{r.flops_fraction:.4f}",
                    f"{r.psnr:.4f}",
                ]
            )


def _words(draw, font):
    """``text(xy, s, fill)`` that draws ``s`` word by word a space's width apart: Pillow's
    built-in font draws a space a hair wide ("-Onetwork" for "-O network")."""
    gap = max(4.0, font.size * 0.33) if hasattr(font, "size") else 4.0

    def text(xy, s: str, fill) -> None:
        x, y = xy
        for word in s.split(" "):
            if word:
                draw.text((x, y), word, fill=fill, font=font)
                x += draw.textlength(word, font=font)
            x += gap

    return text


def plot(rows: list[SweepRow], path: str | Path, title: str = "") -> None:
    """PSNR (y) against FLOPs fraction (x): the budget curve, argmax and -O marked."""
    from PIL import Image, ImageDraw, ImageFont

    w, h, m = 640, 420, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    write = _words(d, ImageFont.load_default(size=12))
    xs = [r.flops_fraction for r in rows]
    ys = [r.psnr for r in rows]
    x0, x1 = min(xs) - 0.02, max(xs) + 0.02
    y0, y1 = min(ys) - 0.05, max(ys) + 0.05

    def px(x, y):
        return (m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m))

    d.rectangle([m, m, w - m, h - m], outline="black")
    for k in range(5):  # ticks
        xv = x0 + k * (x1 - x0) / 4
        yv = y0 + k * (y1 - y0) / 4
        write((px(xv, y0)[0] - 12, h - m + 6), f"{xv:.2f}", "black")
        write((6, px(x0, yv)[1] - 6), f"{yv:.2f}", "black")
    write((w / 2 - 110, h - 22), "FLOPs fraction of the widest branch", "black")
    write((6, 10), f"PSNR (dB)   {title}", "black")
    curve = sorted((r for r in rows if r.label == "budget"), key=lambda r: r.flops_fraction)
    if len(curve) > 1:
        d.line([px(r.flops_fraction, r.psnr) for r in curve], fill=(40, 90, 200), width=2)
    for r in curve:
        cx, cy = px(r.flops_fraction, r.psnr)
        d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(40, 90, 200))
    marks = {
        "argmax": ((220, 60, 40), "argmax"),
        "price": ((220, 60, 40), "edge table's price"),
        "-O": ((30, 150, 60), "-O network"),
    }
    for r in rows:
        if r.label in marks:
            colour, name = marks[r.label]
            cx, cy = px(r.flops_fraction, r.psnr)
            d.rectangle([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour)
            write((cx + 8, cy - 7), name, colour)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
