"""How flat each image is, as the edge router sees it: the share of its LR pixels that are
flat (``classsr_core.routing.edge.flat_map``: no channel's 4-neighbour Laplacian reaches
half an 8-bit level), per image set, against the shipped tables' limit.

Run by hand (not a test), from the repository root, after the photo scripts of
docs/routing.md:

    .venv/bin/python benchmarks/flat_shares.py [--sets NAME=FOLDER[,FOLDER] ...]

The LR is what the routing benchmarks and ``classsr calibrate`` feed: MATLAB bicubic x1/4,
rounded to 8-bit levels. An image past the limit is routed at its table's lowest
calibrated point whatever the tolerance (docs/routing.md, "Renders").
"""

from __future__ import annotations

import argparse

import numpy as np

from classsr_core.io.images import list_images, read_image
from classsr_core.plugins.registry import lookup
from classsr_core.routing.edge import FLAT_LIMIT, flat_map
from classsr_core.tasks import degraded_pairs

SETS = (
    "calibration=data/photos/train,data/photos/calib,data/photos/natural/calib",
    "natural holdout=data/photos/natural/holdout",
    "natural whole=data/photos/natural/whole",
    "graphics holdout=data/photos/holdout",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), help="NAME=FOLDER[,FOLDER]")
    args = ap.parse_args()
    task = lookup("tasks", "sr").factory(scale=4)
    print(f"Flat limit of the shipped tables: {FLAT_LIMIT}.\n")
    print("| set | images | median | largest within the limit | past the limit (share flat) |")
    print("|---|---|---|---|---|")
    for spec in args.sets:
        name, folders = spec.split("=", 1)
        files = list_images(folders.split(","))
        if not files:
            raise SystemExit(f"no images in {folders}: run the photo scripts of docs/routing.md")
        pairs = degraded_pairs(task, [read_image(f).rgb for f in files], uint8=True)
        shares = [float(flat_map(lr.float()).mean()) for _, lr in pairs]
        order = np.argsort(shares)[::-1]
        past = [f"{files[i].stem} ({shares[i]:.2f})" for i in order if shares[i] > FLAT_LIMIT]
        within = [i for i in order if shares[i] <= FLAT_LIMIT]
        top = f"{shares[within[0]]:.2f} ({files[within[0]].stem})" if within else "-"
        past_text = ", ".join(past) or "-"
        print(f"| {name} | {len(files)} | {np.median(shares):.2f} | {top} | {past_text} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
