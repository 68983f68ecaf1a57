"""How well a patch's edge score predicts what a bigger branch gains there.

Run by hand (not a test), from the repository root, after ``scripts/fetch_photos.sh``:

    .venv/bin/python benchmarks/edge_scores.py [--model classsr-fsrcnn-x4-fast]
        [--photos data/photos/val] [--patch 32]

For every whole 32x32 LR cell of every photo (the SR task's input, uint8-rounded) it
prints the rank correlation (Spearman) between the cell's edge score
(``classsr_core.routing.edge``: mean absolute Laplacian of the luma) and the squared-error
reduction of each branch over the cheapest one, each branch run on the whole photo (the
engine's regions mode, forced to that branch), and how the classifier's expected class
ranks against that gain and against the cell's mean intensity. It then compares, at equal
multiply-adds, the PSNR of three routings of the same cells: the edge table (the model's
own, calibrated on other photos), the model's classifier under the same budget, and the
oracle that knows every cell's errors (the upper bound of any router).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from classsr_core.engine import patch_grid
from classsr_core.io.images import list_images, read_image
from classsr_core.model.loading import load_model
from classsr_core.plugins.registry import lookup
from classsr_core.routing.edge import edge_map, patch_scores
from classsr_core.tasks import degraded_pairs


def ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def cells(model, x: torch.Tensor, hr: torch.Tensor, p: int):
    """Edge score, squared error per branch, classifier probabilities and mean intensity
    per whole cell."""
    s = model.scale
    h, w = x.shape[-2:]
    rows, cols = h // p, w // p
    ys, xs = np.arange(rows) * p, np.arange(cols) * p
    score = patch_scores(edge_map(x)[0], ys, xs, p).numpy()
    mean = patch_scores(x[0].mean(0), ys, xs, p).numpy()
    n = len(patch_grid(h, w, p, p))
    errors = []
    for j in range(len(model.branches)):
        res = model.infer(x, mode="regions", classes=np.full(n, j), router="classifier")
        se = (res.output.clamp(0, 1) - hr).square().mean(1)[0, : rows * p * s, : cols * p * s]
        errors.append(se.reshape(rows, p * s, cols, p * s).mean(dim=(1, 3)).reshape(-1))
    probs = res.probs[:rows, :cols].reshape(rows * cols, -1)  # grid cells = whole cells here
    return score, torch.stack(errors, 1).double().numpy(), probs, mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--photos", default="data/photos/val")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, device="cpu")
    task = lookup("tasks", "sr").factory(scale=model.scale)
    files = list_images([args.photos])
    pairs = degraded_pairs(task, [read_image(f).rgb for f in files], uint8=True)

    def target(clean):
        return torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]

    per_cell = [cells(model, x, target(clean), args.patch) for clean, x in pairs]
    score, err, probs, mean = (np.concatenate(v) for v in zip(*per_cell))
    print(f"{args.model} on {len(files)} photos ({args.photos}), {len(score)} cells")
    for j in range(1, err.shape[1]):
        gain = err[:, 0] - err[:, j]
        rho = spearman(score, gain)
        print(f"  Spearman(edge score, gain of branch {j} over branch 0) = {rho:.3f}")
    expected = probs @ np.arange(probs.shape[1])
    rho = spearman(expected, err[:, 0] - err[:, -1])
    print(f"  Spearman(classifier's expected class, gain of the widest over branch 0) = {rho:.3f}")
    rho = spearman(expected, mean)
    print(f"  Spearman(classifier's expected class, the cell's mean intensity) = {rho:.3f}")

    from classsr_core.routing.budget import assign_budget, assign_utility

    p2 = args.patch**2
    costs = np.array(model.infer(torch.zeros(1, 3, 8, 8)).flops_per_patch["branches"]) / p2
    table = model.edge_table
    n = len(score)

    def psnr(assign):
        mse = err[np.arange(n), assign].mean()
        return 10 * np.log10(1 / mse)

    widest = psnr(np.full(n, err.shape[1] - 1))
    print(f"  widest branch everywhere: {widest:.3f} dB (cells only; no router cost counted)")
    print("  budget (of the widest)  edge table  classifier  oracle   (dB against the widest)")
    for b in args.budgets:
        spend = (costs, 0.0, costs[-1], b)
        edge = assign_utility(-table.expected_mse(score), *spend) if table else None
        clf = assign_budget(probs, *spend)
        oracle = assign_utility(-err / err.max(), *spend)
        cols = [psnr(a) - widest if a is not None else float("nan") for a in (edge, clf, oracle)]
        print(f"  {b:>22.2f}  {cols[0]:+10.3f}  {cols[1]:+10.3f}  {cols[2]:+7.3f}")


if __name__ == "__main__":
    main()
