"""Print the params / FLOPs table of docs/backbones.md, measured on the real modules.

    .venv/bin/python benchmarks/backbone_table.py [--patch 32] [--scale 4]

For every paper backbone and width: parameters, FLOPs per LR patch in both conventions
(classsr_core.analysis.flops), and the paper's number beside the measured one.
"""

from __future__ import annotations

import argparse
import sys
import time

# The paper's table (paper convention, per 32x32 LR patch at x4), for the comparison column.
PAPER = {
    "fsrcnn": [141e6, 304e6, 468e6],
    "carn_m": [0.38e9, 0.77e9, 1.15e9],
    "srresnet": [1.66e9, 3.44e9, 5.20e9],
    "rcan": [10.33e9, 19.90e9, 32.60e9],
}


def _fmt(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= div:
            return f"{x / div:.4g}{unit}"
    return f"{x:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args()

    from classsr_core.analysis.flops import count_flops, count_params
    from classsr_core.model.classifier import ClassModule
    from classsr_core.plugins.registry import resolve

    shape = (1, 3, args.patch, args.patch)
    start = time.perf_counter()
    print(
        "| backbone | width | params | FLOPs, paper | paper's table | difference "
        "| FLOPs, fvcore (MACs) |"
    )
    print("|---|---|---|---|---|---|---|")
    clf = ClassModule(3)
    print(
        f"| Class-Module | - | {count_params(clf):,} | {_fmt(count_flops(clf, shape, 'paper'))} "
        f"| - | - | {_fmt(count_flops(clf, shape, 'fvcore'))} |"
    )
    whole = {}  # backbone -> parameters of the three-branch model, Class-Module included
    for name, table in PAPER.items():
        factory, meta = resolve("backbones", name)
        whole[name] = count_params(clf)
        for width, ref in zip(meta["paper_widths"], table):
            net = factory(scale=args.scale, **{meta["width_arg"]: width})
            whole[name] += count_params(net)
            paper = count_flops(net, shape, "paper")
            fvc = count_flops(net, shape, "fvcore")
            diff = (
                f"{100 * (paper - ref) / ref:+.2f}%"
                if args.scale == 4 and args.patch == 32
                else "-"
            )
            print(
                f"| {name} | {width} | {count_params(net):,} | {_fmt(paper)} | {_fmt(ref)} "
                f"| {diff} | {_fmt(fvc)} |"
            )
    models = ", ".join(f"{name} {n:,}" for name, n in whole.items())
    print(f"\nWhole three-branch models (Class-Module + branches), parameters: {models}.")
    print(f"(measured in {time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
