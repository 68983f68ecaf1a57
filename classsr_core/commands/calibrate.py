"""``classsr calibrate``: measure a model's edge table on clean photos and save it with the
model, so that ``--router edge`` can route without the classifier (docs/performance.md)."""

from __future__ import annotations

from classsr_core.commands.options import add_trust_code, tolerance_arg
from classsr_core.commands.sweep import task_and_photos
from classsr_core.commands.upscale import DEFAULT_MODEL


def add_parser(sub):
    p = sub.add_parser(
        "calibrate", help="measure the edge-routing table of a model on a folder of photos"
    )
    p.add_argument(
        "folders",
        nargs="+",
        metavar="FOLDER",
        help="clean images the model is not validated on (several folders: one set)",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="name or .safetensors path")
    p.add_argument("-o", "--output", required=True, help="where to save the calibrated model")
    p.add_argument(
        "--task", default=None, help="task name (default: the checkpoint's, else sr at its scale)"
    )
    p.add_argument(
        "--widths",
        default=None,
        help="cut these branch widths (e.g. 0,32,48) from a shared-weight model first",
    )
    p.add_argument("--bins", type=int, default=16, help="edge-score bins (quantiles)")
    p.add_argument(
        "--statistic",
        choices=("gradient-max", "laplacian-mean"),
        default="gradient-max",
        help="the edge score: the largest colour gradient in a patch (default; sees thin "
        "and colour edges) or the mean |Laplacian| of its luma (the first tables')",
    )
    p.add_argument(
        "--make-default",
        action="store_true",
        help="record the edge router as the model's default (infer(router=None), and "
        "`classsr upscale` without --router)",
    )
    p.add_argument(
        "--tolerance",
        type=tolerance_arg,
        default=0.05,
        help="dB the default routing may lose against the widest branch on these photos",
    )
    add_trust_code(p)
    return p


def run(args) -> int:
    import numpy as np
    import torch

    from classsr_core.commands.outputs import check_outputs, model_files
    from classsr_core.errors import InputError
    from classsr_core.io.images import list_images
    from classsr_core.model.loading import load_model, save_model
    from classsr_core.routing.calibration import calibrate
    from classsr_core.tasks import degraded_pairs

    # Before any work: -o may be neither a photo nor the model it starts from.
    inputs = list_images(args.folders) + model_files(args.model)
    check_outputs(inputs, [(args.output, "-o")], input_dirs=args.folders)
    model = load_model(args.model, device="cpu", trust_code=args.trust_code)
    meta = model.checkpoint_meta
    task, photos = task_and_photos(model, args.task, args.folders)
    if args.widths:
        from classsr_core.model.loading import cut_widths

        try:
            widths = [int(w) for w in args.widths.split(",")]
        except ValueError:
            raise InputError(f"--widths {args.widths!r}: give integers like 0,32,48") from None
        model = cut_widths(model, widths)

    # The engine's inputs are 8-bit images: calibrate on the same.
    pairs = [
        (x, torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None])
        for clean, x in degraded_pairs(task, photos, uint8=True)
    ]
    table = calibrate(
        model, pairs, bins=args.bins, tolerance_db=args.tolerance, statistic=args.statistic
    )
    model.edge_table = table
    if args.make_default:
        model.default_router = "edge"
    extra = {
        k: v
        for k, v in meta.items()
        if k not in ("model", "edge_router", "routers", "default_router", "calibrated_on")
    }
    extra["calibrated_on"] = {"folders": list(args.folders), "images": len(photos)}
    if args.widths:
        extra["cut_from"] = {"model": str(args.model), "widths": meta["model"]["widths"]}
    save_model(model, args.output, extra)
    print(
        f"{len(photos)} images, {table.patches} patches, {len(table.mse)} bins; default price "
        f"{table.price:.3g} (loses <= {table.tolerance_db:g} dB against the widest branch "
        f"on these photos); wrote {args.output}"
    )
    return 0
