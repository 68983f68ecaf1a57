"""Ground-truth-free routing signals, measured against each cell's true gain (prototype).

Run by hand (not a test), from the repository root, after ``scripts/fetch_val_photos.sh``:

    .venv/bin/python benchmarks/router_candidates.py --model classsr-fsrcnn-x4-fast \
        --train data/photos/train --photos data/photos/holdout --tolerance 0.05 \
        --threads 2 [--json out.json]

Per 32x32 LR cell (the same cells, inputs, rounding and RGB PSNR as
``benchmarks/router_headroom.py``, whose helpers it imports) and per candidate signal:

- Spearman (pooled over the holdout cells) of the signal with the true gain of the widest
  branch over the bicubic one and over FSRCNN-36 (squared-error reductions, HR vs output);
- a threshold router: ``class 0 if s_lo < t1, else 1 if s_hi < t2, else 2`` (single signals
  use ``s_lo = s_hi``; the cascade uses the bicubic branch's consistency for the first step
  and FSRCNN-36's for the second). ``(t1, t2)`` are chosen ONLY on the training photos: the
  pair of lowest mean FLOPs at which no training photo loses more than ``--tolerance`` dB
  against the widest branch (composite of the forced branches' outputs per cell). The
  holdout numbers then use those thresholds unchanged.

FLOPs here are the cost model (true multiply-adds per LR pixel of each branch x pixels,
plus the signal's own cost, no halo; cheap-branch outputs a signal needed are reused when
the cell stays on that branch), as a fraction of the widest branch everywhere. The chosen
design is then also run through the engine (``classes=``) for its real FLOPs and time.

Signals: (a) edge: mean |4-neighbour Laplacian| of luma; (b) colour gradient: central
differences per RGB channel, magnitude, max over channels, then max / 90th percentile per
cell; (c) consistency: the cheap branch's output degraded as inputs are made (MATLAB
bicubic x1/4, as a stride-4 separable convolution checked against ``imresize``) minus the
LR input, mean / max of the squared residual per cell; (d) detail: mean squared difference
of FSRCNN-36's output and the bicubic branch's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from router_headroom import Cells, branch_runs, cell_errors, load_pair, to_u8, warm_up
from scipy.stats import spearmanr

# -- classsr internals (repoint here after the package reorganisation) ----------------------
from classsr_core import load_model
from classsr_core._basicsr import imresize
from classsr_core.io.images import list_images
from classsr_core.routing.edge import edge_map

# --------------------------------------------------------------------------------------------

# Multiply-adds per LR pixel of each signal's own work (x4, RGB); branch costs come from the
# engine. Downscale x4: horizontal 16 taps on 4 HR rows + vertical 16 taps, 3 channels.
DOWN_MACS = 3 * (4 * 16 + 16)  # 240
MACS = {
    "edge": 8,  # luma 3 + Laplacian 5
    "grad": 3 * 6,  # per channel: 2 differences, 2 squares, 1 add (+ sqrt, max)
    "cons": DOWN_MACS + 3,  # degrade + squared residual, on top of the cheap branch
    "detail": 16 * 3,  # squared difference on 16 HR pixels x 3 channels
}


def cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * (
        (a > 1) & (a <= 2)
    )


_K = cubic((8.5 - np.arange(1, 17)) / 4) / 4
_K = torch.tensor(_K / _K.sum(), dtype=torch.float32)


def down4(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 1/4)`` (bicubic, antialiased) of ``(1, C, H, W)``, H and W
    multiples of 4: symmetric padding of 6, 16 taps, stride 4, separable."""
    c = x.shape[1]

    def sym_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        idx = torch.cat([torch.arange(5, -1, -1), torch.arange(n), torch.arange(n - 1, n - 7, -1)])
        return t.index_select(dim, idx)

    k = _K.to(x.dtype)
    t = sym_pad(x, 3)
    t = F.conv2d(t, k.view(1, 1, 1, 16).repeat(c, 1, 1, 1), stride=(1, 4), groups=c)
    t = sym_pad(t, 2)
    return F.conv2d(t, k.view(1, 1, 16, 1).repeat(c, 1, 1, 1), stride=(4, 1), groups=c)


def colour_grad(lr: torch.Tensor) -> np.ndarray:
    g = F.pad(lr, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (g[..., 1:-1, 2:] - g[..., 1:-1, :-2])
    gy = 0.5 * (g[..., 2:, 1:-1] - g[..., :-2, 1:-1])
    return (gx * gx + gy * gy).sqrt().amax(1)[0].numpy()


def image_data(model, path) -> dict:
    s, p = int(model.scale), int(model.patch_size)
    hr8, lr = load_pair(path, s)
    h, w = lr.shape[-2:]
    cells = Cells(h, w, p, s)
    runs = branch_runs(model, lr)
    outs = [r.output.clamp(0, 1) for r in runs]
    err = np.stack([cell_errors(cells, hr8, to_u8(o)) for o in outs], axis=1)
    sig = {}
    with torch.inference_mode():
        sig["edge"] = cells.lr_mean(edge_map(lr)[0].numpy())
        cg = colour_grad(lr)
        sig["grad max"] = cells.lr_max(cg)
        sig["grad p90"] = cells.lr_quantile(cg, 0.9)
        for j, name in ((0, "bicubic"), (1, "fsrcnn36")):
            res = (down4(outs[j]) - lr).square().sum(1)[0].numpy()
            sig[f"cons {name} mean"] = cells.lr_mean(res)
            sig[f"cons {name} max"] = cells.lr_max(res)
        d = (outs[1] - outs[0]).square().sum(1)[0].numpy()
        sig["detail"] = cells.lr_mean(d.reshape(h, s, w, s).mean(axis=(1, 3)))
    return {
        "name": Path(path).stem,
        "err": err,
        "sig": sig,
        "lr_pixels": cells.lr_pixels,
        "n_scored": cells.n_scored,
        "grid": runs[-1].grid,
        "cells": cells,
        "lr": lr,
        "hr8": hr8,
        "pixel_cost": np.asarray(runs[0].flops_per_patch["branches"]) / (p * p),
        "widest_time": runs[-1].timings["total"],
    }


# Candidate routers: (label, s_lo, s_hi, cost kind). Cost kinds say what runs before routing.
ROUTERS = [
    ("(a) edge", "edge", "edge", "edge"),
    ("(b) grad max", "grad max", "grad max", "grad"),
    ("(b) grad p90", "grad p90", "grad p90", "grad"),
    ("(c) cons bicubic mean", "cons bicubic mean", "cons bicubic mean", "cons0"),
    ("(c) cons bicubic max", "cons bicubic max", "cons bicubic max", "cons0"),
    ("(c) cascade bicubic->36 mean", "cons bicubic mean", "cons fsrcnn36 mean", "cascade"),
    ("(c) cascade bicubic->36 max", "cons bicubic max", "cons fsrcnn36 max", "cascade"),
    ("(c) cons 36 mean", "cons fsrcnn36 mean", "cons fsrcnn36 mean", "cons1"),
    ("(d) detail 36-bicubic", "detail", "detail", "detail"),
    ("(c)+(b) bicubic cons mean -> grad p90", "cons bicubic mean", "grad p90", "cons0+grad"),
]


def cell_cost(kind: str, cls: np.ndarray, pc: np.ndarray) -> np.ndarray:
    """Multiply-adds per LR pixel of each cell: signal + chosen branch (reused outputs not
    paid twice)."""
    b0, b1, b2 = pc[0], pc[1], pc[2]
    branch = pc[cls]
    if kind == "edge":
        return MACS["edge"] + branch
    if kind == "grad":
        return MACS["grad"] + branch
    if kind in ("cons0", "cons0+grad"):  # bicubic + its check everywhere; reused on class 0
        extra = MACS["grad"] if kind == "cons0+grad" else 0
        return b0 + MACS["cons"] + extra + np.where(cls == 0, 0.0, branch)
    if kind == "cascade":  # bicubic + check everywhere; FSRCNN-36 + check where escalated
        c = b0 + MACS["cons"] + np.where(cls >= 1, b1 + MACS["cons"], 0.0)
        return c + np.where(cls == 2, b2, 0.0)
    if kind == "cons1":  # FSRCNN-36 + check everywhere; reused on class 1
        return b1 + MACS["cons"] + np.where(cls == 1, 0.0, branch)
    if kind == "detail":  # bicubic and FSRCNN-36 everywhere; reused on classes 0 and 1
        return b0 + b1 + MACS["detail"] + np.where(cls == 2, b2, 0.0)
    raise ValueError(kind)


def route(lo, hi, t1, t2):
    return np.where(lo < t1, 0, np.where(hi < t2, 1, 2))


def evaluate(images, router, t1, t2):
    """Per image (PSNR dB minus the widest's, composite; FLOPs fraction, cost model)."""
    _, s_lo, s_hi, kind = router
    losses, fracs = [], []
    for im in images:
        cls = route(im["sig"][s_lo], im["sig"][s_hi], t1, t2)
        e = im["err"]
        routed = e[np.arange(len(cls)), cls].sum()
        losses.append(-10 * math.log10(routed / e[:, -1].sum()))
        px = im["lr_pixels"]
        cost = (cell_cost(kind, cls, im["pixel_cost"]) * px).sum()
        fracs.append(cost / (im["pixel_cost"][-1] * px.sum()))
    return np.array(losses), np.array(fracs)


def calibrate(train, router, tol: float, levels: int = 41):
    _, s_lo, s_hi, _ = router
    qs = np.linspace(0, 1, levels)
    lo_all = np.concatenate([im["sig"][s_lo] for im in train])
    hi_all = np.concatenate([im["sig"][s_hi] for im in train])
    c1 = np.concatenate([[-np.inf], np.quantile(lo_all, qs), [np.inf]])
    c2 = np.concatenate([[-np.inf], np.quantile(hi_all, qs), [np.inf]])
    best = (np.inf, -np.inf, -np.inf)  # nothing passes: everything to the widest
    for t1 in np.unique(c1):
        for t2 in np.unique(c2):
            loss, frac = evaluate(train, router, t1, t2)
            if loss.min() >= -tol and frac.mean() < best[0]:
                best = (frac.mean(), t1, t2)
    return best[1], best[2]


def spearman_table(images) -> list[tuple[str, float, float, float]]:
    g20 = np.concatenate([im["err"][:, 0] - im["err"][:, 2] for im in images])
    g21 = np.concatenate([im["err"][:, 1] - im["err"][:, 2] for im in images])
    rows = []
    for name in images[0]["sig"]:
        s = np.concatenate([im["sig"][name] for im in images])
        per = [spearmanr(im["sig"][name], im["err"][:, 0] - im["err"][:, 2])[0] for im in images]
        rows.append((name, spearmanr(s, g20)[0], spearmanr(s, g21)[0], float(np.nanmedian(per))))
    return rows


def time_signal(lr: torch.Tensor, model, kind: str, reps: int = 2) -> float:
    """Seconds to compute a signal on the whole LR image (min over reps)."""
    best = math.inf
    with torch.inference_mode():
        for _ in range(reps):
            t0 = time.perf_counter()
            if kind == "edge":
                edge_map(lr)
            elif kind == "grad":
                colour_grad(lr)
            elif kind in ("cons0", "cons0+grad", "cascade"):
                (down4(model.branches[0](lr).clamp(0, 1)) - lr).square().sum(1)
                if kind == "cons0+grad":
                    colour_grad(lr)
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--train", default="data/photos/train", help="thresholds are set here")
    ap.add_argument("--photos", default="data/photos/holdout", help="measured here")
    ap.add_argument("--tolerance", type=float, nargs="+", default=[0.05])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--engine",
        default="(c)+(b) bicubic cons mean -> grad p90",
        help="router also run through the engine (classes=), with its time",
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    warm_up(model)

    # The downscale convolution is MATLAB's imresize: check on a random image.
    x = np.random.default_rng(0).random((64, 48, 3)).astype(np.float32)
    ref = imresize(x, 0.25)
    got = down4(torch.from_numpy(x).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    print(f"down4 vs imresize(1/4): max |diff| {np.abs(ref - got).max():.2e}", file=sys.stderr)

    train = [image_data(model, f) for f in list_images([args.train])[: args.limit]]
    hold = [image_data(model, f) for f in list_images([args.photos])[: args.limit]]
    print(
        f"{len(train)} training photos ({sum(len(i['err']) for i in train)} cells), "
        f"{len(hold)} holdout images ({sum(len(i['err']) for i in hold)} cells)",
        file=sys.stderr,
    )
    pc = hold[0]["pixel_cost"]
    out = ["Branch costs, multiply-adds per LR pixel: " + ", ".join(f"{c:.0f}" for c in pc), ""]
    out += [
        "| signal | Spearman with gain widest-bicubic (pooled) | with gain widest-36 "
        "(pooled) | median per image, widest-bicubic |",
        "|---|---|---|---|",
    ]
    sp = spearman_table(hold)
    out += [f"| {n} | {a:+.3f} | {b:+.3f} | {c:+.3f} |" for n, a, b, c in sp]
    report = {"spearman": sp, "routers": {}}
    for tol in args.tolerance:
        out += [
            "",
            f"Thresholds calibrated on {args.train} (every training photo within "
            f"{tol} dB of the widest); holdout: {args.photos}",
            "",
            "| router | signal MACs / LR px | train mean FLOPs | train worst dB | "
            "holdout mean FLOPs | holdout max FLOPs | holdout mean dB | holdout worst dB "
            "| holdout images < -0.10 dB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in ROUTERS:
            t1, t2 = calibrate(train, r, tol)
            tl, tf = evaluate(train, r, t1, t2)
            hl, hf = evaluate(hold, r, t1, t2)
            macs = {
                "edge": "8",
                "grad": "18",
                "cons0": f"{pc[0] + MACS['cons']:.0f}",
                "cons0+grad": f"{pc[0] + MACS['cons'] + MACS['grad']:.0f}",
                "cascade": f"{pc[0] + MACS['cons']:.0f} (+{pc[1] + MACS['cons']:.0f} escalated)",
                "cons1": f"{pc[1] + MACS['cons']:.0f}",
                "detail": f"{pc[0] + pc[1] + MACS['detail']:.0f}",
            }[r[3]]
            out.append(
                f"| {r[0]} | {macs} | {tf.mean():.3f} | {tl.min():+.3f} | "
                f"{hf.mean():.3f} | {hf.max():.3f} | {hl.mean():+.3f} | {hl.min():+.3f} "
                f"| {int((hl < -0.10).sum())}/{len(hl)} |"
            )
            report["routers"][f"{r[0]} @ {tol}"] = {
                "t1": float(t1),
                "t2": float(t2),
                "train_flops": tf.tolist(),
                "train_loss": tl.tolist(),
                "holdout_flops": hf.tolist(),
                "holdout_loss": hl.tolist(),
                "holdout": [im["name"] for im in hold],
            }
            if r[0] == args.engine and tol == args.tolerance[0]:
                eng = engine_check(model, hold, r, t1, t2)
                report["engine"] = eng
    if "engine" in report:
        e = report["engine"]
        out += [
            "",
            f"Through the engine (classes=, regions): {args.engine}, tolerance {args.tolerance[0]}",
            "",
            "| image | FLOPs (engine + signal) | loss dB | time (engine + signal) / widest |",
            "|---|---|---|---|",
        ]
        for row in e:
            out.append(
                f"| {row['image']} | {row['flops']:.3f} | {row['loss']:+.3f} | {row['t_rel']:.2f} |"
            )
        f = np.array([r["flops"] for r in e])
        lo = np.array([r["loss"] for r in e])
        t = np.array([r["t_rel"] for r in e])
        out.append(f"| mean | {f.mean():.3f} | {lo.mean():+.3f} | {t.mean():.2f} |")
        out.append(f"| worst | {f.max():.3f} | {lo.min():+.3f} | {t.max():.2f} |")
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


def engine_check(model, images, router, t1, t2) -> list[dict]:
    _, s_lo, s_hi, kind = router
    rows = []
    for im in images:
        cells = im["cells"]
        cls = route(im["sig"][s_lo], im["sig"][s_hi], t1, t2)
        res = None
        for _ in range(2):
            r = model.infer(
                im["lr"], mode="regions", router="edge", classes=cells.grid_classes(cls, im["grid"])
            )
            res = r if res is None or r.timings["total"] < res.timings["total"] else res
        psnr = cells.psnr(cell_errors(cells, im["hr8"], to_u8(res.output)).sum())
        w_psnr = cells.psnr(im["err"][:, -1].sum())
        t_sig = time_signal(im["lr"], model, kind)
        # signal cost over the whole image, conservatively without reuse of its outputs
        pc = im["pixel_cost"]
        sig_macs = {
            "edge": 8,
            "grad": MACS["grad"],
            "cons0": pc[0] + MACS["cons"],
            "cons0+grad": pc[0] + MACS["cons"] + MACS["grad"],
        }.get(kind, math.nan)
        rows.append(
            {
                "image": im["name"],
                "flops": res.flops_fraction + sig_macs / pc[-1],
                "loss": psnr - w_psnr,
                "t_rel": (res.timings["total"] + t_sig) / im["widest_time"],
                "classes": res.class_counts,
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
