"""``classsr upscale`` (and the task-generic ``classsr run``): images in, images out, a report.

Before any work (before the model is loaded) the whole plan is checked: no output may be an
input, two inputs may not share an output name, and existing outputs are refused unless
``--overwrite`` or ``--skip-existing`` says what to do (docs/safety.md). Then a bad file is
reported and the rest of the folder is still processed (exit 1 and a summary at the end);
every output is written atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from classsr_core.commands.options import (
    add_engine_options,
    add_trust_code,
    budget_arg,
    device_arg,
    pixels_arg,
    tolerance_arg,
)

# The best shipped ClassSR model on the validation photos (docs/model-zoo.md): the paper's
# widths with weight-sharing branches.
DEFAULT_MODEL = "classsr-fsrcnn-x4-shared"


def _add_common(p):
    from classsr_core.io.images import MAX_PIXELS

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (or file, for one input)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or .safetensors path")
    p.add_argument(
        "--tolerance",
        type=tolerance_arg,
        default=None,
        help="dB of expected loss against the widest branch (e.g. 0.05): the first knob to "
        "reach for; needs a calibrated router (docs/routing.md)",
    )
    p.add_argument("--budget", type=budget_arg, default=None, help="target FLOPs fraction (0..1]")
    p.add_argument(
        "--budget-scope",
        choices=("image", "folder"),
        default="image",
        help="image: every image spends --budget; folder: the folder spends it on average "
        "with one price for all images, so a hard image gets more than an easy one",
    )
    p.add_argument("--class-map", default=None, help="write a class-map overlay PNG here")
    p.add_argument("--patch", type=int, default=None, help="patch size (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="stride (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per branch call")
    add_engine_options(p)
    p.add_argument("--halo", type=int, default=None, help="regions: LR context pixels")
    p.add_argument("--amp", choices=("fp16", "bf16"), default=None, help="autocast (GPUs)")
    p.add_argument(
        "--device", type=device_arg, default=None, help="cpu, cuda, cuda:N, mps (default: best)"
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace outputs that already exist"
    )
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the inputs whose outputs all exist (resume an interrupted run)",
    )
    p.add_argument(
        "--max-pixels",
        type=pixels_arg,
        default=MAX_PIXELS,
        help=f"refuse an input whose header claims more pixels, before decoding it (default "
        f"{MAX_PIXELS:_}; 0: no limit)",
    )
    add_trust_code(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def add_parser(sub):
    p = sub.add_parser("upscale", help="super-resolve images with a ClassSR model (sr only)")
    return _add_common(p)


def add_run_parser(sub):
    p = sub.add_parser("run", help="run any task's model (sr, denoise, deblock) on images")
    return _add_common(p)


def _output_path(src: Path, out: Path, single: bool, scale: int) -> Path:
    from classsr_core.io.images import IMAGE_SUFFIXES

    if single and out.suffix.lower() in IMAGE_SUFFIXES:
        return out
    tag = f"_x{scale}" if scale > 1 else "_restored"
    return out / f"{src.stem}{tag}.png"


def _overlay_path(class_map: str, src: Path, single: bool) -> Path:
    path = Path(class_map)
    if single and path.suffix.lower() == ".png":
        return path
    return path / f"{src.stem}_classes.png"


def read_meta(name_or_path: str) -> dict[str, Any] | None:
    """A classsr checkpoint's config from its header alone (no weights read, no code run),
    so that outputs can be planned before the model loads; ``None`` when ``name_or_path`` is
    no classsr checkpoint (``load_model`` then says why)."""
    from safetensors import safe_open

    from classsr_core.io.checkpoint import FORMAT, shipped_models

    path = Path(name_or_path)
    if not path.is_file():
        path = shipped_models().get(str(name_or_path))
        if path is None:
            return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            return None
        config = json.loads(meta["config"])
        int(config["model"]["scale"])  # what planning needs
        return config
    except Exception:  # unreadable or incomplete: load_model reports it
        return None


def task_of(meta: dict[str, Any]) -> str | None:
    """The task a checkpoint was made for: the training config's, else the model card's,
    else sr when it upscales; ``None``: unknown (a scale-1 model that records none)."""
    trained = ((meta.get("config") or {}).get("task") or {}).get("name")
    name = trained or (meta.get("card") or {}).get("task")
    if not name and int(meta["model"]["scale"]) > 1:
        name = "sr"
    return name


def _plan(args, files: list[Path], scale: int) -> list[tuple[Path, list[Path]]]:
    """``(input, its outputs)`` per input, refused before any work if unsafe."""
    from classsr_core.commands.outputs import check_outputs

    single = len(files) == 1
    out_root = Path(args.output)
    plan, labelled = [], []
    for src in files:
        outs = [_output_path(src, out_root, single, scale)]
        labelled.append((outs[0], f"the output of {src}"))
        if args.class_map:
            outs.append(_overlay_path(args.class_map, src, single))
            labelled.append((outs[1], f"the class map of {src}"))
        plan.append((src, outs))
    folders = [Path(i) for i in args.inputs if Path(i).is_dir()]
    check_outputs(files, labelled, input_dirs=folders)
    return plan


def process(args) -> int:
    import torch
    from tqdm import tqdm

    from classsr_core.analysis.visualize import result_overlay
    from classsr_core.commands.outputs import existing, refuse_existing
    from classsr_core.engine import check_router
    from classsr_core.errors import ClassSRError
    from classsr_core.io.images import Image, list_images, read_image, resize_alpha, write_image
    from classsr_core.model.loading import load_model

    def load():
        return load_model(args.model, device=args.device, trust_code=args.trust_code)

    files = list_images(args.inputs)
    if not files:
        raise ClassSRError(f"no images found in {', '.join(args.inputs)}")
    meta = read_meta(args.model)
    model = None
    if meta is None:  # no classsr checkpoint: load_model raises the error that says why
        model = load()
        meta = model.checkpoint_meta
    scale, task = int(meta["model"]["scale"]), task_of(meta)
    if args.command == "upscale" and task != "sr":
        raise ClassSRError(
            f"{args.model} is a {task or 'scale-1'} model (x{scale}), not super-resolution; "
            "`classsr upscale` runs sr models only: use `classsr run` for other tasks"
        )
    task = task or "unknown"

    plan = _plan(args, files, scale)
    found = existing(p for _, outs in plan for p in outs)
    skipped: list[Path] = []
    if found and args.skip_existing:
        skipped = [src for src, outs in plan if all(p.exists() for p in outs)]
        plan = [(src, outs) for src, outs in plan if src not in skipped]
    elif found and not args.overwrite:
        refuse_existing(found)

    if model is None:
        model = load()
    check_router(model, args.router)  # a model without an edge table fails once, up front
    if args.tolerance is not None and args.budget is not None:
        raise ClassSRError("give --tolerance or --budget, not both: each sets the routing alone")
    device = next(model.parameters()).device
    knobs = {"budget": args.budget, "tolerance": args.tolerance}
    if args.budget is not None and args.budget_scope == "folder":
        knobs = {"price": _folder_price(model, args, [src for src, _ in plan])}
    reports, failures = [], 0
    for src in skipped:
        print(f"classsr {args.command}: {src}: skipped, its outputs exist", file=sys.stderr)
    bar = tqdm(
        plan,
        desc=args.command,
        unit="img",
        disable=args.no_progress or len(plan) < 2,
        file=sys.stderr,  # stdout carries the results (and --json)
    )
    for src, outs in bar:
        dst = outs[0]
        try:
            img = read_image(src, max_pixels=args.max_pixels)
            x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].to(device)
            result = model.infer(
                x,
                **knobs,
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
                write_image(outs[1], Image(cm, None, False, 255))
        except (ClassSRError, OSError, RuntimeError, ValueError, MemoryError) as exc:
            # One bad file (unreadable, too large, out of memory) must not stop the folder.
            failures += 1
            message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
            tqdm.write(f"classsr {args.command}: {message}", file=sys.stderr)
            continue
        reports.append(
            {
                "input": str(src),
                "output": str(dst),
                "task": task,
                "scale": scale,
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
                f"{src.name} -> {dst}  {task} x{scale}  classes {shares}  "
                f"FLOPs {result.flops / 1e9:.2f}G "
                f"({100 * result.flops_fraction:.1f}% of the widest branch)  "
                f"{result.timings['total']:.2f}s",
                file=sys.stdout,
            )
    if args.json:
        print(json.dumps(reports, indent=2))
    if failures or skipped:
        print(
            f"classsr {args.command}: {len(reports)} written, {len(skipped)} skipped, "
            f"{failures} failed, of {len(files)} images",
            file=sys.stderr,
        )
    return 1 if failures else 0


def _folder_price(model, args, files) -> float:
    """One price for the whole folder (--budget-scope folder): every image routed without
    running a branch, then the price at which they spend --budget together. Unreadable
    images are left out here and reported by the main loop."""
    import torch

    from classsr_core.engine.pipeline import plan_routes
    from classsr_core.errors import ClassSRError
    from classsr_core.io.images import read_image
    from classsr_core.routing.folder import folder_price

    plans = []
    for src in files:
        try:
            img = read_image(src, max_pixels=args.max_pixels)
        except (ClassSRError, OSError, ValueError, MemoryError):
            continue
        x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None]
        options = {"patch_size": args.patch, "stride": args.stride, "halo": args.halo}
        plans.append(plan_routes(model, x, mode=args.mode, router=args.router, **options))
    return folder_price(plans, args.budget)


run = process
