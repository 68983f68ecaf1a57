"""``classsr flops``: measured FLOPs and parameters per LR patch, classifier and branches."""

from __future__ import annotations

import argparse
import json

from classsr_core.commands.options import add_trust_code
from classsr_core.errors import InputError

CONVENTION_NOTES = {
    "fvcore": "one multiply-add = 1 FLOP; transposed convs at their input size (true cost)",
    "paper": "ClassSR's table: 2 x multiply-adds; transposed convs as convs at the HR size",
}


def add_parser(sub):
    p = sub.add_parser(
        "flops",
        help="FLOPs and parameters per patch of a backbone's branches and the classifier",
        description="Count FLOPs with fvcore on the real modules, per LR patch. Without "
        "--convention both conventions are printed (see docs/flops.md).",
    )
    p.add_argument(
        "--backbone",
        required=True,
        help="registered backbone (classsr plugins), or your own class as module:ClassName "
        "(with --width-arg and --trust-code)",
    )
    p.add_argument("--widths", type=_ints, help="branch widths, e.g. 16,36,56")
    p.add_argument("--depths", type=_ints, help="branch depths (with --widths: pairs)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    p.add_argument("--patch", type=int, default=32, help="LR patch size (default 32)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument(
        "--backbone-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="more keyword arguments for the backbone, as a JSON object, e.g. '{\"nb\": 10}'",
    )
    p.add_argument(
        "--width-arg",
        metavar="NAME",
        help="the keyword that sets the width, for a backbone that declares none (e.g. nf)",
    )
    p.add_argument(
        "--depth-arg",
        metavar="NAME",
        help="the keyword that sets the depth, for a backbone that declares none",
    )
    add_trust_code(p)
    p.add_argument(
        "--convention",
        choices=("fvcore", "paper"),
        help="fvcore: multiply-adds; paper: ClassSR's 2 x multiply-adds (default: both)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(args) -> int:
    from classsr_core.base.flops import model_costs
    from classsr_core.model.wrapper import ClassWrapper

    if args.widths is None and args.depths is None:
        raise InputError("give --widths (e.g. 16,36,56) and/or --depths")
    kwargs: dict = {}
    if args.widths is not None and args.depths is not None:
        if len(args.widths) != len(args.depths):
            raise InputError(
                f"--widths has {len(args.widths)} values and --depths {len(args.depths)}; "
                "give one (width, depth) per branch"
            )
        kwargs["width_depths"] = list(zip(args.widths, args.depths))
    elif args.widths is not None:
        kwargs["widths"] = args.widths
    else:
        kwargs["depths"] = args.depths
    if args.patch < 1:
        raise InputError(f"--patch must be positive, got {args.patch}")
    try:
        model = ClassWrapper(
            args.backbone,
            scale=args.scale,
            in_channels=args.in_channels,
            patch_size=args.patch,
            stride=args.patch,
            backbone_kwargs=args.backbone_kwargs,
            width_arg=args.width_arg,
            depth_arg=args.depth_arg,
            trust_code=args.trust_code,
            **kwargs,
        )
    except TypeError as exc:  # e.g. a keyword the backbone does not take
        if not args.backbone_kwargs:
            raise
        raise InputError(f"--backbone-kwargs {json.dumps(args.backbone_kwargs)}: {exc}") from None
    conventions = [args.convention] if args.convention else ["fvcore", "paper"]
    costs = {c: model_costs(model, args.patch, c) for c in conventions}
    main = costs[conventions[0]]
    result = {
        "backbone": args.backbone,
        "convention": conventions[0],
        "patch": args.patch,
        "scale": args.scale,
        "classifier": dict(main["classifier"]),
        "branches": [dict(b) for b in main["branches"]],
        "unsupported": main["unsupported"],
    }
    if len(conventions) > 1:  # both: keep the documented shape, add the other counts
        result["classifier"]["flops_by_convention"] = {
            c: costs[c]["classifier"]["flops"] for c in conventions
        }
        for i, b in enumerate(result["branches"]):
            b["flops_by_convention"] = {c: costs[c]["branches"][i]["flops"] for c in conventions}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_table(result, costs, conventions, model)
    return 0


def _print_table(result, costs, conventions, model) -> None:
    p = result["patch"]
    print(
        f"{result['backbone']} x{result['scale']}: {len(result['branches'])} branch(es), "
        f"FLOPs per {p}x{p} LR patch"
    )
    rows = []
    if model.classifier is not None:
        rows.append(("classifier", result["classifier"]["params"], "classifier", None))
    for i, b in enumerate(result["branches"]):
        label = ", ".join(f"{k} {b[k]}" for k in ("width", "depth") if b.get(k) is not None)
        rows.append((f"branch {i + 1}" + (f" ({label})" if label else ""), b["params"], "b", i))
    name_w = max(len(r[0]) for r in rows)
    head = f"{'':<{name_w}}  {'params':>10}" + "".join(f"  {c:>10}" for c in conventions)
    print(head)
    for name, params, kind, i in rows:
        cells = []
        for c in conventions:
            part = costs[c]["classifier"] if kind == "classifier" else costs[c]["branches"][i]
            cells.append(f"  {_human(part['flops']):>10}")
        print(f"{name:<{name_w}}  {params:>10,}" + "".join(cells))
    widest = costs[conventions[0]]["branches"][-1]["flops"]
    if widest > 0 and len(result["branches"]) > 1:
        ratios = " / ".join(f"{b['flops'] / widest:.2f}" for b in costs[conventions[0]]["branches"])
        print(f"branch / widest ({conventions[0]}): {ratios}")
    for c in conventions:
        print(f"{c}: {CONVENTION_NOTES[c]}")
    if result["unsupported"]:
        ops = ", ".join(f"{k} (x{v})" for k, v in sorted(result["unsupported"].items()))
        print(f"warning: ops not counted (no handler): {ops}")


def _human(value: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= div:
            return f"{value / div:.4g}{unit}"
    return f"{value:.4g}"


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 16,36,56, got {text!r}"
        ) from None


def _json_object(text: str) -> dict:
    """``--backbone-kwargs``: a JSON object, checked by argparse (exit 2, one line)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({exc}); give an object such as '{{\"nb\": 10}}'"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is JSON but not an object; give keyword: value pairs such as "
            "'{\"nb\": 10}'"
        )
    return value
