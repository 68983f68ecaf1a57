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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classsr_core.commands.options import (
    add_engine_options,
    add_job_device,
    add_trust_code,
    budget_arg,
    pixels_arg,
    positive_int_arg,
    tolerance_arg,
)

# The best shipped ClassSR model on the validation photos (docs/model-zoo.md): the paper's
# widths with weight-sharing branches.
DEFAULT_MODEL = "classsr-fsrcnn-x4-shared"
# Outputs above this many pixels go through the band path by default: a 16K x 16K float
# canvas is 3 GB (docs/performance.md, "Scale out").
STREAM_ABOVE = 2**28
# --json's keys per image; the report (--report) adds size, rank, streamed and bands.
JSON_KEYS = (
    "input",
    "output",
    "task",
    "scale",
    "class_counts",
    "flops",
    "flops_fraction",
    "seconds",
)


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
    add_job_device(p)
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
    stream = p.add_mutually_exclusive_group()
    stream.add_argument(
        "--stream",
        action="store_true",
        help="process every image in horizontal bands and write its output band by band "
        "(.png or .tif): memory follows the band, not the image",
    )
    stream.add_argument(
        "--stream-above",
        type=pixels_arg,
        default=STREAM_ABOVE,
        help=f"stream the images whose output has more pixels than this (default "
        f"{STREAM_ABOVE:_}; 0: never)",
    )
    p.add_argument(
        "--band-rows",
        type=positive_int_arg,
        default=None,
        help="streamed images: patch rows of output per band (default: about 256 MB of "
        "float output per band)",
    )
    p.add_argument(
        "--report",
        default=None,
        help="write one JSON line per image here (under torchrun: default OUTPUT/report.jsonl "
        "when the output is a folder)",
    )
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
    from classsr_core.io.checkpoint import read_meta as read_header
    from classsr_core.io.checkpoint import shipped_models

    path = Path(name_or_path)
    if not path.is_file():
        path = shipped_models().get(str(name_or_path))
        if path is None:
            return None
    try:
        config = read_header(path)
        int(config["model"]["scale"])  # what planning needs
        return config
    except Exception:  # unreadable, not classsr's, or incomplete: load_model reports it
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
    """The command: under ``torchrun`` every rank runs this, each on its own share."""
    from classsr_core.commands import jobs

    return jobs.run(args.device, lambda job: _process(args, job))


@dataclass
class _Item:
    src: Path
    outs: list[Path]
    pixels: int  # output pixels from the header (0: unreadable header, reported later)
    stream: bool


def _report_path(args, files: list[Path], job) -> Path | None:
    from classsr_core.io.images import IMAGE_SUFFIXES

    if args.report:
        return Path(args.report)
    out = Path(args.output)
    single_file = len(files) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    return out / "report.jsonl" if job.distributed and not single_file else None


def _check(args, job):
    """Everything decided before any work, identical on every rank: the files, the model's
    task and scale, the plan (safety checks), what is streamed, and what is to do (the
    items whose outputs are not all there, under --skip-existing)."""
    from classsr_core.commands.outputs import check_outputs, existing, refuse_existing
    from classsr_core.errors import ClassSRError, InputError
    from classsr_core.io.images import list_images
    from classsr_core.io.streams import check_streamable, image_size

    files = list_images(args.inputs)
    if not files:
        raise ClassSRError(f"no images found in {', '.join(args.inputs)}")
    meta = read_meta(args.model)
    model = None
    if meta is None:  # no classsr checkpoint: load_model raises the error that says why
        model = _load(args, job)
        meta = model.checkpoint_meta
    scale, task = int(meta["model"]["scale"]), task_of(meta)
    if args.command == "upscale" and task != "sr":
        raise ClassSRError(
            f"{args.model} is a {task or 'scale-1'} model (x{scale}), not super-resolution; "
            "`classsr upscale` runs sr models only: use `classsr run` for other tasks"
        )
    if args.tolerance is not None and args.budget is not None:
        raise ClassSRError("give --tolerance or --budget, not both: each sets the routing alone")
    plan = _plan(args, files, scale)
    report = _report_path(args, files, job)
    if report is not None:
        check_outputs(files, [(report, "the report (--report)")])
    items = []
    for src, outs in plan:
        try:
            h, w = image_size(src)
            pixels = h * w * scale * scale
        except Exception:  # unreadable: the main loop reports it
            pixels = 0
        stream = bool(args.stream or (args.stream_above and pixels > args.stream_above))
        if stream:
            check_streamable(outs[0])
            if args.class_map:
                raise InputError(
                    f"{src}: --class-map needs the whole output in memory; it is not available "
                    "for streamed images (--stream, --stream-above)"
                )
        items.append(_Item(src, outs, pixels, stream))
    found = existing([p for _, outs in plan for p in outs] + ([report] if report else []))
    todo = items
    if found and args.skip_existing:
        todo = [it for it in items if not all(p.exists() for p in it.outs)]
    elif found and not args.overwrite:
        refuse_existing(found)
    return files, model, scale, task or "unknown", items, todo, report


def _load(args, job):
    from classsr_core.model.loading import load_model

    device = str(job.device) if job.distributed else args.device
    return load_model(args.model, device=device, trust_code=args.trust_code)


def _process(args, job) -> int:
    import time

    from classsr_core.commands import jobs
    from classsr_core.engine import check_router
    from classsr_core.errors import ClassSRError

    t_start = time.perf_counter()
    error = None
    try:
        files, model, scale, task, all_items, items, report = _check(args, job)
    except ClassSRError as exc:
        error = str(exc)
    # Every rank checks the same plan before any work: all refuse if one does, and no rank
    # writes before all have looked at the outputs (this is a barrier). Rank 0's list of
    # what is to do is the job's, so that every rank shards the same list.
    views = job.all_gather(("refused", error) if error else ("todo", [str(it.src) for it in items]))
    refusals = [(r, v[1]) for r, v in enumerate(views) if v[0] == "refused"]
    if refusals:
        rank, message = refusals[0]
        raise ClassSRError(message if rank == 0 else f"rank {rank}: {message}")
    if job.distributed:
        by_src = {str(it.src): it for it in all_items}
        items = [by_src[src] for src in views[0][1]]
    todo = {str(it.src) for it in items}
    skipped = [it.src for it in all_items if str(it.src) not in todo]

    if model is None:
        model = _load(args, job)
    check_router(model, args.router)  # a model without an edge table fails once, up front
    knobs = {"budget": args.budget, "tolerance": args.tolerance}
    if args.budget is not None and args.budget_scope == "folder":
        # One price for the whole job: rank 0 routes every image (no branch runs) and
        # hands its price to the others. Skipped images count too, so that a resumed job
        # routes its remaining images as the uninterrupted job would have.
        price, error = None, None
        if job.is_main:
            try:
                price = _folder_price(model, args, all_items)
            except ClassSRError as exc:  # every rank must hear of it, or they wait for it
                error = str(exc)
        price, error = job.from_main((price, error))
        if error is not None:
            raise ClassSRError(error)
        knobs = {"price": price}
    if job.is_main:
        for src in skipped:
            print(f"classsr {args.command}: {src}: skipped, its outputs exist", file=sys.stderr)

    shares = jobs.shard([it.pixels for it in items], job.world)
    progress = jobs.Progress(
        job, [len(s) for s in shares], args.command, args.no_progress or len(items) < 2
    )
    reports, failures = [], 0
    for i in shares[job.rank]:
        it = items[i]
        try:
            row = _one(args, model, knobs, it, task, scale)
        except (ClassSRError, OSError, RuntimeError, ValueError, MemoryError) as exc:
            # One bad file (unreadable, too large, out of memory) must not stop the folder.
            failures += 1
            message = str(exc) if str(it.src) in str(exc) else f"{it.src}: {exc}"
            progress.write(f"classsr {args.command}: {message}", file=sys.stderr)
            progress.done_one()
            continue
        row["rank"] = job.rank
        reports.append(row)
        if not args.json and not job.distributed:
            progress.write(_line(row))
        progress.done_one()
    progress.finish()

    gathered = job.all_gather((reports, failures))
    failures = sum(f for _, f in gathered)
    order = {str(it.src): k for k, it in enumerate(items)}
    reports = sorted((r for rs, _ in gathered for r in rs), key=lambda r: order[r["input"]])
    if job.is_main:
        _finish(args, job, files, reports, skipped, failures, report, time.perf_counter() - t_start)
    return 1 if failures else 0


def _finish(args, job, files, reports, skipped, failures, report, wall) -> None:
    from classsr_core.commands import jobs

    if job.distributed and not args.json:
        for row in reports:
            print(_line(row))
    if args.json:  # the keys it always had; the report file has the rest
        print(json.dumps([{k: r[k] for k in JSON_KEYS} for r in reports], indent=2))
    if report is not None:
        earlier = jobs.read_report(report) if skipped else []
        keep = {str(s) for s in skipped}
        jobs.write_report(report, reports, [r for r in earlier if r.get("input") in keep])
    if job.distributed and not args.json:
        flops = sum(r["flops"] for r in reports)
        busy = sum(r["seconds"] for r in reports)
        print(
            f"classsr {args.command}: {len(reports)} images on {job.world} ranks, "
            f"{flops / 1e9:.2f} GFLOPs, {busy:.2f} s of compute, {wall:.2f} s wall"
            + (f", report {report}" if report is not None else "")
        )
    if failures or skipped:
        print(
            f"classsr {args.command}: {len(reports)} written, {len(skipped)} skipped, "
            f"{failures} failed, of {len(files)} images",
            file=sys.stderr,
        )


def _line(row: dict[str, Any]) -> str:
    total = max(1, sum(row["class_counts"]))
    shares = " / ".join(f"{100 * c / total:.0f}%" for c in row["class_counts"])
    streamed = "  streamed" if row.get("streamed") else ""
    return (
        f"{Path(row['input']).name} -> {row['output']}  {row['task']} x{row['scale']}  "
        f"classes {shares}  FLOPs {row['flops'] / 1e9:.2f}G "
        f"({100 * row['flops_fraction']:.1f}% of the widest branch)  "
        f"{row['seconds']:.2f}s{streamed}"
    )


def _options(args, knobs):
    from classsr_core.engine.bands import BandOptions

    return BandOptions(
        mode=args.mode,
        router=args.router,
        patch_size=args.patch,
        stride=args.stride,
        batch_size=args.batch_size,
        halo=args.halo,
        amp=args.amp,
        band_rows=args.band_rows,
        **knobs,
    )


def _one(args, model, knobs, it: _Item, task: str, scale: int) -> dict[str, Any]:
    """One image, in memory or (``it.stream``) band by band; its report row."""
    import torch

    from classsr_core.analysis.visualize import result_overlay
    from classsr_core.io.images import Image, read_image, resize_alpha, write_image

    row = {"input": str(it.src), "output": str(it.outs[0]), "task": task, "scale": scale}
    if it.stream:
        return {**row, **_one_streamed(args, model, knobs, it)}
    img = read_image(it.src, max_pixels=args.max_pixels)
    device = next(model.parameters()).device
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
    write_image(it.outs[0], Image(sr, alpha, img.grey, img.max_value))
    if args.class_map:
        cm = result_overlay(sr, result, model.num_classes)
        write_image(it.outs[1], Image(cm, None, False, 255))
    return {
        **row,
        "size": [int(sr.shape[0]), int(sr.shape[1])],
        "class_counts": [int(c) for c in result.class_counts],
        "flops": float(result.flops),
        "flops_fraction": float(result.flops_fraction),
        "seconds": float(result.timings["total"]),
        "streamed": False,
    }


def _one_streamed(args, model, knobs, it: _Item) -> dict[str, Any]:
    """Band by band (classsr_core.engine.bands): routed once for the whole image, run and
    written one band at a time."""
    import time

    import numpy as np

    from classsr_core.engine.bands import route, stream_bands
    from classsr_core.io.streams import open_lr, write_bands

    t0 = time.perf_counter()
    source = open_lr(it.src, max_pixels=args.max_pixels)
    opts = _options(args, knobs)
    plan, classes = route(model, source, opts)
    s = int(model.scale)
    channels = (1 if source.grey else 3) + (1 if source.has_alpha else 0)
    height, width = source.height * s, source.width * s
    bands = stream_bands(model, source, opts, classes)
    write_bands(it.outs[0], bands, height, width, channels, source.max_value)
    counts = np.bincount(classes.reshape(-1), minlength=len(model.branches))
    flops = float(opts.stats["flops"])
    return {
        "size": [height, width],
        "class_counts": [int(c) for c in counts],
        "flops": flops,  # what ran: the bands' context rows and routing included
        "flops_fraction": flops / plan.widest_flops if plan.widest_flops else float("nan"),
        "seconds": time.perf_counter() - t0,
        "streamed": True,
        "bands": int(opts.stats["bands"]),
    }


def _folder_price(model, args, items) -> float:
    """One price for the whole folder (--budget-scope folder): every image routed without
    running a branch, then the price at which they spend --budget together. Unreadable
    images are left out here and reported by the main loop; streamed ones are routed band
    by band."""
    import torch

    from classsr_core.engine.bands import route
    from classsr_core.engine.pipeline import plan_routes
    from classsr_core.errors import ClassSRError
    from classsr_core.io.images import read_image
    from classsr_core.io.streams import open_lr
    from classsr_core.routing.folder import folder_price

    plans = []
    for it in items:
        try:
            if it.stream:
                plans.append(route(model, open_lr(it.src, args.max_pixels), _options(args, {}))[0])
                continue
            img = read_image(it.src, max_pixels=args.max_pixels)
        except (ClassSRError, OSError, ValueError, MemoryError):
            continue
        x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None]
        options = {"patch_size": args.patch, "stride": args.stride, "halo": args.halo}
        plans.append(plan_routes(model, x, mode=args.mode, router=args.router, **options))
    return folder_price(plans, args.budget)


run = process
