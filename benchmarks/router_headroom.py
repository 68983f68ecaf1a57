"""How far the routers are from a per-cell oracle on held-out photos (prototype).

Run by hand (not a test), from the repository root, after ``scripts/fetch_val_photos.sh``:

    .venv/bin/python benchmarks/router_headroom.py --model classsr-fsrcnn-x4-fast \
        --photos data/photos/holdout --tolerance 0.05 --routers classifier edge \
        --budgets none 0.5 --threads 2 [--reps 1] [--json out.json]

Per image (HR read from the folder, cropped to a multiple of the scale; the input made as
``classsr calibrate`` makes it: the SR task's MATLAB-bicubic downscale of the float HR,
clipped and rounded to 8-bit levels, as an image read from disk is):

- every branch runs everywhere (the engine's regions mode, forced to that branch; the edge
  router is named so that no classifier runs, its 8 multiply-adds a pixel are counted);
- each output is rounded to 8 bits and its squared error against HR is summed per 32x32 LR
  cell (a pixel belongs to cell ``(y // 32, x // 32)`` of the LR grid; ``scale`` HR pixels
  at each border are left out, as the PSNR does);
- the oracle: per cell the branch minimising ``error + lambda * multiply-adds``, lambda the
  largest (bisection) at which the image's composite PSNR loses at most ``--tolerance`` dB
  against the widest branch everywhere; its routing then runs through the engine
  (``classes=``) and both the composite and the engine's numbers are reported;
- every router (``--routers``) at every budget (``--budgets``; ``none``: argmax / the edge
  table's price).

PSNR: RGB, 0..255 after rounding, ``scale`` px border cropped: what ``classsr sweep``
(``Task.score``) reports. Loss = PSNR - PSNR of the widest branch through the same engine.
FLOPs: ``result.flops_fraction`` (true multiply-adds, routing included, as a fraction of
the widest branch on the whole image; forced widest in regions mode is above 1 by its halo).
Time: ``result.timings["total"]``, the fastest of ``--reps`` rounds that run every method in
turn after one warm-up run each (interleaved: a slow spell of the machine hits every method
alike), relative to the -O model through the same regions engine in the same process
(``--o-model``), else to the forced widest branch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

# -- classsr internals (repoint here after the package reorganisation) ----------------------
from classsr_core import load_model
from classsr_core.io.images import list_images, read_image
from classsr_core.plugins.registry import lookup
from classsr_core.tasks import degraded_pairs

# --------------------------------------------------------------------------------------------


def load_pair(path, scale: int) -> tuple[np.ndarray, torch.Tensor]:
    """``(HR uint8 HWC, LR float tensor (1, 3, h, w))``: the LR rounded to 8-bit levels, as
    an image read from disk is, as the official protocol stores its LR PNGs, and by the
    function ``classsr calibrate`` measures its tables on (``degraded_pairs(uint8=True)``).
    Unrounded LR carries detail no file can: on clean vector art (ukui-fluent-color, 55 dB)
    the widest branch used it and the routed image lost 0.179 dB against it where it loses
    0.034 dB on the 8-bit input."""
    task = lookup("tasks", "sr").factory(scale=scale)
    ((hr, lr),) = degraded_pairs(task, [read_image(path).rgb], uint8=True)
    hr8 = np.clip(np.rint(hr * 255.0), 0, 255).astype(np.uint8)
    return hr8, lr.float()


def to_u8(out: torch.Tensor) -> np.ndarray:
    return (out[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


class Cells:
    """The LR cell grid of one image: cell id of every LR and HR pixel, and the PSNR mask."""

    def __init__(self, h: int, w: int, p: int, scale: int):
        self.h, self.w, self.p, self.s = h, w, p, scale
        self.rows, self.cols = math.ceil(h / p), math.ceil(w / p)
        self.n = self.rows * self.cols
        self.lr_id = (np.arange(h)[:, None] // p) * self.cols + (np.arange(w)[None, :] // p)
        hy, hx = np.arange(h * scale) // scale, np.arange(w * scale) // scale
        self.hr_id = self.lr_id[hy][:, hx]
        mask = np.zeros((h * scale, w * scale), bool)
        b = scale
        mask[b:-b, b:-b] = True
        self.mask = mask
        self.n_scored = int(mask.sum()) * 3
        self.lr_pixels = np.bincount(self.lr_id.ravel(), minlength=self.n).astype(np.float64)

    def hr_sum(self, per_pixel: np.ndarray) -> np.ndarray:
        """Sum of an HR ``(H, W)`` map over each cell's scored pixels."""
        return np.bincount(self.hr_id[self.mask], per_pixel[self.mask], minlength=self.n)

    def lr_mean(self, per_pixel: np.ndarray) -> np.ndarray:
        return np.bincount(self.lr_id.ravel(), per_pixel.ravel(), minlength=self.n) / self.lr_pixels

    def lr_max(self, per_pixel: np.ndarray) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        np.maximum.at(out, self.lr_id.ravel(), per_pixel.ravel())
        return out

    def lr_quantile(self, per_pixel: np.ndarray, q: float) -> np.ndarray:
        ids, vals = self.lr_id.ravel(), per_pixel.ravel()
        order = np.lexsort((vals, ids))
        ids, vals = ids[order], vals[order]
        starts = np.searchsorted(ids, np.arange(self.n))
        counts = np.bincount(ids, minlength=self.n)
        return vals[starts + np.floor(q * (counts - 1)).astype(int)]

    def psnr(self, total_se: float) -> float:
        return 10.0 * math.log10(255.0**2 / (total_se / self.n_scored))

    def grid_classes(self, cell_class: np.ndarray, grid) -> np.ndarray:
        """Map per-cell classes to the engine's regions grid (its last row / column start at
        the image edge; they are cell ``rows - 1`` / ``cols - 1`` here)."""
        return cell_class.reshape(self.rows, self.cols)[: len(grid.ys), : len(grid.xs)]


def run_timed(model, lr, reps: int, **kw):
    best = None
    for _ in range(reps):
        res = model.infer(lr, mode="regions", **kw)
        if best is None or res.timings["total"] < best.timings["total"]:
            best = res
    return best


def branch_runs(model, lr, reps: int = 1):
    """Every branch forced everywhere through the regions engine (edge router named so that
    no classifier runs)."""
    p = int(model.patch_size)
    runs = []
    for j in range(len(model.branches)):
        h, w = lr.shape[-2:]
        rows, cols = math.ceil(max(h, p) / p), math.ceil(max(w, p) / p)
        runs.append(run_timed(model, lr, reps, router="edge", classes=np.full(rows * cols, j)))
    return runs


def warm_up(model) -> None:
    """One small run of every branch and router first: the first call pays for allocation
    and oneDNN's kernel choice."""
    x = torch.rand(1, 3, 96, 96)
    router = "edge" if model.edge_table is not None else "classifier"
    for j in range(len(model.branches)):
        model.infer(x, mode="regions", router=router, classes=np.full(9, j))
    model.infer(x, mode="regions")


def cell_errors(cells: Cells, hr8: np.ndarray, out8: np.ndarray) -> np.ndarray:
    """Per-cell sum of squared errors (0..255 levels, over the 3 channels, border out)."""
    d = out8.astype(np.float32) - hr8.astype(np.float32)
    return cells.hr_sum((d * d).sum(axis=2).astype(np.float64))


def oracle(err: np.ndarray, pixel_cost: np.ndarray, lr_pixels: np.ndarray, tol_db: float):
    """Per cell branch from a Lagrangian price search: the largest price at which the total
    error stays within ``tol_db`` of the widest branch everywhere. ``err``: (n, M)."""
    widest = err[:, -1].sum()
    cost = lr_pixels[:, None] * pixel_cost[None, :]

    def assign(lam):
        return np.argmin(err + lam * cost, axis=1)

    def loss(a):
        return 10 * math.log10(err[np.arange(len(a)), a].sum() / widest)

    lo, hi = 0.0, 1.0
    while loss(assign(hi)) <= tol_db and hi < 1e12:
        lo, hi = hi, hi * 4
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if loss(assign(mid)) <= tol_db:
            lo = mid
        else:
            hi = mid
    a = assign(lo)
    # Spend what is left of the tolerance greedily: cheapen the cells whose next cheaper
    # branch adds the least error per multiply-add saved.
    total, limit = err[np.arange(len(a)), a].sum(), widest * 10 ** (tol_db / 10)
    while True:
        best = None
        for j in range(err.shape[1]):
            cheaper = pixel_cost[j] < pixel_cost[a]
            if not cheaper.any():
                continue
            idx = np.nonzero(cheaper)[0]
            de = err[idx, j] - err[idx, a[idx]]
            ok = total + de <= limit
            if not ok.any():
                continue
            rate = de / (cost[idx, a[idx]] - cost[idx, j])
            rate[~ok] = np.inf
            k = int(np.argmin(rate))
            if best is None or rate[k] < best[0]:
                best = (rate[k], idx[k], j, de[k])
        if best is None or not np.isfinite(best[0]):
            break
        _, i, j, de = best
        a[i] = j
        total += de
    return a, lam_fraction(a, cost)


def lam_fraction(a: np.ndarray, cost: np.ndarray) -> float:
    """FLOPs of a per-cell assignment as a fraction of the widest branch everywhere (cost
    model: per-pixel branch cost x LR pixels, no halo, no routing)."""
    return float(cost[np.arange(len(a)), a].sum() / cost[:, -1].sum())


def signal_cells(lr, err: np.ndarray, cells: Cells) -> dict:
    """Each routing statistic of every whole cell beside what the widest branch gains over
    the cheapest there (squared error, 0..255 levels, summed): the Spearman table of
    :func:`report` pools these over the images."""
    from classsr_core.routing.edge import STATISTICS, edge_scores

    p = cells.p
    rows, cols = cells.h // p, cells.w // p
    ys, xs = np.arange(rows) * p, np.arange(cols) * p
    ids = (np.arange(rows)[:, None] * cells.cols + np.arange(cols)[None, :]).reshape(-1)
    out = {"gain": (err[ids, 0] - err[ids, -1]).tolist()}
    for name in STATISTICS:
        out[name] = edge_scores(lr.float(), ys, xs, p, name).tolist()
    return out


def spearman_lines(results: list[dict]) -> list[str]:
    from scipy.stats import spearmanr

    if not all("signals" in r for r in results):
        return []
    gain = np.concatenate([r["signals"]["gain"] for r in results])
    names = [k for k in results[0]["signals"] if k != "gain"]
    lines = [
        "",
        "Spearman of each routing statistic with what the widest branch gains over the "
        f"cheapest, per whole cell ({len(gain)} cells):",
        "",
        "| statistic | Spearman |",
        "|---|---|",
    ]
    for name in names:
        s = np.concatenate([r["signals"][name] for r in results])
        lines.append(f"| {name} | {spearmanr(s, gain)[0]:.3f} |")
    return lines


def timed(methods: dict, reps: int) -> tuple[dict, dict]:
    """Run every method once (its result, and a warm-up: the first call on a new image size
    pays for allocation and oneDNN's kernel choice), then ``reps`` rounds that take the
    methods in turn, so that a slow spell of the machine hits all of them alike. Returns
    the first results and each method's fastest ``timings["total"]``."""
    results = {name: fn() for name, fn in methods.items()}
    best = {name: math.inf for name in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            best[name] = min(best[name], fn().timings["total"])
    return results, best


def measure_image(model, path, args, o_model=None) -> dict:
    s, p = int(model.scale), int(model.patch_size)
    hr8, lr = load_pair(path, s)
    h, w = lr.shape[-2:]
    cells = Cells(h, w, p, s)
    runs = branch_runs(model, lr)
    err = np.stack([cell_errors(cells, hr8, to_u8(r.output)) for r in runs], axis=1)
    pixel_cost = np.asarray(runs[0].flops_per_patch["branches"], dtype=np.float64) / (p * p)
    widest = runs[-1]
    w_psnr = cells.psnr(err[:, -1].sum())
    a, frac = oracle(err, pixel_cost, cells.lr_pixels, args.tolerance)
    comp = cells.psnr(err[np.arange(len(a)), a].sum())
    names = ["bicubic"] + [f"branch {j}" for j in range(1, len(runs) - 1)] + ["widest"]

    def infer(m=model, **kw):
        return lambda: m.infer(lr, mode="regions", **kw)

    methods = {}
    for j, r in enumerate(runs):
        methods[f"forced {names[j]}"] = infer(router="edge", classes=np.full(r.class_map.size, j))
    methods["oracle (engine)"] = infer(router="edge", classes=cells.grid_classes(a, widest.grid))
    if o_model is not None:  # the fair baseline: the -O network through the same engine
        methods["-O regions"] = infer(o_model)
    for router in args.routers:
        for t in args.tolerances:
            methods[f"{router} tol {t}"] = infer(router=router, tolerance=float(t))
            for halo in args.halos:  # the same routing with another halo than the model's
                methods[f"{router} tol {t} halo {halo}"] = infer(
                    router=router, tolerance=float(t), halo=halo
                )
        for b in args.budgets:
            budget = None if b == "none" else float(b)
            label = router if budget is None else f"{router} @{budget:g}"
            methods[label] = infer(router=router, budget=budget)
    results, times = timed(methods, args.reps)
    rows = {}
    for name, res in results.items():
        psnr = cells.psnr(cell_errors(cells, hr8, to_u8(res.output)).sum())
        rows[name] = {
            "flops": res.flops_fraction,
            "loss": psnr - w_psnr,
            "time": times[name],
            "classes": res.class_counts,
        }
    rows["oracle (composite)"] = {"flops": frac, "loss": comp - w_psnr, "time": None}
    signals = signal_cells(lr, err, cells)
    base = "-O regions" if o_model is not None else "forced widest"
    w_time = times[base]
    for r in rows.values():
        r["t_rel"] = None if r["time"] is None else r["time"] / w_time
    return {
        "image": Path(path).stem,
        "lr": [h, w],
        "widest_psnr": w_psnr,
        "widest_time": times["forced widest"],
        "baseline_time": w_time,
        "cells": cells.n,
        "rows": rows,
        "signals": signals,
    }


def folder_rows(model, files, results, args) -> None:
    """``folder @B``: one price for all images (``--budget-scope folder``) beside the
    per-image budget: the same total multiply-adds, spent where they pay."""
    from classsr_core.engine.pipeline import plan_routes
    from classsr_core.routing.folder import folder_price

    s = int(model.scale)
    pairs = [load_pair(f, s) for f in files]
    routers = [r for r in args.routers if r != "classifier"] or args.routers
    for router in routers:
        plans = [plan_routes(model, lr, mode="regions", router=router) for _, lr in pairs]
        price = folder_price(plans, args.folder_budget)
        for (hr8, lr), r, plan in zip(pairs, results, plans):
            r["widest_flops"] = plan.widest_flops
            h, w = lr.shape[-2:]
            cells = Cells(h, w, int(model.patch_size), s)
            res = run_timed(model, lr, args.reps, router=router, price=price)
            psnr = cells.psnr(cell_errors(cells, hr8, to_u8(res.output)).sum())
            r["rows"][f"{router} folder @{args.folder_budget:g}"] = {
                "flops": res.flops_fraction,
                "loss": psnr - r["widest_psnr"],
                "time": res.timings["total"],
                "t_rel": res.timings["total"] / r["baseline_time"],
                "classes": res.class_counts,
            }


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def report(results: list[dict], tol: float) -> str:
    methods = list(results[0]["rows"])
    show = [m for m in methods if not m.startswith("forced") or m == "forced bicubic"]
    lines = [
        f"Per image: FLOPs fraction / loss dB vs widest (RGB PSNR, border = scale) / time "
        f"relative to the -O model in regions mode (else the forced widest branch). Oracle "
        f"tolerance {tol} dB.",
        "",
        "| image | LR | widest dB | widest s | " + " | ".join(show) + " |",
        "|---|---|---|---|" + "---|" * len(show),
    ]
    for r in results:
        cells = []
        for m in show:
            x = r["rows"][m]
            cells.append(f"{x['flops']:.3f} / {x['loss']:+.3f} / {fmt(x['t_rel'], '.2f')}")
        lr = f"{r['lr'][1]}x{r['lr'][0]}"
        head = f"| {r['image']} | {lr} | {r['widest_psnr']:.2f} | {r['widest_time']:.3f} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | mean FLOPs | max FLOPs | mean loss dB | worst loss dB | "
        "images below -0.10 dB | mean time / widest | max time / widest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        f = np.array([r["rows"][m]["flops"] for r in results])
        lo = np.array([r["rows"][m]["loss"] for r in results])
        t = [r["rows"][m]["t_rel"] for r in results]
        t = np.array([v for v in t if v is not None])
        tm = f"{t.mean():.2f}" if len(t) else "-"
        tx = f"{t.max():.2f}" if len(t) else "-"
        lines.append(
            f"| {m} | {f.mean():.3f} | {f.max():.3f} | {lo.mean():+.3f} | {lo.min():+.3f} | "
            f"{int((lo < -0.10).sum())}/{len(lo)} | {tm} | {tx} |"
        )
    if all("-O regions" in r["rows"] for r in results):
        lines += ["", *against_o(results, methods)]
    lines += spearman_lines(results)
    if all("widest_flops" in r for r in results):  # folder budgets: totals, not means
        total = sum(r["widest_flops"] for r in results)
        lines += ["", "| method | total FLOPs fraction | mean loss dB | worst loss dB |"]
        lines += ["|---|---|---|---|"]
        for m in methods:
            if "@" not in m:
                continue
            spent = sum(r["rows"][m]["flops"] * r["widest_flops"] for r in results)
            lo = np.array([r["rows"][m]["loss"] for r in results])
            lines.append(f"| {m} | {spent / total:.3f} | {lo.mean():+.3f} | {lo.min():+.3f} |")
    return "\n".join(lines)


def against_o(results: list[dict], methods: list[str]) -> list[str]:
    """The fair comparison: every method against the -O network through the same regions
    engine in the same process (FLOPs and dB relative to it, per image, then mean / worst)."""
    lines = [
        "Against the -O model in regions mode (FLOPs / -O, dB vs -O):",
        "",
        "| method | mean FLOPs / -O | max FLOPs / -O | mean dB vs -O | worst dB vs -O | "
        "images below -0.10 dB | mean time / -O | max time / -O |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        if m == "-O regions":
            continue
        rows = [(r["rows"][m], r["rows"]["-O regions"]) for r in results]
        f = np.array([x["flops"] / o["flops"] for x, o in rows])
        lo = np.array([x["loss"] - o["loss"] for x, o in rows])
        t = np.array([x["t_rel"] for x, _ in rows if x["t_rel"] is not None])
        tm, tx = (f"{t.mean():.2f}", f"{t.max():.2f}") if len(t) else ("-", "-")
        lines.append(
            f"| {m} | {f.mean():.3f} | {f.max():.3f} | {lo.mean():+.3f} | {lo.min():+.3f} | "
            f"{int((lo < -0.10).sum())}/{len(lo)} | {tm} | {tx} |"
        )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--photos", default="data/photos/holdout")
    ap.add_argument("--tolerance", type=float, default=0.05, help="oracle's dB vs widest")
    ap.add_argument("--routers", nargs="+", default=["classifier", "edge"])
    ap.add_argument("--budgets", nargs="+", default=["none", "0.5"], help="'none' or fractions")
    ap.add_argument("--tolerances", nargs="*", default=[], help="tolerance= runs (dB)")
    ap.add_argument(
        "--o-model", default=None, help="the -O model: time is then relative to it (regions)"
    )
    ap.add_argument(
        "--folder-budget", type=float, default=None, help="also: one price for the folder"
    )
    ap.add_argument(
        "--halos", nargs="*", type=int, default=[], help="tolerance runs again at these halos"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="time: min over this many runs")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--json", default=None, help="write the per-image numbers here")
    ap.add_argument("--from-json", default=None, help="print the report of an earlier --json")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(report(saved["images"], saved["args"]["tolerance"]))
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    files = list_images([args.photos])[: args.limit]
    if not files:
        sys.exit(f"no images in {args.photos}")
    warm_up(model)
    o_model = None
    if args.o_model:
        o_model = load_model(args.o_model, device="cpu")
        warm_up(o_model)
    results = []
    for f in files:
        r = measure_image(model, f, args, o_model)
        results.append(r)
        o = r["rows"]["oracle (engine)"]
        print(
            f"{r['image']}: widest {r['widest_psnr']:.2f} dB, oracle {o['flops']:.3f} "
            f"{o['loss']:+.3f} dB",
            file=sys.stderr,
            flush=True,
        )
    if args.folder_budget is not None:
        folder_rows(model, files, results, args)
    print(report(results, args.tolerance))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "images": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
