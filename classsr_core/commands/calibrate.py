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
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="name, .safetensors path, or a pretrained network file (.pth)",
    )
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
        choices=("laplacian-energy", "gradient-max", "laplacian-mean"),
        default="laplacian-energy",
        help="the edge score: the high-frequency energy of a patch (mean squared Laplacian "
        "of its luma; default: ranks what a network adds best on natural photos), its "
        "largest colour gradient, or its mean |Laplacian| (the first tables')",
    )
    p.add_argument(
        "--allocation",
        choices=("relative", "price"),
        default="relative",
        help="relative (default): a tolerance is each image's own dB loss, so each image "
        "gets a loss budget in proportion to its expected error; price: one price per "
        "multiply-add for all images (the tables before 0.2)",
    )
    p.add_argument(
        "--make-default",
        action="store_true",
        help="record the edge router and the regions mode as the model's defaults "
        "(infer(router=None, mode=None), and `classsr upscale` without --router / --mode)",
    )
    p.add_argument(
        "--tolerance",
        type=tolerance_arg,
        default=0.05,
        help="dB the default routing may lose against the widest branch on these photos",
    )
    p.add_argument(
        "--halo-loss",
        type=float,
        default=None,
        help="also record the narrowest region halo that loses at most this many dB against "
        "each branch's full receptive field on these photos, every tile isolated (default: a "
        "tenth of --tolerance; 0: keep the full fields, every tile exactly the whole-image "
        "output)",
    )
    p.add_argument(
        "--worst-share",
        type=float,
        default=None,
        help="the tolerance curve keeps all but this share of the calibration images (the "
        "worst ones, rounded down) within twice the tolerance (default 0.05: 19 in 20; "
        "0: every image)",
    )
    p.add_argument(
        "--flat-limit",
        type=float,
        default=None,
        help="an image with more than this share of flat pixels (a render: flat colour "
        "fields, sharp edges) is routed at the tolerance curve's lowest point, whatever the "
        "tolerance (default 0.5; 1: no limit)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-hr",
        action="store_true",
        help="a pretrained network file (--model model.pth): the photos are inputs, not HR; "
        "measure each branch against the network's own whole-image output "
        "(docs/bring-your-own.md)",
    )
    add_trust_code(p)
    return p


def run(args) -> int:
    import sys

    import numpy as np
    import torch

    from classsr_core.commands.outputs import check_outputs, model_files
    from classsr_core.errors import InputError
    from classsr_core.io.inputs import list_inputs
    from classsr_core.model.loading import load_model, save_model
    from classsr_core.routing.calibration import WORST_SHARE, calibrate
    from classsr_core.routing.edge import FLAT_LIMIT
    from classsr_core.tasks import degraded_pairs

    if args.halo_loss is None:
        # The halo may spend a tenth of the tolerance where every tile is isolated (the most
        # seams a routing can have); on real routings it spends far less (docs/routing.md).
        args.halo_loss = args.tolerance / 10

    # Before any work: -o may be neither a photo nor the model it starts from.
    files, notes = list_inputs(args.folders)
    inputs = files + model_files(args.model)
    check_outputs(inputs, [(args.output, "-o")], input_dirs=args.folders)
    for note in notes:
        print(f"classsr calibrate: {note}", file=sys.stderr)
    model = load_model(args.model, device="cpu", trust_code=args.trust_code)
    meta = model.checkpoint_meta
    task, photos = task_and_photos(model, args.task, args.folders, files)
    if args.widths:
        from classsr_core.model.loading import cut_widths

        try:
            widths = [int(w) for w in args.widths.split(",")]
        except ValueError:
            raise InputError(f"--widths {args.widths!r}: give integers like 0,32,48") from None
        model = cut_widths(model, widths)

    from classsr_core.model.pretrained import calibration_pairs, is_pretrained_model

    pretrained = is_pretrained_model(model)  # a network file (docs/bring-your-own.md)
    if args.no_hr and not pretrained:
        raise InputError("--no-hr calibrates a pretrained network file (--model model.pth)")
    if pretrained:
        pairs, floors = calibration_pairs(model, task, photos, hr=not args.no_hr)
    else:
        # The engine's inputs are 8-bit images: calibrate on the same.
        pairs = [
            (x, torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None])
            for clean, x in degraded_pairs(task, photos, uint8=True)
        ]
    from tqdm import tqdm

    bar = tqdm(pairs, desc="calibrate", unit="img", disable=args.no_progress, file=sys.stderr)
    table = calibrate(
        model,
        bar,
        bins=args.bins,
        tolerance_db=args.tolerance,
        statistic=args.statistic,
        allocation=args.allocation,
        worst_share=WORST_SHARE if args.worst_share is None else args.worst_share,
        flat_limit=FLAT_LIMIT if args.flat_limit is None else args.flat_limit,
    )
    # The router that keeps this kind of state (the registry says which: the one whose
    # ``state_type`` the table is), not a name assumed here.
    router = router_keeping(table)
    model.router_states[router] = table
    if pretrained:
        from classsr_core.commands.calibrate_pretrained import finish

        finish(model, table, pairs, floors, args)
    elif args.halo_loss > 0:
        from classsr_core.routing.calibration import measure_halo

        halo = measure_halo(model, pairs[:8], max_loss_db=args.halo_loss)
        if halo is not None:
            model.defaults["halo"] = halo
    else:
        model.defaults.pop("halo", None)
    if args.make_default:
        # The fast path (docs/performance.md): the calibrated table's router routes, and
        # same-class patches run merged into tiles with the halo measured above.
        model.default_router = router
        model.defaults["mode"] = "regions"
    extra = {
        k: v
        for k, v in meta.items()
        if k not in ("model", "edge_router", "routers", "default_router", "calibrated_on")
    }
    extra["calibrated_on"] = {"folders": list(args.folders), "images": len(photos)}
    if args.widths:
        extra["cut_from"] = {"model": str(args.model), "widths": meta["model"]["widths"]}
    save_model(model, args.output, extra)
    if "halo" in model.defaults:
        how_halo = f"region halo {model.defaults['halo']} LR px (<= {args.halo_loss:g} dB); "
    else:
        how_halo = ""
    how = (
        "each image priced by its own expected error"
        if table.allocation == "relative"
        else f"default price {table.price:.3g}"
    )
    if args.make_default:
        how_halo = f"defaults: {router} router, regions mode; {how_halo}"
    print(
        f"{len(photos)} images, {table.patches} patches, {len(table.mse)} bins "
        f"({table.statistic}); {how_halo}{how} (loses <= {table.tolerance_db:g} dB against "
        f"the widest branch on these photos); wrote {args.output}"
    )
    return 0


def router_keeping(state) -> str:
    """The name of the registered router whose calibrated state ``state`` is (its
    ``state_type``): the one defined beside the state's class when several keep that type
    (a plugin may reuse the edge table), else the first by name."""
    from classsr_core.errors import InputError
    from classsr_core.plugins import get_registry

    registry = get_registry()
    names = [
        name
        for name in registry.names("routers")
        if getattr(registry.get("routers", name).factory, "state_type", None) is type(state)
    ]
    if not names:
        raise InputError(
            f"no registered router keeps a {type(state).__name__} (`classsr plugins` lists "
            "the routers); is a router plugin blocked by CLASSSR_DISABLE_PLUGINS?"
        )
    home = type(state).__module__
    beside = [n for n in names if registry.get("routers", n).factory.__module__ == home]
    return (beside or names)[0]
