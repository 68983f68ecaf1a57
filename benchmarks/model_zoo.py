"""Score shipped (or given) models on the validation photos: the table of docs/model-zoo.md.

    scripts/fetch_photos.sh                      # data/photos/val: Wood, YellowFlower
    python benchmarks/model_zoo.py --pair classsr-fsrcnn-x4 fsrcnn-x4 [--budget 0.6 ...]
        [--mode patches regions] [--router classifier] [--no-seconds] [--means]

For each photo: HR (mod-cropped) -> LR by MATLAB bicubic x1/4 -> bicubic, the -O model and
the ClassSR model, both through the same tile engine (LR patches 32, stride 28; or both in
``--mode regions``, merged tiles with a halo). PSNR on
RGB 0..255 with a 4-pixel border (basicsr's metric, as the paper). FLOPs per patch in both
conventions, as a fraction of the -O network on the same tiling (classifier included).
``--router`` names the ClassSR model's router (default: the model's own); ``--mode`` takes
several modes, each with its rows. The seconds column is one call per row, timed on its own (not
a benchmark: benchmarks/routing_time.py and benchmarks/speed.py time settings in interleaved
rounds); ``--no-seconds`` leaves it out, so that the output is deterministic.
``--means`` prints only the means over the photos.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from classsr_core import load_model
from classsr_core._basicsr import imresize
from classsr_core.analysis.flops import model_costs
from classsr_core.io.images import list_images, read_image
from classsr_core.plugins.registry import lookup
from classsr_core.tasks import degraded_pairs


def per_patch(model, counts, convention: str) -> float:
    """Mean cost of one patch: classifier plus the routed branches."""
    costs = model_costs(model, convention=convention)
    n = max(1, sum(counts))
    spent = sum(c * b["flops"] for c, b in zip(counts, costs["branches"]))
    return (n * costs["classifier"]["flops"] + spent) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pair",
        nargs=2,
        metavar=("CLASSSR", "O"),
        action="append",
        default=None,
        help="a ClassSR model and its -O model (repeatable)",
    )
    parser.add_argument("--val", default="data/photos/val")
    parser.add_argument("--budget", type=float, nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", nargs="+", choices=("patches", "regions"), default=["patches"])
    parser.add_argument(
        "--router", default=None, help="the ClassSR models' router (default: each model's own)"
    )
    parser.add_argument("--no-seconds", action="store_true", help="leave out the seconds")
    parser.add_argument("--means", action="store_true", help="print only the means")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = args.pair or [["classsr-fsrcnn-x4", "fsrcnn-x4"]]
    photos = list_images([args.val])
    if not photos:
        raise SystemExit(f"no photos in {args.val}: run scripts/fetch_photos.sh")
    task = lookup("tasks", "sr").factory(scale=4)
    # LR rounded to 8-bit levels, as an image file holds it and as `classsr calibrate`
    # measures the edge tables.
    degraded = degraded_pairs(task, [read_image(p).rgb for p in photos], uint8=True)
    data = [(p.stem, hr, lr) for p, (hr, lr) in zip(photos, degraded)]

    rows = []
    for stem, hr, lr in data:
        rows.append(
            {
                "model": "bicubic",
                "photo": stem,
                "psnr": task.score(np.clip(imresize(lr[0].permute(1, 2, 0).numpy(), 4), 0, 1), hr)[
                    "psnr"
                ],
            }
        )
    for mode in args.mode:
        for classsr_name, o_name in pairs:
            o_model, c_model = load_model(o_name), load_model(classsr_name)
            o_paper = model_costs(o_model, convention="paper")["branches"][-1]["flops"]
            o_true = model_costs(o_model, convention="fvcore")["branches"][-1]["flops"]
            router = {} if args.router is None else {"router": args.router}
            runs = [(o_name, o_model, None, {})] + [(classsr_name, c_model, None, router)]
            runs += [(f"{classsr_name} budget {b:g}", c_model, b, router) for b in args.budget]
            for label, model, budget, options in runs:
                if len(args.mode) > 1:
                    label = f"{label}, {mode}"
                for stem, hr, lr in data:
                    x = lr.float()
                    t0 = time.perf_counter()
                    res = model.infer(x, budget=budget, mode=mode, **options)
                    seconds = time.perf_counter() - t0
                    sr = res.output[0].permute(1, 2, 0).numpy()
                    counts = [int(c) for c in res.class_counts]
                    rows.append(
                        {
                            "model": label,
                            "photo": stem,
                            "psnr": task.score(sr, hr)["psnr"],
                            "paper_fraction": per_patch(model, counts, "paper") / o_paper,
                            "true_fraction": per_patch(model, counts, "fvcore") / o_true,
                            "seconds": seconds,
                            "class_shares": [c / max(1, sum(counts)) for c in counts],
                            "params": sum(p.numel() for p in model.parameters()),
                            "engine_fraction": res.flops_fraction,
                        }
                    )

    if args.router is not None:
        print(f"ClassSR models routed by: {args.router}\n")
    seconds = not args.no_seconds
    if not args.means:
        sec_head, sec_rule = (" seconds |", "---|") if seconds else ("", "")
        print(
            "| model | photo | PSNR (dB) | FLOPs vs -O, paper | FLOPs vs -O, true |"
            f"{sec_head} classes |"
        )
        print(f"|---|---|---|---|---|{sec_rule}---|")
        for r in rows:
            shares = " / ".join(f"{100 * s:.0f}%" for s in r.get("class_shares", []))
            pf = f"{100 * r['paper_fraction']:.1f}%" if "paper_fraction" in r else "-"
            tf = f"{100 * r['true_fraction']:.1f}%" if "true_fraction" in r else "-"
            sec = (f" {r['seconds']:.2f} |" if "seconds" in r else " - |") if seconds else ""
            print(
                f"| {r['model']} | {r['photo']} | {r['psnr']:.2f} | {pf} | {tf} |{sec} {shares} |"
            )
        print("\nMeans over the photos:\n")
    sec_head, sec_rule = (" seconds |", "---|") if seconds else ("", "")
    print(
        "| model | PSNR (dB) | FLOPs vs -O, paper | FLOPs vs -O, true |"
        f"{sec_head} engine's flops_fraction | params |"
    )
    print(f"|---|---|---|---|{sec_rule}---|---|")
    for label in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == label]
        psnr = f"{np.mean([r['psnr'] for r in sel]):.3f}"
        if "paper_fraction" not in sel[0]:
            print(f"| {label} | {psnr} | - | - |{' - |' if seconds else ''} - | - |")
            continue
        sec = f" {np.mean([r['seconds'] for r in sel]):.2f} |" if seconds else ""
        print(
            f"| {label} | {psnr} | {100 * np.mean([r['paper_fraction'] for r in sel]):.1f}% "
            f"| {100 * np.mean([r['true_fraction'] for r in sel]):.1f}% |{sec} "
            f"{100 * np.mean([r['engine_fraction'] for r in sel]):.1f}% "
            f"| {sel[0]['params']:,} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
