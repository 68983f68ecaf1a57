"""``classsr upscale`` (and the task-generic ``classsr run``): images in, images out, a report.

Before any work (before the model is loaded) the whole plan is checked: no output may be an
input, two inputs may not share an output name, and existing outputs are refused unless
``--overwrite`` or ``--skip-existing`` says what to do (docs/safety.md). Then a bad file is
reported and the rest of the folder is still processed (exit 1 and a summary at the end);
every output is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classsr_core.commands.options import (
    add_engine_options,
    add_job_device,
    add_mode_options,
    add_trust_code,
    budget_arg,
    non_negative_int_arg,
    outscale_arg,
    pixels_arg,
    positive_int_arg,
    quality_arg,
    tolerance_arg,
)

# Chosen on natural photos, quality and time side by side (docs/model-zoo.md, "The default
# model"): as good as the shared model, 0.73x FSRCNN-O's time where it takes 0.89x.
DEFAULT_MODEL = "classsr-fsrcnn-x4-fast"
# Outputs above this many pixels go through the band path by default: a 16K x 16K float
# canvas is 3 GB (docs/performance.md, "Scale out").
STREAM_ABOVE = 2**28
# The output formats of --format (a single output file named -o x.jpg takes its suffix's).
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}
# Every object of --json and of --report, in this order (docs/api.md, "JSON shapes"): what
# ran (model, router, mode, the routing knobs), what came out and what it cost. A streamed
# image adds "bands", an image with --class-map "class_map", a failed one "error" (and has
# no size, class_counts, flops, flops_fraction, seconds).
ROW_KEYS = (
    "input",
    "output",
    "status",
    "model",
    "router",
    "mode",
    "budget",
    "budget_scope",
    "tolerance",
    "task",
    "scale",
    "size",
    "streamed",
    "class_counts",
    "flops",
    "flops_fraction",
    "seconds",
    "rank",
)


def _add_common(p):
    from classsr_core.io.images import MAX_PIXELS

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (or file, for one input)")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model name (`classsr models`) or .safetensors path (default: "
        f"{DEFAULT_MODEL})",
    )
    p.add_argument(
        "--recursive",
        action="store_true",
        help="folder inputs: also the images in their subfolders, the outputs mirroring the "
        "tree under -o (without it, subfolders are skipped with a line that names them)",
    )
    p.add_argument(
        "--suffix",
        default=None,
        help="added to each output's name: NAME{SUFFIX}.png (default: _x4 for a x4 model, "
        "_restored for a scale-1 one; '' for none)",
    )
    p.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default=None,
        help="the outputs' format in an output folder (default png; an -o file's suffix "
        "names its own); jpg and webp are 8-bit and lossy (--quality), jpg drops alpha",
    )
    p.add_argument(
        "--quality",
        type=quality_arg,
        default=None,
        help="jpg / webp quality, 1..100 (default 95)",
    )
    p.add_argument(
        "--outscale",
        type=outscale_arg,
        default=None,
        help="the output's scale, any factor (e.g. 2 or 3.5 with a x4 model): the model's "
        "output resized (Lanczos up, area down), as Real-ESRGAN's -s; default the model's",
    )
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
    p.add_argument(
        "--patch",
        type=positive_int_arg,
        default=None,
        help="LR patch size (default: the model's); on an image smaller than it, cut to the "
        "image's longer side (never below the model's patch): one patch, the image padded "
        "to a square",
    )
    p.add_argument(
        "--stride",
        type=positive_int_arg,
        default=None,
        help="LR stride, at most the patch (default: the model's)",
    )
    p.add_argument(
        "--batch-size", type=positive_int_arg, default=None, help="patches per branch call"
    )
    add_engine_options(p)
    p.add_argument(
        "--halo", type=non_negative_int_arg, default=None, help="regions: LR context pixels"
    )
    add_mode_options(p)
    p.add_argument(
        "--amp",
        choices=("fp16", "bf16"),
        default=None,
        help="autocast on a GPU; fp16 on a CPU runs slower and warns",
    )
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
        help="write one JSON line per image of the job here, with its status (written, "
        "skipped, failed); under torchrun: default OUTPUT/report.jsonl when the output is a "
        "folder",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the written images' rows as a JSON list (the objects of --report; docs/api.md)",
    )
    return p


def add_parser(sub):
    p = sub.add_parser("upscale", help="super-resolve images with a ClassSR model (sr only)")
    return _add_common(p)


def add_run_parser(sub):
    p = sub.add_parser("run", help="run any task's model (sr, denoise, deblock) on images")
    return _add_common(p)


def _output_path(src: Path, out: Path, single: bool, scale: int, args=None, sub=Path()) -> Path:
    """The output of ``src``: ``-o`` itself for one input and an image suffix, else
    ``OUT/SUB/NAME{suffix}.{format}`` (``sub``: ``src``'s folder under the folder input it
    was found in, with --recursive)."""
    from classsr_core.io.images import IMAGE_SUFFIXES

    if single and out.suffix.lower() in IMAGE_SUFFIXES:
        return out
    suffix = getattr(args, "suffix", None)
    outscale = getattr(args, "outscale", None)
    if suffix is not None:
        tag = suffix
    elif outscale is not None:
        tag = f"_x{outscale:g}"
    else:
        tag = f"_x{scale}" if scale > 1 else "_restored"
    ext = FORMATS[getattr(args, "format", None) or "png"]
    return out / sub / f"{src.stem}{tag}{ext}"


def _overlay_path(class_map: str, src: Path, single: bool, sub=Path()) -> Path:
    path = Path(class_map)
    if single and path.suffix.lower() == ".png":
        return path
    return path / sub / f"{src.stem}_classes.png"


def _subfolder(src: Path, folders: list[Path]) -> Path:
    """``src``'s folder relative to the first folder input that holds it (``.`` for a file
    named directly, or one at the top of its folder)."""
    for folder in folders:
        try:
            return src.parent.relative_to(folder)
        except ValueError:
            continue
    return Path()


def _check_format(args) -> None:
    """--format and --quality that contradict -o, refused before any work."""
    from classsr_core.errors import ClassSRError
    from classsr_core.io.images import IMAGE_SUFFIXES

    out = Path(args.output)
    fmt = getattr(args, "format", None)
    if fmt and out.suffix.lower() in IMAGE_SUFFIXES:
        same = {".jpg": ".jpeg", ".tif": ".tiff"}.get(FORMATS[fmt])
        if out.suffix.lower() not in (FORMATS[fmt], same):
            raise ClassSRError(
                f"--format {fmt} but -o {out} names a {out.suffix} file: give -o a .{fmt} "
                "name, or a folder"
            )
    suffix = fmt and FORMATS[fmt]
    if suffix is None and out.suffix.lower() in IMAGE_SUFFIXES:
        suffix = out.suffix.lower()
    if getattr(args, "quality", None) is not None and suffix not in (".jpg", ".jpeg", ".webp"):
        raise ClassSRError(
            f"--quality is for jpg and webp outputs; {suffix or '.png'} is lossless (add "
            "--format jpg or --format webp)"
        )


def read_meta(name_or_path: str) -> dict[str, Any] | None:
    """A classsr checkpoint's config from its header alone (no weights read, no code run),
    so that outputs can be planned before the model loads; ``None`` when ``name_or_path`` is
    no classsr checkpoint (``load_model`` then says why)."""
    import warnings

    from classsr_core.io.checkpoint import find_model
    from classsr_core.io.checkpoint import read_meta as read_header

    try:
        with warnings.catch_warnings():  # a shadowed name: said once, by load_model
            warnings.simplefilter("ignore")
            path = find_model(name_or_path)  # the file load_model reads
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


def _plan(
    args, files: list[Path], scale: int, report: Path | None
) -> list[tuple[Path, list[Path]]]:
    """``(input, its outputs)`` per input, refused before any work if unsafe: no output
    (image, class map, report) may be an input (an image, the model file) or another
    output, whatever --overwrite says."""
    from classsr_core.commands.outputs import UnsafeOutputError, check_outputs, model_files

    single = len(files) == 1
    out_root = Path(args.output)
    folders = [Path(i) for i in args.inputs if Path(i).is_dir()]
    plan, labelled = [], []
    for src in files:
        sub = _subfolder(src, folders)
        outs = [_output_path(src, out_root, single, scale, args, sub)]
        labelled.append((outs[0], f"the output of {src}"))
        if args.class_map:
            outs.append(_overlay_path(args.class_map, src, single, sub))
            labelled.append((outs[1], f"the class map of {src}"))
        plan.append((src, outs))
    for flag, outs in (("-o", [o[0] for _, o in plan]), ("--class-map", [o[-1] for _, o in plan])):
        folder = outs[0].parent if outs else None
        if flag == "--class-map" and not args.class_map:
            continue
        if folder is not None and folder.exists() and not folder.is_dir():
            raise UnsafeOutputError(
                f"{flag} {folder} is a file, not a folder: with several inputs (or a name "
                "without an image suffix) it names the folder of the outputs"
            )
    if report is not None:
        labelled.append((report, "the report (--report)"))
    check_outputs([*files, *model_files(args.model)], labelled, input_dirs=folders)
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
    from classsr_core.commands.outputs import existing, refuse_existing
    from classsr_core.errors import ClassSRError, InputError
    from classsr_core.io.atomic import remove_stale_temps
    from classsr_core.io.inputs import list_inputs
    from classsr_core.io.streams import check_streamable, image_size

    _check_format(args)
    files, notes = list_inputs(
        args.inputs,
        recursive=args.recursive,
        exclude=[Path(args.output), *([Path(args.class_map)] if args.class_map else [])],
        hint="give --recursive to include them",
    )
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
    _check_tolerance(args, meta)
    _check_tiling(args, meta)
    report = _report_path(args, files, job)
    plan = _plan(args, files, scale, report)
    items = []
    for src, outs in plan:
        try:
            h, w = image_size(src)
            pixels = h * w * scale * scale
        except Exception:  # unreadable: the main loop reports it
            pixels = 0
        stream = bool(args.stream or (args.stream_above and pixels > args.stream_above))
        if stream and args.outscale is not None:
            raise InputError(
                f"{src}: --outscale resizes the whole output in memory; it is not available "
                "for streamed images (--stream, --stream-above): resize the streamed output "
                "afterwards, or raise --stream-above"
            )
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
    if job.is_main:
        # What a killed run left beside its outputs (a temporary file is renamed onto its
        # output only when complete); the writes to come replace their own too.
        stale = remove_stale_temps(
            [p for _, outs in plan for p in outs] + ([report] if report else [])
        )
        if stale:
            notes.append(f"removed {len(stale)} temporary file(s) of an interrupted run")
    return files, model, scale, task or "unknown", items, todo, report, notes


def _check_tolerance(args, meta) -> None:
    """--tolerance needs a router with a calibrated error estimate: refused once, before the
    model loads, when the checkpoint says it has none (a plugin router is asked after
    loading, by :func:`_probe_tolerance`)."""
    from classsr_core.errors import ClassSRError

    if args.tolerance is None:
        return
    router = args.router or meta.get("default_router") or "classifier"
    routers = dict(meta.get("routers") or {})
    if "edge_router" in meta:  # files written before routers were a plugin kind
        routers.setdefault("edge", meta["edge_router"])
    table = routers.get("edge")
    calibrate = (
        f"calibrate it with `classsr calibrate PHOTOS/ --model {args.model} -o "
        "routed.safetensors`, then pass --model routed.safetensors"
    )
    if router == "classifier" and table is None:
        raise ClassSRError(
            f"--tolerance needs a calibrated edge table and {args.model} has none; {calibrate} "
            "(or give --budget instead)"
        )
    if router == "classifier":
        raise ClassSRError(
            f"--tolerance cannot be honoured by the classifier router ({args.model}'s default); "
            "add --router edge to route by its calibrated edge table, or give --budget"
        )
    if router == "edge" and table is None:
        raise ClassSRError(
            f"--router edge needs a calibrated edge table and {args.model} has none; {calibrate}"
        )
    if router == "edge" and not (table or {}).get("curve"):
        raise ClassSRError(
            f"{args.model}'s edge table has no tolerance curve (calibrated before --tolerance "
            f"existed); {calibrate} again (or give --budget instead)"
        )


def _probe_tolerance(model, args, opts) -> None:
    """--tolerance with a router this command does not know (a plugin's): route one blank
    patch, once, to ask whether it can honour a tolerance, before any image."""
    import torch

    from classsr_core.engine.pipeline import plan_routes
    from classsr_core.errors import ClassSRError

    if args.tolerance is None or (args.router or model.default_router) in (
        None,
        "classifier",
        "edge",
    ):
        return
    p = int(model.patch_size)
    blank = torch.zeros(1, int(model.in_channels), p, p)
    scores = plan_routes(model, blank, opts).scores
    if scores is None:
        return
    if scores.tolerance_price is None:
        raise ClassSRError(
            f"router {args.router or model.default_router!r} cannot honour --tolerance on "
            f"{args.model}: it has no calibrated error estimate; give --budget instead"
        )
    scores.tolerance_price(float(args.tolerance))


def _check_tiling(args, meta) -> None:
    """--patch / --stride that could only fail per image are refused once, up front."""
    from classsr_core.base.defaults import recorded_mode
    from classsr_core.errors import ClassSRError

    model_patch = int(meta["model"].get("patch_size", 32))
    model_stride = int(meta["model"].get("stride", 28))
    mode = args.mode or recorded_mode(meta)
    patch = args.patch if args.patch is not None else model_patch
    if args.stride is not None and args.stride > patch:
        raise ClassSRError(
            f"--stride {args.stride} is larger than the patch size {patch}: the patches would "
            f"leave gaps; give --stride at most {patch}"
        )
    if args.stride is None and mode == "patches" and model_stride > patch:
        raise ClassSRError(
            f"--patch {patch} is smaller than the model's stride {model_stride}: the patches "
            f"would leave gaps; give --stride too (at most {patch})"
        )


def _tiling(args, model, height: int, width: int) -> tuple[int | None, int | None]:
    """--patch and --stride for one LR image of ``height x width``: a patch larger than the
    image (and than the model's own patch) is cut to the image's longer side, so that one
    patch covers the image padded to a square, instead of padding it to the patch (--patch
    4096 on a 64x48 image padded it to 4096x4096: 14 GB)."""
    if args.patch is None:
        return None, args.stride
    side = max(int(height), int(width), int(model.patch_size))
    if args.patch <= side:
        return args.patch, args.stride
    return side, None if args.stride is None else min(args.stride, side)


def _load(args, job):
    from classsr_core.model.loading import load_model

    device = str(job.device) if job.distributed else args.device
    return load_model(args.model, device=device, trust_code=args.trust_code)


def _process(args, job) -> int:
    import time

    from classsr_core.commands import jobs
    from classsr_core.engine import check_router
    from classsr_core.engine.bands import check_streaming
    from classsr_core.engine.pipeline import check_options
    from classsr_core.errors import ClassSRError

    t_start = time.perf_counter()
    error = None
    try:
        files, model, scale, task, all_items, items, report, notes = _check(args, job)
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

    if job.is_main:
        for note in notes:
            print(f"classsr {args.command}: {note}", file=sys.stderr)
    if model is None:
        model = _load(args, job)
    check_router(model, args.router)  # a model without an edge table fails once, up front
    # The options of every image, built once: wrong ones (an option the executor does not
    # take, an executor that cannot stream the images to stream) fail once, up front.
    opts = engine_options(args)
    check_options(model, opts)
    if any(it.stream for it in items):
        check_streaming(model, opts)
    _probe_tolerance(model, args, opts)
    ran = _ran(args, model)
    if job.is_main and not args.json:
        print(
            f"classsr {args.command}: {ran['model']}, {ran['router']} router, {ran['mode']} "
            "mode" + (" (the model's defaults)" if args.mode is None else ""),
            file=sys.stderr,
        )
    knobs = {"budget": args.budget, "tolerance": args.tolerance}
    if args.budget is not None and args.budget_scope == "folder":
        # One price for the whole job: rank 0 routes every image (no branch runs) and
        # hands its price to the others. Skipped images count too, so that a resumed job
        # routes its remaining images as the uninterrupted job would have.
        price, error = None, None
        if job.is_main:
            try:
                price = _folder_price(model, args, opts, all_items)
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
    reports, failed = [], []
    said: set[str] = set()
    for i in shares[job.rank]:
        it = items[i]
        try:
            with _warnings_to(progress, args.command, it.src, said):
                row = _one(args, model, opts, knobs, it, task, scale)
        except (ClassSRError, OSError, RuntimeError, ValueError, MemoryError) as exc:
            # One bad file (unreadable, too large, out of memory, the disk full) must not
            # stop the folder.
            message = str(exc) if str(it.src) in str(exc) else f"{it.src}: {exc}"
            progress.write(f"classsr {args.command}: {message}", file=sys.stderr)
            progress.done_one()
            failed.append(
                {
                    **_known(it, task, scale),
                    **ran,
                    "status": "failed",
                    "error": message,
                    "rank": job.rank,
                }
            )
            continue
        row = _ordered({**ran, **row, "status": "written", "rank": job.rank})
        reports.append(row)
        if not args.json and not job.distributed:
            progress.write(_line(row))
        progress.done_one()
    progress.finish()

    gathered = job.all_gather((reports, failed))
    order = {str(it.src): k for k, it in enumerate(items)}
    reports = sorted((r for rs, _ in gathered for r in rs), key=lambda r: order[r["input"]])
    failed = [f for _, fs in gathered for f in fs]
    status = 1 if failed else 0
    if job.is_main:
        wall = time.perf_counter() - t_start
        _finish(args, job, files, reports, len(failed), skipped, report, wall)
        if report is not None and not _write_report(
            args, report, all_items, reports, failed, task, scale, ran
        ):
            status = 1
    return status


@contextlib.contextmanager
def _warnings_to(progress, command: str, src: Path, said: set[str]):
    """classsr's own warnings of one image as lines above the progress bar (not through
    it): a budget that cannot be met, per image (it says what the image spends); a
    device's, once for the job."""
    import warnings

    from classsr_core.errors import BudgetWarning, DeviceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, BudgetWarning):
            progress.write(f"classsr {command}: warning: {src}: {w.message}", file=sys.stderr)
        elif issubclass(w.category, DeviceWarning):
            if str(w.message) not in said:
                said.add(str(w.message))
                progress.write(f"classsr {command}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _known(it: _Item, task: str, scale: int) -> dict[str, Any]:
    """What the report says of an image before (or without) processing it."""
    row = {"input": str(it.src), "output": str(it.outs[0]), "task": task, "scale": scale}
    if len(it.outs) > 1:
        row["class_map"] = str(it.outs[1])
    return row


def _ran(args, model) -> dict[str, Any]:
    """What runs on every image of the job: the model, the router and the mode it resolves
    to (the model's own defaults where the options leave them unset), and the knobs."""
    from classsr_core.base.defaults import default_mode
    from classsr_core.engine.pipeline import get_router

    return {
        "model": str(args.model),
        "router": get_router(model, args.router).name,
        "mode": default_mode(model, args.mode),
        "budget": args.budget,
        "budget_scope": args.budget_scope if args.budget is not None else None,
        "tolerance": args.tolerance,
    }


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the keys of :data:`ROW_KEYS` first, in their order, then the rest."""
    first = {k: row[k] for k in ROW_KEYS if k in row}
    return {**first, **{k: v for k, v in row.items() if k not in first}}


def _skipped_row(
    it: _Item, earlier: dict[str, Any] | None, task: str, scale: int, ran=None
) -> dict:
    """The report line of an image skipped because its outputs exist: the line of the run
    that wrote them when the old report has it, else what is known now (its output's
    size from the header)."""
    import contextlib

    from classsr_core.io.streams import image_size

    row = {**(ran or {}), **_known(it, task, scale)}
    if earlier is not None and earlier.get("output") == row["output"]:
        row = {**row, **earlier, **_known(it, task, scale)}
    if "size" not in row:
        # The size is a courtesy: the file exists, that is what counts.
        with contextlib.suppress(Exception):
            row["size"] = list(image_size(it.outs[0]))
    row["status"] = "skipped"
    row.pop("error", None)
    return _ordered(row)


def _write_report(args, report: Path, all_items, reports, failed, task, scale, ran) -> bool:
    """One line per image of the job, in the job's order, each with its ``status``
    (``written``, ``skipped``, ``failed``): a resumed job's report lists the whole job.
    ``False`` (and one line on stderr) when it cannot be written: a full disk, say."""
    from classsr_core.commands import jobs

    rows = {r["input"]: r for r in [*reports, *failed]}
    earlier = None
    lines = []
    for it in all_items:
        row = rows.get(str(it.src))
        if row is None:  # skipped: its outputs exist
            if earlier is None:
                earlier = {r.get("input"): r for r in jobs.read_report(report)}
            row = _skipped_row(it, earlier.get(str(it.src)), task, scale, ran)
        lines.append(_ordered(row))
    try:
        jobs.write_report(report, lines)
    except OSError as exc:  # not a traceback after the work is done
        print(
            f"classsr {args.command}: error: {exc}; the report was not written",
            file=sys.stderr,
        )
        return False
    return True


def _finish(args, job, files, reports, failures, skipped, report, wall) -> None:
    """Print the results (lines, --json, the summary)."""
    if job.distributed and not args.json:
        for row in reports:
            print(_line(row))
    if args.json:  # the report's objects (ROW_KEYS), for the images written now
        print(json.dumps(reports, indent=2))
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


def engine_options(args):
    """The engine's options of the job, from its flags, once: what every image runs with
    (each image adds its tiling and the routing knobs). ``--halo`` and ``--mode-option
    NAME=VALUE`` are the executor's options, validated by the executor."""
    from classsr_core.engine.options import InferOptions
    from classsr_core.errors import ClassSRError

    executor_options = dict(getattr(args, "mode_option", None) or [])
    if args.halo is not None:
        if "halo" in executor_options:
            raise ClassSRError("give --halo or --mode-option halo=N, not both")
        executor_options["halo"] = args.halo
    return InferOptions(
        mode=args.mode,
        router=args.router,
        batch_size=args.batch_size,
        amp=args.amp,
        executor_options=executor_options,
    )


def _image_options(args, opts, knobs, tiling=(None, None), stream: bool = False):
    """``opts`` for one image: its tiling and the routing knobs; band sizes when streamed."""
    from classsr_core.engine.bands import BandOptions
    from classsr_core.engine.options import InferOptions

    one = InferOptions.build(opts, patch_size=tiling[0], stride=tiling[1], **knobs)
    return BandOptions.of(one, band_rows=args.band_rows) if stream else one


def _one(args, model, opts, knobs, it: _Item, task: str, scale: int) -> dict[str, Any]:
    """One image, in memory or (``it.stream``) band by band; its report row."""
    import torch

    from classsr_core.analysis.visualize import result_overlay
    from classsr_core.io.images import Image, read_image, resize_alpha, write_image

    row = _known(it, task, scale)
    if it.stream:
        return {**row, **_one_streamed(args, model, opts, knobs, it)}
    img = read_image(it.src, max_pixels=args.max_pixels)
    device = next(model.parameters()).device
    x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].to(device)
    tiling = _tiling(args, model, *img.rgb.shape[:2])
    result = model.infer(x, options=_image_options(args, opts, knobs, tiling))
    sr = result.output[0].permute(1, 2, 0).cpu().numpy()
    alpha = resize_alpha(img.alpha, model.scale) if img.alpha is not None else None
    if args.outscale is not None:
        size = (round(img.rgb.shape[0] * args.outscale), round(img.rgb.shape[1] * args.outscale))
        sr = resize_to(sr, size)
        alpha = resize_to(alpha, size) if alpha is not None else None
    write_image(it.outs[0], Image(sr, alpha, img.grey, img.max_value), quality=args.quality)
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
        "router": result.router,
        "mode": result.mode,
    }


def resize_to(image, size: tuple[int, int]):
    """``image`` (float HWC or HW in [0, 1]) resized to ``size`` (height, width): Lanczos when
    it grows, area when it shrinks (no aliasing), clipped to [0, 1]."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    grows = size[0] * size[1] > h * w
    interp = cv2.INTER_LANCZOS4 if grows else cv2.INTER_AREA
    out = cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=interp)
    return np.clip(out, 0.0, 1.0).astype(image.dtype, copy=False)


def _one_streamed(args, model, opts, knobs, it: _Item) -> dict[str, Any]:
    """Band by band (classsr_core.engine.bands): routed once for the whole image, run and
    written one band at a time."""
    import time

    import numpy as np

    from classsr_core.engine.bands import route, stream_bands
    from classsr_core.io.streams import open_lr, write_bands

    t0 = time.perf_counter()
    source = open_lr(it.src, max_pixels=args.max_pixels)
    tiling = _tiling(args, model, source.height, source.width)
    opts = _image_options(args, opts, knobs, tiling, stream=True)
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


def _folder_price(model, args, opts, items) -> float:
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
                source = open_lr(it.src, args.max_pixels)
                tiling = _tiling(args, model, source.height, source.width)
                plans.append(route(model, source, _image_options(args, opts, {}, tiling, True))[0])
                continue
            img = read_image(it.src, max_pixels=args.max_pixels)
        except (ClassSRError, OSError, ValueError, MemoryError):
            continue
        x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None]
        tiling = _tiling(args, model, *img.rgb.shape[:2])
        plans.append(plan_routes(model, x, _image_options(args, opts, {}, tiling)))
    return folder_price(plans, args.budget)


run = process
