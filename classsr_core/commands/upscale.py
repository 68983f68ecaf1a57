"""``classsr upscale`` (and the task-generic ``classsr run``): images in, images out, a report.

A bad file is reported and the rest of the folder is still processed; an input is never
overwritten; every output is written atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The best shipped ClassSR model on the validation photos (docs/model-zoo.md): the paper's
# widths with weight-sharing branches.
DEFAULT_MODEL = "classsr-fsrcnn-x4-shared"


def _add_common(p):
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (or file, for one input)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or .safetensors path")
    p.add_argument("--budget", type=float, default=None, help="target FLOPs fraction (0..1]")
    p.add_argument("--class-map", default=None, help="write a class-map overlay PNG here")
    p.add_argument("--patch", type=int, default=None, help="patch size (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="stride (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per branch call")
    p.add_argument(
        "--mode",
        choices=("patches", "regions"),
        default="patches",
        help="patches: the paper's overlapping patches; regions: same-class patches merged "
        "into tiles with a halo (faster, no seams; docs/performance.md)",
    )
    p.add_argument("--halo", type=int, default=None, help="regions: LR context pixels")
    p.add_argument(
        "--router",
        choices=("classifier", "edge"),
        default="classifier",
        help="classifier: the Class-Module (the paper); edge: the model's calibrated edge "
        "table, no classifier runs (`classsr calibrate`; docs/performance.md)",
    )
    p.add_argument("--amp", choices=("fp16", "bf16"), default=None, help="autocast (GPUs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def add_parser(sub):
    p = sub.add_parser("upscale", help="super-resolve images with a ClassSR model")
    return _add_common(p)


def add_run_parser(sub):
    p = sub.add_parser("run", help="run any task's model (sr, denoise, deblock) on images")
    return _add_common(p)


def _output_path(src: Path, out: Path, single: bool, scale: int) -> Path:
    from classsr_core.imageio import IMAGE_SUFFIXES

    if single and out.suffix.lower() in IMAGE_SUFFIXES:
        return out
    tag = f"_x{scale}" if scale > 1 else "_restored"
    return out / f"{src.stem}{tag}.png"


def _overlay_path(class_map: str, src: Path, single: bool) -> Path:
    path = Path(class_map)
    if single and path.suffix.lower() == ".png":
        return path
    return path / f"{src.stem}_classes.png"


def process(args) -> int:
    import torch
    from tqdm import tqdm

    from classsr_core.checkpoint import load_model
    from classsr_core.errors import ClassSRError
    from classsr_core.imageio import Image, list_images, read_image, resize_alpha, write_image
    from classsr_core.tiling import check_router
    from classsr_core.visualize import result_overlay

    model = load_model(args.model, device=args.device)
    check_router(model, args.router)  # a model without an edge table fails once, up front
    device = next(model.parameters()).device
    files = list_images(args.inputs)
    if not files:
        raise ClassSRError(f"no images found in {', '.join(args.inputs)}")
    inputs = {f.resolve() for f in files}
    out_root = Path(args.output)
    single = len(files) == 1
    reports, failures = [], 0
    bar = tqdm(files, desc=args.command, unit="img", disable=len(files) < 2, file=sys.stderr)
    for src in bar:
        dst = _output_path(src, out_root, single, model.scale)
        try:
            if dst.resolve() in inputs:
                raise ClassSRError(f"refusing to overwrite the input {src}; choose another -o")
            img = read_image(src)
            x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].to(device)
            result = model.infer(
                x,
                budget=args.budget,
                patch_size=args.patch,
                stride=args.stride,
                batch_size=args.batch_size,
                mode=args.mode,
                halo=args.halo,
                amp=args.amp,
                router=args.router,
            )
            sr = result.output[0].permute(1, 2, 0).cpu().numpy()
            alpha = resize_alpha(img.alpha, model.scale) if img.alpha is not None else None
            write_image(dst, Image(sr, alpha, img.grey, img.max_value))
            if args.class_map:
                cm = result_overlay(sr, result, model.num_classes)
                write_image(_overlay_path(args.class_map, src, single), Image(cm, None, False, 255))
        except (ClassSRError, OSError, RuntimeError) as exc:
            failures += 1
            print(f"classsr {args.command}: {src}: {exc}", file=sys.stderr)
            continue
        reports.append(
            {
                "input": str(src),
                "output": str(dst),
                "class_counts": [int(c) for c in result.class_counts],
                "flops": float(result.flops),
                "flops_fraction": float(result.flops_fraction),
                "seconds": float(result.timings["total"]),
            }
        )
        if not args.json:
            total = max(1, sum(result.class_counts))
            shares = " / ".join(f"{100 * c / total:.0f}%" for c in result.class_counts)
            tqdm.write(
                f"{src.name} -> {dst}  classes {shares}  FLOPs {result.flops / 1e9:.2f}G "
                f"({100 * result.flops_fraction:.1f}% of the widest branch)  "
                f"{result.timings['total']:.2f}s",
                file=sys.stdout,
            )
    if args.json:
        print(json.dumps(reports, indent=2))
    if failures:
        print(f"{failures} of {len(files)} images failed", file=sys.stderr)
        return 1
    return 0


run = process
