"""What limits edge routing on natural photos: three measurements behind docs/routing.md's
"What limits the saving" (issue 24's missed targets).

    .venv/bin/python benchmarks/routing_limits.py --model classsr-fsrcnn-x4-fast
    .venv/bin/python benchmarks/routing_limits.py --model classsr-srresnet-x4   # ~25 min

Every branch of the model runs on every image of the calibration folders (the ones
``scripts/recalibrate_shipped.sh`` calibrates on) and of the two holdouts; each whole
``patch_size`` cell gives one edge score and M squared errors, as ``classsr calibrate``
measures them (``classsr_core.routing.calibration``). Then, by the cost model (branch
multiply-adds per cell; no halos, so below the engine's numbers):

1. **The oracle with and without the middle branches**: per image, the cheapest per-cell
   routing that loses at most 0.05 dB against the widest branch, knowing every cell's true
   error. Where removing the middle branches costs the oracle nothing, those branches are
   what limits the saving (a retrained middle branch is the lever); where it costs much, the
   router's estimate of the errors is.
2. **How well an image's widest-branch error is known without ground truth**: a tolerance
   in dB is relative to that error, so a router must estimate it. Pearson correlation of
   log(true error) with log(the edge table's estimate), and the spread of the ratio.
3. **Which calibration images bind the tolerance curve**: each image routed by the table of
   the others (leave one out) at per-image loss budgets of 0.005 to 0.07 dB; the curve keeps
   the worst image within twice the tolerance, so the images that lose most at small budgets
   set every image's budget.
4. **What a budget buys on the holdouts**: both holdouts routed by the table of all the
   calibration images at each per-image budget.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CALIB = ["data/photos/train", "data/photos/calib", "data/photos/natural/calib"]
HOLDOUTS = {"natural": ["data/photos/natural/holdout"], "graphics": ["data/photos/holdout"]}
BUDGETS = (0.005, 0.01, 0.02, 0.04, 0.07)


def cells(model, folders: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image: (scores (n,), errors (n, M))}`` of every whole cell of every image."""
    from classsr_core.commands.sweep import task_and_photos
    from classsr_core.io.inputs import list_inputs
    from classsr_core.routing.calibration import _cell_errors
    from classsr_core.routing.edge import edge_scores
    from classsr_core.tasks import degraded_pairs

    files, _ = list_inputs(folders)
    if not files:
        sys.exit(f"no images in {folders}: run scripts/fetch_*.sh first")
    task, photos = task_and_photos(model, None, folders, files)
    statistic = model.router_states["edge"].statistic
    p = int(model.patch_size)
    out = {}
    for f, (clean, x) in zip(files, degraded_pairs(task, photos, uint8=True)):
        hr = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
        rows, cols = x.shape[-2] // p, x.shape[-1] // p
        if rows and cols:
            ys, xs = np.arange(rows) * p, np.arange(cols) * p
            score = edge_scores(x.float(), ys, xs, p, statistic)
            out[Path(f).stem] = (score, _cell_errors(model, x, hr, rows, cols))
        print(f"  {Path(f).stem}", file=sys.stderr, flush=True)
    return out


def oracle_fraction(err: np.ndarray, costs: np.ndarray, use: list[int], tol_db=0.05) -> float:
    """FLOPs (of the widest) of the cheapest routing over branches ``use`` (the widest
    last) losing at most ``tol_db`` against the widest: router_headroom's per-cell oracle
    (the docs' "oracle (composite)"), restricted to those branches, every cell alike."""
    from router_headroom import oracle

    return oracle(err[:, use], costs[use], np.ones(len(err)), tol_db)[1]


def table_of(data: dict, names: list[str], bins: int = 16):
    """The edge table ``classsr calibrate`` would measure on ``names`` (no curve)."""
    from classsr_core.routing.calibration import _bin_means, bin_edges
    from classsr_core.routing.edge import EdgeTable

    scores = [data[n][0] for n in names]
    errors = [data[n][1] for n in names]
    edges = bin_edges(np.concatenate(scores), bins)
    mse = _bin_means(edges, scores, errors, range(len(names)))
    return EdgeTable(
        tuple(edges.tolist()), tuple(map(tuple, mse.tolist())), 0.0, 0.05, interpolate=True
    )


def loss_at(table, score, err, costs, budget_db: float) -> tuple[float, float]:
    """(FLOPs fraction, loss dB vs widest) of one image routed by ``table`` at a per-image
    loss budget (the "relative" allocation of ``routing.edge.image_price``)."""
    from classsr_core.routing.edge import image_price

    expected = table.expected_mse(score)
    a = table.route(None, costs, image_price(expected, costs, budget_db), expected=expected)
    routed = err[np.arange(len(a)), a].mean()
    return float(costs[a].mean() / costs[-1]), 10 * math.log10(err[:, -1].mean() / routed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--binding", type=int, default=8, help="calibration images listed in 3")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from classsr_core.model.loading import load_model
    from classsr_core.routing.edge import branch_pixel_costs

    model = load_model(args.model, device="cpu")
    costs = np.asarray(branch_pixel_costs(model), dtype=np.float64)
    m = len(costs)
    calib = cells(model, CALIB)
    sets = {"calibration": calib} | {k: cells(model, v) for k, v in HOLDOUTS.items()}

    print(f"Model `{args.model}`, branch multiply-adds per LR pixel {costs.round(0).tolist()}.")
    print("\n1. Oracle at <= 0.05 dB per image (cost model, no halos), mean FLOPs fraction:\n")
    print("| images | n | all branches | bicubic + widest only | middle branches buy |")
    print("|---|---|---|---|---|")
    for name, data in sets.items():
        full = np.mean([oracle_fraction(e, costs, list(range(m))) for _, e in data.values()])
        ends = np.mean([oracle_fraction(e, costs, [0, m - 1]) for _, e in data.values()])
        print(f"| {name} | {len(data)} | {full:.3f} | {ends:.3f} | {ends - full:.3f} |")

    print("\n2. The widest branch's error of an image, estimated by the edge table (measured on")
    print("the calibration images; for them, leave one out):\n")
    print("| images | Pearson log true vs log estimate | true / estimate: median | 10% | 90% |")
    print("|---|---|---|---|---|")
    names = list(calib)
    full_table = table_of(calib, names)
    for name, data in sets.items():
        true, est = [], []
        for img, (score, err) in data.items():
            table = (
                table_of(calib, [n for n in names if n != img])
                if name == "calibration"
                else full_table
            )
            true.append(err[:, -1].mean())
            est.append(table.expected_mse(score)[:, -1].mean())
        lt, le = np.log(true), np.log(est)
        r = float(np.corrcoef(lt, le)[0, 1])
        q = np.quantile(np.asarray(true) / np.asarray(est), [0.5, 0.1, 0.9])
        print(f"| {name} | {r:.3f} | {q[0]:.2f} | {q[1]:.2f} | {q[2]:.2f} |")

    print("\n3. Calibration images routed by the table of the others at per-image budgets (dB):")
    print(f"the {args.binding} that lose most at a budget of 0.02 dB (FLOPs / loss dB):\n")
    rows = []
    for img in names:
        table = table_of(calib, [n for n in names if n != img])
        score, err = calib[img]
        row = [loss_at(table, score, err, costs, b) for b in BUDGETS]
        rows.append((img, len(score), row))
    rows.sort(key=lambda r: r[2][BUDGETS.index(0.02)][1])  # most lost at a 0.02-dB budget
    print("| image | cells | " + " | ".join(f"budget {b:g}" for b in BUDGETS) + " |")
    print("|---|---|" + "---|" * len(BUDGETS))
    for img, n, row in rows[: args.binding]:
        cells_ = " | ".join(f"{f:.2f} / {loss:+.3f}" for f, loss in row)
        print(f"| {img} | {n} | {cells_} |")

    print("\n4. The holdouts routed by the table of all calibration images at one per-image")
    print("budget each (what a tolerance maps to), FLOPs fraction / mean / worst loss dB:\n")
    print("| images | " + " | ".join(f"budget {b:g}" for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    for name in HOLDOUTS:
        out = []
        for b in BUDGETS:
            runs = [loss_at(full_table, s, e, costs, b) for s, e in sets[name].values()]
            f, losses = np.mean([r[0] for r in runs]), [r[1] for r in runs]
            out.append(f"{f:.3f} / {np.mean(losses):+.3f} / {min(losses):+.3f}")
        print(f"| {name} | " + " | ".join(out) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
