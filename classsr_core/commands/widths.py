"""``classsr widths``: time a backbone at many widths on this device and suggest branch
widths that turn saved FLOPs into saved time (see :mod:`classsr_core.analysis.widths`)."""

from __future__ import annotations

import json

from classsr_core.commands.flops import _ints
from classsr_core.errors import InputError


def add_parser(sub):
    p = sub.add_parser(
        "widths",
        help="measure time per patch by width and suggest hardware-aligned branch widths",
        description="Times one LR patch of BACKBONE at every width from --step to the "
        "widest requested, in steps of --step, on the chosen device; prints time and FLOPs "
        "shares of the widest, the widths snapped to --align, and the measured most "
        "efficient widths near each requested one.",
    )
    p.add_argument("--backbone", required=True, help="registered backbone (classsr plugins)")
    p.add_argument("--widths", type=_ints, required=True, help="requested widths, e.g. 36,52,64")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    p.add_argument("--patch", type=int, default=32, help="LR patch size (default 32)")
    p.add_argument("--step", type=int, default=4, help="measure every STEP channels (default 4)")
    p.add_argument("--align", type=int, default=16, help="snap to multiples of this (16)")
    p.add_argument("--window", type=float, default=0.2, help="search +-20%% around each width")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per width (minimum kept)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(args) -> int:
    import torch

    from classsr_core.analysis.widths import efficient_widths, measure_widths, snap_widths

    if args.step < 1 or args.reps < 1:
        raise InputError("--step and --reps must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    widest = max(args.widths)
    candidates = sorted(set(range(args.step, widest + 1, args.step)) | set(args.widths))
    measured = measure_widths(
        args.backbone,
        candidates,
        scale=args.scale,
        device=args.device,
        patch=args.patch,
        reps=args.reps,
    )
    try:
        snapped = snap_widths(args.widths, args.align)
    except InputError as exc:  # e.g. widths narrower than one block: still show the table
        snapped = str(exc)
    try:
        efficient = efficient_widths(args.widths, measured, args.window)
    except InputError as exc:
        efficient = str(exc)
    top = measured[widest]
    rows = [
        {
            "width": w,
            "ms_per_patch": 1000 * m["seconds"],
            "time_share": m["seconds"] / top["seconds"],
            "flops_share": m["flops"] / top["flops"],
        }
        for w, m in sorted(measured.items())
    ]
    report = {"requested": args.widths, "snapped": snapped, "efficient": efficient, "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.backbone} x{args.scale}, {args.patch}x{args.patch} LR patch")
    print("| width | ms / patch | time / widest | FLOPs / widest |")
    print("|---|---|---|---|")
    for r in rows:
        mark = " *" if r["width"] in args.widths else ""
        print(
            f"| {r['width']}{mark} | {r['ms_per_patch']:.3f} | {r['time_share']:.2f} "
            f"| {r['flops_share']:.2f} |"
        )
    print(f"requested (*): {args.widths}")
    print(f"snapped to {args.align}: {snapped}")
    print(f"most FLOPs per second within {args.window:.0%}: {efficient}")
    return 0
