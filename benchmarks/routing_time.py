"""Wall clock of routing on whole photos, against the -O network through the same engine.

Run by hand (not a test), from the repository root, after scripts/fetch_natural_photos.sh:

    .venv/bin/python benchmarks/routing_time.py --model classsr-fsrcnn-x4-fast \
        --o-model fsrcnn-x4 --photos data/photos/natural/whole --tolerances 0.05 0.1 \
        --threads 2 --reps 5

Per image (HR read from the folder, LR made as ``router_headroom.load_pair`` makes it: 8-bit
levels), in one process: the -O model and the routed model at every ``--tolerances`` value
(``default``: the model's own routing, no option) run once each (a warm-up: the first
call on an image size pays for allocation and oneDNN's kernel choice), then ``--reps``
rounds that take them in turn, so a slow spell of the machine hits all of them alike.
Time: each one's fastest ``timings["total"]`` (routing, branches and stitching; not reading
or writing files), over the -O model's. PSNR is against the HR photo (RGB, 0..255 after
rounding, ``scale`` px border out), printed beside as dB against -O.

Run it on an otherwise idle machine: with other processes on the cores, a multi-threaded
run's small tiles wait for descheduled threads and the ratios mean nothing (seen here:
2-8x slower tiles at 2 threads under load, none at 1 thread).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from classsr_core import load_model
from classsr_core.io.images import list_images

sys.path.insert(0, str(Path(__file__).parent))
from doc_tables import stamp  # noqa: E402
from router_headroom import load_pair, to_u8  # noqa: E402


def psnr(hr8: np.ndarray, out8: np.ndarray, border: int) -> float:
    d = (out8.astype(np.float64) - hr8.astype(np.float64))[border:-border, border:-border]
    return 10 * math.log10(255.0**2 / max(float((d * d).mean()), 1e-12))


def measure(model, o_model, path, tolerances, reps) -> dict:
    s = int(model.scale)
    hr8, lr = load_pair(path, s)
    methods = {"-O": lambda: o_model.infer(lr, mode="regions")}
    for t in tolerances:
        kw = {} if t == "default" else {"tolerance": float(t), "mode": "regions"}
        methods[f"tol {t}"] = lambda kw=kw: model.infer(lr, **kw)
    first = {name: fn() for name, fn in methods.items()}
    best = {name: math.inf for name in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            best[name] = min(best[name], fn().timings["total"])
    o_psnr = psnr(hr8, to_u8(first["-O"].output), s)
    rows = {}
    for name, res in first.items():
        rows[name] = {
            "seconds": best[name],
            "time": best[name] / best["-O"],
            "flops": res.flops_fraction,
            "db_vs_o": psnr(hr8, to_u8(res.output), s) - o_psnr,
            "mode": res.mode,
            "router": res.router,
            "classes": res.class_counts,
        }
    return {"image": Path(path).stem, "lr": list(lr.shape[-2:]), "rows": rows}


def report(results: list[dict], summary_label: str | None = None) -> str:
    names = list(results[0]["rows"])
    lines = [
        "| image | LR | -O s | " + " | ".join(f"{n}: time / FLOPs / dB" for n in names[1:]) + " |",
        "|---|---|---|" + "---|" * (len(names) - 1),
    ]
    for r in results:
        cells = [
            f"{x['time']:.2f} / {x['flops']:.2f} / {x['db_vs_o']:+.3f}"
            for x in (r["rows"][n] for n in names[1:])
        ]
        lr = f"{r['lr'][1]}x{r['lr'][0]}"
        lines.append(
            f"| {r['image']} | {lr} | {r['rows']['-O']['seconds']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    if summary_label is not None:  # the summary alone, each method labelled with the model
        lines = []
    else:
        lines.append("")
    lines += [
        "| method | mean time / -O | worst time / -O | total time / -O | mean FLOPs | "
        "mean dB vs -O | worst dB vs -O |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names[1:]:
        t = np.array([r["rows"][n]["time"] for r in results])
        f = np.array([r["rows"][n]["flops"] for r in results])
        d = np.array([r["rows"][n]["db_vs_o"] for r in results])
        total = sum(r["rows"][n]["seconds"] for r in results) / sum(
            r["rows"]["-O"]["seconds"] for r in results
        )
        label = n if summary_label is None else f"{summary_label}, {n}"
        lines.append(
            f"| {label} | {t.mean():.2f} | {t.max():.2f} | {total:.2f} | {f.mean():.3f} | "
            f"{d.mean():+.3f} | {d.min():+.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--o-model", default="fsrcnn-x4")
    ap.add_argument("--photos", default="data/photos/natural/whole")
    ap.add_argument("--tolerances", nargs="+", default=["default", "0.05"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--summary", action="store_true", help="print only the summary rows, labelled by model"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    o_model = load_model(args.o_model, device="cpu")
    files = list_images([args.photos])[: args.limit]
    if not files:
        sys.exit(f"no images in {args.photos}: run scripts/fetch_natural_photos.sh")
    results = []
    for f in files:
        results.append(measure(model, o_model, f, args.tolerances, args.reps))
        print(f"{results[-1]['image']} done", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "images": results}, indent=1))
    if args.summary:
        print(report(results, summary_label=args.model))
        return 0
    print(
        f"{args.model} against {args.o_model}, regions, {args.threads} threads, fastest of "
        f"{args.reps} interleaved rounds ({stamp()})\n"
    )
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
