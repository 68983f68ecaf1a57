"""``classsr models``: the models shipped inside the package."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("models", help="list the shipped models")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    from classsr_core.io.checkpoint import read_meta, shipped_models

    rows = []
    for name, path in shipped_models().items():
        meta = read_meta(path)  # the header only: no tensors, no torch
        spec = meta["model"]
        card = meta.get("card", {})
        rows.append(
            {
                "name": name,
                "backbone": spec["backbone"],
                "widths": spec.get("widths"),
                "scale": spec["scale"],
                "task": card.get("task", "sr"),
                "size_kb": round(path.stat().st_size / 1024, 1),
                "trained_on": card.get("trained_on", "unknown"),
                "iterations": card.get("iterations"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no shipped models")
    for r in [] if args.json else rows:
        print(
            f"{r['name']:<22} {r['backbone']} widths {r['widths']} x{r['scale']} "
            f"{r['size_kb']} KB  trained on {r['trained_on']}"
        )
    return 0
