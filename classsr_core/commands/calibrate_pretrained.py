"""What ``classsr calibrate`` adds for a pretrained network file (``--model model.pth``): the
halo each network needs for tiling to cost at most 0.01 dB, the edge router as the default
(the classifier was never trained), and a plain word when nothing cheap was found."""

from __future__ import annotations

import sys

from classsr_core.model.pretrained import TILING_LOSS_DB, choose_halos


def finish(model, table, pairs, floors, args) -> None:
    model.defaults.pop("halo", None)  # each network's own halo, measured below, is exact
    for row in choose_halos(model, pairs[:4], floors[:4], TILING_LOSS_DB):
        word = "" if row["ok"] else f" (even this loses {row['loss_db']:.3f} dB)"
        print(
            f"branch {row['branch']} ({row['arch']}): region halo {row['halo']} LR px, "
            f"tiling loses {row['loss_db']:.4f} dB against the whole image{word}"
        )
    model.default_router = "edge"
    counts = [0] * len(model.branches)
    for lr, _ in pairs[:4]:
        result = model.infer(lr, mode="regions", router="edge")
        counts = [a + b for a, b in zip(counts, result.class_counts)]
    if sum(counts[:-1]) == 0:
        print(
            f"classsr calibrate: nothing cheap found: at {table.tolerance_db:g} dB every patch "
            "of these photos keeps the network; the model routes all of it to the network "
            "(a larger --tolerance trades quality for speed)",
            file=sys.stderr,
        )
    else:
        share = 1 - counts[-1] / max(sum(counts), 1)
        print(f"{share:.0%} of the patches of these photos go to a cheaper branch")
