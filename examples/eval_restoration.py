"""Measure a restoration task's models on clean photos: input, -O and ClassSR side by side.

For every photo the task recorded in the checkpoints (``denoise``, ``deblock``, ...) makes
the degraded input (with a generator seeded by the file name, so every run scores the same
inputs), rounds it to 8 bits as a real degraded photo is, and each model restores it
through the tile engine. Printed per photo and on average: PSNR of the input and of each
model (RGB, 8-bit, every pixel), the FLOPs fraction (of the widest branch, which is the -O
network) and the share of patches each branch got. This is what docs/tasks/*.md report.

    python examples/eval_restoration.py data/photos/val \\
        --plain runs/denoise-o/model.safetensors --classsr runs/denoise/model.safetensors \\
        [--class-map docs/tasks/denoise-classes.png] [--markdown] [--json]
        [--budget F] [--mode regions] [--router edge]
"""

from __future__ import annotations

import argparse
import json
import zlib

import numpy as np
import torch

from classsr_core import load_model
from classsr_core.analysis.visualize import class_map_overlay
from classsr_core.io.checkpoint import read_checkpoint
from classsr_core.io.images import Image, list_images, read_image, write_image
from classsr_core.plugins.registry import lookup


def task_of(path: str):
    """The task a checkpoint was trained for, rebuilt from the config stored inside it."""
    _, meta = read_checkpoint(path)
    section = dict(meta["config"]["task"])
    return lookup("tasks", section.pop("name")).factory(**section)


def to8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="clean photos (files or folders)")
    parser.add_argument("--plain", required=True, help="the -O checkpoint (one branch)")
    parser.add_argument("--classsr", required=True, help="the ClassSR checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations")
    parser.add_argument("--class-map", default=None, help="write the first photo's class map")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--budget", type=float, default=None, help="ClassSR's FLOPs budget")
    parser.add_argument("--mode", choices=("patches", "regions"), default="patches")
    parser.add_argument(
        "--router",
        choices=("classifier", "edge"),
        default="classifier",
        help="ClassSR's router (edge: its calibrated table, `classsr calibrate`)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    task = task_of(args.classsr)
    models = {"O": load_model(args.plain).eval(), "ClassSR": load_model(args.classsr).eval()}
    rows = []
    for i, path in enumerate(list_images(args.images)):
        hr = to8(read_image(path).rgb)
        rng = np.random.default_rng([args.seed, zlib.crc32(path.name.encode())])
        lr = to8(task.make_input(hr, rng))
        row = {"image": path.name, "size": f"{hr.shape[1]}x{hr.shape[0]}"}
        row["input_psnr"] = task.score(lr, hr)["psnr"]
        x = torch.from_numpy(lr).permute(2, 0, 1)[None]
        for label, model in models.items():
            options = {"mode": args.mode}
            if label == "ClassSR":
                options["router"] = args.router
                if args.budget is not None:
                    options["budget"] = args.budget
            with torch.no_grad():
                result = model.infer(x.to(next(model.parameters()).device), **options)
            out = result.output[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            row[f"{label}_psnr"] = task.score(out, hr)["psnr"]
            if label == "ClassSR":
                row["flops_fraction"] = float(result.flops_fraction)
                row["class_counts"] = [int(c) for c in result.class_counts]
                if args.class_map and i == 0:
                    overlay = class_map_overlay(
                        to8(out),
                        result.class_map,
                        result.origins,
                        result.patch_size,
                        result.stride,
                        model.num_classes,
                    )
                    write_image(args.class_map, Image(overlay, None, False, 255))
        rows.append(row)
        if not (args.json or args.markdown):
            print(_line(row), flush=True)
    if not rows:
        raise SystemExit(f"no images in {' '.join(args.images)}")
    mean = {"image": "mean", "size": ""}
    for key in ("input_psnr", "O_psnr", "ClassSR_psnr", "flops_fraction"):
        mean[key] = float(np.mean([r[key] for r in rows]))
    mean["class_counts"] = np.sum([r["class_counts"] for r in rows], axis=0).tolist()
    if args.json:
        print(json.dumps({"task": repr(task), "rows": rows, "mean": mean}, indent=2))
    elif args.markdown:
        print(
            "| photo | size | input PSNR | -O PSNR | ClassSR PSNR | ClassSR - (-O) "
            "| FLOPs (of -O) | class shares |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in [*rows, mean]:
            print(_markdown(r))
    else:
        print(_line(mean))


def _shares(counts: list[int]) -> str:
    total = max(sum(counts), 1)
    return " / ".join(f"{100 * c / total:.0f}%" for c in counts)


def _line(r: dict) -> str:
    return (
        f"{r['image']:24s} input {r['input_psnr']:6.2f}  -O {r['O_psnr']:6.2f}  "
        f"ClassSR {r['ClassSR_psnr']:6.2f} dB  FLOPs {100 * r['flops_fraction']:5.1f}%  "
        f"classes {_shares(r['class_counts'])}"
    )


def _markdown(r: dict) -> str:
    bold = "**" if r["image"] == "mean" else ""
    cells = [
        r["image"],
        r["size"],
        f"{r['input_psnr']:.2f}",
        f"{r['O_psnr']:.2f}",
        f"{r['ClassSR_psnr']:.2f}",
        f"{r['ClassSR_psnr'] - r['O_psnr']:+.2f}",
        f"{100 * r['flops_fraction']:.1f}%",
        _shares(r["class_counts"]),
    ]
    return "| " + " | ".join(f"{bold}{c}{bold}" if c else c for c in cells) + " |"


if __name__ == "__main__":
    main()
