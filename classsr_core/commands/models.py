"""``classsr models``: the models shipped inside the package, the commands' default marked."""

from __future__ import annotations

import json


def add_parser(sub):
    from classsr_core.commands.upscale import DEFAULT_MODEL

    p = sub.add_parser(
        "models",
        help=f"list the shipped models (* marks the default, {DEFAULT_MODEL})",
    )
    p.add_argument("--json", action="store_true")
    return p


def _rows() -> list[dict]:
    from classsr_core.base.defaults import recorded_mode
    from classsr_core.commands.upscale import DEFAULT_MODEL
    from classsr_core.io.checkpoint import read_meta, shipped_models

    rows = []
    for name, path in shipped_models().items():
        meta = read_meta(path)  # the header only: no tensors, no torch
        spec = meta["model"]
        card = meta.get("card", {})
        widths = spec.get("widths")
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_MODEL,
                "backbone": spec["backbone"],
                "widths": widths,
                "scale": spec["scale"],
                "task": card.get("task", "sr"),
                # What infer() runs with no options: the recorded router and mode.
                "router": meta.get("default_router")
                or ("classifier" if widths and len(widths) > 1 else None),
                "mode": recorded_mode(meta),
                "size_kb": round(path.stat().st_size / 1024, 1),
                "trained_on": card.get("trained_on", "unknown"),
                "iterations": card.get("iterations"),
            }
        )
    return rows


def run(args) -> int:
    from classsr_core.commands.upscale import DEFAULT_MODEL

    rows = _rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no shipped models")
        return 0
    table = [("", "NAME", "BACKBONE", "WIDTHS", "SCALE", "ROUTER", "MODE", "SIZE", "TRAINED ON")]
    for r in rows:
        widths = ",".join(str(w) for w in r["widths"] or [])
        table.append(
            (
                "*" if r["default"] else "",
                r["name"],
                r["backbone"],
                widths,
                f"x{r['scale']}",
                r["router"] or "-",
                r["mode"],
                f"{r['size_kb']:.0f} KB",
                r["trained_on"],
            )
        )
    sizes = [max(len(row[k]) for row in table) for k in range(len(table[0]) - 1)]
    for row in table:
        cells = [c.ljust(n) if k != 7 else c.rjust(n) for k, (c, n) in enumerate(zip(row, sizes))]
        print("  ".join([*cells, row[-1]]).rstrip())
    if any(r["default"] for r in rows):
        print(
            f"\n* the default --model of upscale, run, sweep and calibrate ({DEFAULT_MODEL}); "
            "ROUTER and MODE: what infer() runs with no options"
        )
    return 0
