"""``classsr sweep``: PSNR against FLOPs over a range of budgets, as CSV and a PNG plot."""

from __future__ import annotations

from classsr_core.commands.options import add_engine_options, add_job_device, add_trust_code
from classsr_core.commands.upscale import DEFAULT_MODEL


def add_parser(sub):
    p = sub.add_parser("sweep", help="PSNR against FLOPs over budgets on a folder of images")
    p.add_argument("folder", help="clean (ground-truth) images; the model's task degrades them")
    p.add_argument("--model", default=DEFAULT_MODEL, help="name or .safetensors path")
    p.add_argument("--o-model", default=None, help="the -O model to mark on the plot")
    p.add_argument(
        "--task", default=None, help="task name (default: the checkpoint's, else sr at its scale)"
    )
    p.add_argument("--budgets", default="0.5:1.0:0.05", help="START:STOP:STEP or a,b,c")
    p.add_argument(
        "--tolerance",
        default=None,
        help="also sweep these tolerances (dB of expected loss against the widest branch, "
        "a,b,c), e.g. 0.02,0.05,0.1",
    )
    p.add_argument("-o", "--output", default="sweep", help="writes OUTPUT.csv and OUTPUT.png")
    add_engine_options(p)
    add_job_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_code(p)
    return p


def _budgets(spec: str) -> list[float]:
    import numpy as np

    from classsr_core.errors import InputError

    try:
        if ":" in spec:
            start, stop, step = (float(v) for v in spec.split(":"))
            return [round(b, 6) for b in np.arange(start, stop + step / 2, step)]
        return [float(v) for v in spec.split(",")]
    except ValueError:
        raise InputError(f"--budgets {spec!r}: give START:STOP:STEP or a,b,c") from None


def task_and_photos(
    model, task_name: str | None, folder: str | list[str], files: list | None = None
):
    """The task that degrades clean photos for ``model`` and the clean photos of ``folder``
    (``files``: already listed by :func:`~classsr_core.io.inputs.list_inputs`) as HWC
    float arrays; shared with ``classsr calibrate``. The task is ``task_name`` with its
    defaults, else the one the checkpoint was trained for (with its settings, e.g. the
    noise level), else sr at the model's scale."""
    from classsr_core.errors import InputError
    from classsr_core.io.images import read_image
    from classsr_core.io.inputs import list_inputs
    from classsr_core.plugins.registry import lookup

    trained = ((getattr(model, "checkpoint_meta", None) or {}).get("config") or {}).get("task")
    if task_name is None and trained:
        options = dict(trained)
        task_name = options.pop("name")
    else:
        task_name = task_name or ("sr" if model.scale > 1 else None)
        if task_name is None:
            raise InputError("a scale-1 model needs --task (denoise, deblock, ...)")
        options = {"scale": model.scale} if task_name == "sr" else {}
    task = lookup("tasks", task_name).factory(**options)
    folders = [folder] if isinstance(folder, str) else list(folder)
    if files is None:
        files = list_inputs(folders)[0]
    if not files:
        raise InputError(f"no images in {', '.join(folders)}")
    return task, [read_image(f).rgb for f in files]


def _tolerances(spec: str | None) -> list[float]:
    from classsr_core.errors import InputError

    if not spec:
        return []
    values = []
    for part in spec.split(","):
        try:
            v = float(part)
        except ValueError:
            v = float("nan")
        if not (v >= 0 and v != float("inf")):
            raise InputError(
                f"--tolerance {spec!r}: give dB of expected loss as numbers >= 0, e.g. 0.02,0.05"
            )
        values.append(v)
    return values


def run(args) -> int:
    """The command: under ``torchrun`` every rank measures its share of the images (balanced
    by pixel count) and rank 0 averages them all and writes the CSV and the plot."""
    from classsr_core.commands import jobs

    return jobs.run(args.device, lambda job: _run(args, job))


def _run(args, job) -> int:
    import sys

    from classsr_core.analysis.sweep import measure_images, plot, sweep_rows, write_csv
    from classsr_core.commands import jobs
    from classsr_core.commands.outputs import check_outputs, model_files
    from classsr_core.io.inputs import list_inputs
    from classsr_core.model.loading import load_model

    # Before any work: OUTPUT.csv / OUTPUT.png may be neither a photo nor a model file.
    photos, notes = list_inputs([args.folder])
    inputs = photos + model_files(args.model, args.o_model)
    outputs = [(f"{args.output}.csv", "-o (the CSV)"), (f"{args.output}.png", "-o (the plot)")]
    check_outputs(inputs, outputs, input_dirs=[args.folder])
    if job.is_main:
        for note in notes:
            print(f"classsr sweep: {note}", file=sys.stderr)
    device = str(job.device) if job.distributed else args.device
    model = load_model(args.model, device=device, trust_code=args.trust_code)
    o_model = (
        load_model(args.o_model, device=device, trust_code=args.trust_code)
        if args.o_model
        else None
    )
    task, images = task_and_photos(model, args.task, args.folder, photos)
    kw = {"o_model": o_model, "router": args.router, "tolerances": _tolerances(args.tolerance)}
    budgets = _budgets(args.budgets)
    shares = jobs.shard([img.shape[0] * img.shape[1] for img in images], job.world)
    progress = jobs.Progress(job, [len(s) for s in shares], "sweep", args.no_progress)
    mine = measure_images(
        model,
        images,
        task,
        budgets,
        mode=args.mode,
        indices=shares[job.rank],
        done=progress.done_one,
        **kw,
    )
    progress.finish()
    per_image = {i: v for part in job.all_gather(mine) for i, v in part.items()}
    if not job.is_main:
        return 0
    rows = sweep_rows(model, budgets, [per_image[i] for i in range(len(images))], **kw)
    write_csv(rows, f"{args.output}.csv")
    from classsr_core.base.defaults import default_mode

    mode = default_mode(model, args.mode)
    plot(rows, f"{args.output}.png", title=f"{args.model}, {mode} mode, on {len(images)} images")
    for r in rows:
        b = "" if r.budget is None else f"{r.budget:.2f}"
        print(f"{r.label:<7} {b:>5}  FLOPs {100 * r.flops_fraction:5.1f}%  PSNR {r.psnr:.3f} dB")
    print(f"{args.model}, {mode} mode; wrote {args.output}.csv and {args.output}.png")
    return 0
