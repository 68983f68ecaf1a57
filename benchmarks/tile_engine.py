"""Tile engine vs the official per-patch loop vs the widest branch on the whole image.

Run by hand (not a test); results go to docs/performance.md:

    .venv/bin/python benchmarks/tile_engine.py [--threads 2] [--reps 3] [--image PATH]
        [--only rcan --lr-size 160 90]

On a real photo downscaled to an LR of 480x270 (a mate-backgrounds photo, see
shared/data.md, or scikit-image's coffee when absent), the routing is fixed to a 61:23:16
mix (smooth patches cheapest, by the patch's standard deviation) and forced with
``classes=``, so every method does the same work. Weights are random: time does not depend
on them. Reported, per backbone:

* official-style loop: each patch alone (batch 1) through the classifier and its branch in
  a Python loop, overlaps averaged (what the official test code does);
* engine: ``model.infer`` (classifier on every patch, grouped, batched, stitched);
* sum alone: each branch's own time on its own, pre-cut patches in the engine's batches,
  nothing else (the floor the engine's overhead is measured against);
* engine, all patches on the widest branch; the widest branch on the whole image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, official_loop  # benchmarks/common.py, shared with speed.py

from classsr_core.analysis.flops import count_flops
from classsr_core.engine import patch_grid
from classsr_core.model.wrapper import ClassWrapper

MIX = (0.61, 0.23, 0.16)  # cheapest, middle, widest (the split the seed reports)
MATE = Path("data/mate/usr/share/backgrounds/mate/nature")
CONFIGS = [("fsrcnn", [16, 36, 56]), ("carn_m", [36, 52, 64]), ("srresnet", [36, 52, 64])]
EXTRA = [("rcan", [36, 50, 64])]  # only with --only rcan: minutes per round on a CPU
SWEEPS = {"fsrcnn": "1,4,16,64", "srresnet": "1,16", "carn_m": "", "rcan": ""}


def load_photo(path: str | None, size=(480, 270)) -> tuple[np.ndarray, str]:
    """A real photo, centre-cropped to 16:9 and downscaled (PIL bicubic, antialiased)."""
    from PIL import Image

    if path is None and (MATE / "LadyBird.jpg").is_file():
        path = str(MATE / "LadyBird.jpg")
    if path is not None:
        img = Image.open(path).convert("RGB")
        name = Path(path).name
    else:
        from skimage import data

        img = Image.fromarray(data.coffee())
        name = "skimage coffee"
    w, h = img.size
    target = size[0] / size[1]
    if w / h > target:
        cw = round(h * target)
        img = img.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = round(w / target)
        img = img.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    return np.asarray(img.resize(size, Image.BICUBIC)), f"{name} ({w}x{h}) -> {size[0]}x{size[1]}"


def fixed_routing(x: torch.Tensor, p: int, s: int) -> np.ndarray:
    """61:23:16 by patch standard deviation: smooth patches to the cheapest branch."""
    grid = patch_grid(x.shape[2], x.shape[3], p, s)
    std = np.array([x[0, :, y : y + p, c : c + p].std().item() for y in grid.ys for c in grid.xs])
    order = np.argsort(std, kind="stable")
    n = len(order)
    bounds = np.cumsum([round(f * n) for f in MIX[:-1]])
    classes = np.empty(n, dtype=np.int64)
    classes[order[: bounds[0]]] = 0
    classes[order[bounds[0] : bounds[1]]] = 1
    classes[order[bounds[1] :]] = 2
    return classes


def sum_alone(model, x, classes, p, s, sizes) -> list[float]:
    """Each branch's compute time on its own pre-cut patches, in the engine's batches."""
    grid = patch_grid(x.shape[2], x.shape[3], p, s)
    cut = torch.stack([x[0, :, y : y + p, c : c + p] for y in grid.ys for c in grid.xs])
    cut = cut.contiguous(memory_format=torch.channels_last)  # the engine's CPU layout
    times = []
    with torch.inference_mode():
        for i, branch in enumerate(model.branches):
            bs = sizes[i]
            group = cut[torch.from_numpy(np.flatnonzero(classes == i))]
            batches = [
                group[j : j + bs].contiguous(memory_format=torch.channels_last)
                for j in range(0, len(group), bs)
            ]
            t0 = time.perf_counter()
            for b in batches:
                branch(b)
            times.append(time.perf_counter() - t0)
    return times


def clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(name, widths, x, reps, p, s, batch_sizes) -> dict:
    """Every method once per round, rounds repeated; the minimum over rounds is reported
    (on a shared machine other processes only ever add time), the median beside it, and
    the engine's ratios to the sum alone and to the official loop per round."""
    torch.manual_seed(0)
    model = ClassWrapper(name, widths=widths, scale=4).eval()
    classes = fixed_routing(x, p, s)
    all_widest = np.full(len(classes), 2)
    widest = model.branches[-1]
    sizes = model.infer(x, classes=classes).batch_sizes  # warm-up: allocate, pick kernels

    def whole():
        with torch.inference_mode():
            return widest(x)

    whole()
    methods = {
        "official": lambda: official_loop(model, x, classes, p, s),
        "engine": lambda: model.infer(x, classes=classes),
        "alone": lambda: sum_alone(model, x, classes, p, s, sizes),
        "engine_widest": lambda: model.infer(x, classes=all_widest),
        "whole": whole,
    }
    for b in batch_sizes:
        methods[f"bs{b}"] = lambda b=b: model.infer(x, classes=classes, batch_size=b)
    times: dict[str, list[float]] = {k: [] for k in methods}
    alone_parts: list[list[float]] = []
    results = {}
    for _ in range(reps):
        for key, fn in methods.items():
            dt, results[key] = clock(fn)
            if key == "alone":  # compute time only, not the cutting of the patches
                alone_parts.append(results[key])
                dt = sum(results[key])
            times[key].append(dt)
    # Ratios within a round compare runs seconds apart, under the same load.
    ratios = {
        "overhead": [e / a for e, a in zip(times["engine"], times["alone"])],
        "official": [o / e for o, e in zip(times["official"], times["engine"])],
    }
    row: dict = {"name": name, "widths": widths, "patches": len(classes)}
    row["counts"] = np.bincount(classes, minlength=3).tolist()
    row["batch_sizes"] = sizes
    row["min"] = {k: min(v) for k, v in times.items()}
    row["median"] = {k: statistics.median(v) for k, v in times.items()}
    best = min(range(reps), key=lambda i: times["alone"][i])
    row["alone_parts"] = alone_parts[best]
    row["ratios"] = {k: statistics.median(v) for k, v in ratios.items()}
    res, res_w = results["engine"], results["engine_widest"]
    row["timings"] = res.timings
    row["flops"] = res.flops
    row["flops_fraction"] = res.flops_fraction
    row["flops_widest_tiled"] = res_w.flops
    row["flops_whole"] = count_flops(widest, tuple(x.shape))
    row["classifier_flops"] = res.flops_per_patch["classifier"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="median of this many runs")
    ap.add_argument("--image", help="photo to use (default: a mate-backgrounds photo)")
    ap.add_argument("--only", choices=[c[0] for c in CONFIGS + EXTRA], help="one backbone only")
    ap.add_argument("--widths", help="override the branch widths, e.g. 32,48,64 (with --only)")
    ap.add_argument("--sweep", help="engine batch sizes to try, e.g. 1,4,16")
    ap.add_argument(
        "--lr-size",
        type=int,
        nargs=2,
        default=(480, 270),
        metavar=("W", "H"),
        help="LR photo size (smaller for RCAN on a CPU: --lr-size 160 90)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    img, desc = load_photo(args.image, tuple(args.lr_size))
    # Channels-last (NHWC) as the engine feeds its branches on CPU; the official loop's and
    # the whole-image run's slices of x inherit it, so every method gets the same layout.
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    x = x.contiguous(memory_format=torch.channels_last)
    p, s = 32, 28
    print(f"machine: {machine(torch.get_num_threads())}")
    print(f"image: {desc}; patches {p}/{s}; routing mix {MIX} forced with classes=")
    for name, widths in CONFIGS + EXTRA:
        if (args.only and name != args.only) or (not args.only and (name, widths) in EXTRA):
            continue
        if args.widths:
            widths = [int(v) for v in args.widths.split(",")]
        t0 = time.perf_counter()
        sweep = [int(v) for v in (args.sweep or SWEEPS[name]).split(",") if v]
        r = bench(name, widths, x, args.reps, p, s, sweep)
        lo, med = r["min"], r["median"]
        print(
            f"\n## {name} {widths}: {r['patches']} patches, counts {r['counts']}, "
            f"engine batch sizes {r['batch_sizes']}"
        )
        print("| method | min s | median s | time / engine | FLOPs / engine |")
        print("|---|---|---|---|---|")
        flops = {
            "official": r["flops"],
            "engine": r["flops"],
            "alone": r["flops"] - r["patches"] * r["classifier_flops"],
            "engine_widest": r["flops_widest_tiled"],
            "whole": r["flops_whole"],
        }
        for key, label in (
            ("official", "official-style loop (batch 1)"),
            ("engine", "engine (classify + grouped batches + stitch)"),
            ("alone", "sum of each branch alone on its patches"),
            ("engine_widest", "engine, every patch on the widest branch"),
            ("whole", "widest branch on the whole image"),
        ):
            print(
                f"| {label} | {lo[key]:.3f} | {med[key]:.3f} | {lo[key] / lo['engine']:.2f} "
                f"| {flops[key] / r['flops']:.2f} |"
            )
        overhead = r["ratios"]["overhead"] - 1
        print(
            f"engine overhead over the sum alone: {100 * overhead:+.1f}% (median of per-round "
            f"ratios; from the minima {100 * (lo['engine'] / lo['alone'] - 1):+.1f}%; "
            "target <= +10%)"
        )
        print(
            f"official loop / engine: {r['ratios']['official']:.2f} (median of per-round "
            f"ratios; from the minima {lo['official'] / lo['engine']:.2f})"
        )
        time_ratio = lo["engine"] / lo["engine_widest"]
        flops_ratio = r["flops"] / r["flops_widest_tiled"]
        print(
            f"engine vs widest on the same tiling: time {time_ratio:.2f}, FLOPs "
            f"{flops_ratio:.2f} (flops_fraction): time / FLOPs {time_ratio / flops_ratio:.2f} "
            "(target <= 1.1)"
        )
        print(
            f"engine vs widest on the whole image: time {lo['engine'] / lo['whole']:.2f}, "
            f"FLOPs {r['flops'] / r['flops_whole']:.2f}"
        )
        t = r["timings"]
        print(
            "engine phases (last run): "
            + ", ".join(f"{k} {v:.3f}s" for k, v in t.items() if not k.startswith("branch_"))
        )
        print(
            "per branch, engine vs alone: "
            + ", ".join(f"{t[f'branch_{i}']:.3f}/{a:.3f}s" for i, a in enumerate(r["alone_parts"]))
        )
        if sweep:
            print(
                "engine batch-size sweep (min s): "
                + ", ".join(f"{b}: {lo[f'bs{b}']:.3f}" for b in sweep)
            )
        print(f"({time.perf_counter() - t0:.0f} s for this backbone)")
    print(f"\nmachine at the end: {machine(torch.get_num_threads())}")


if __name__ == "__main__":
    main()
