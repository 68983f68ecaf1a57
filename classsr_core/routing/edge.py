"""Edge routing, after ARM (Chen et al., ECCV 2022): no classifier runs.

Each patch's edge score (the mean absolute Laplacian of its luma) indexes a table of every
branch's expected error there, measured once on calibration photos; a price per
multiply-add trades that error against the branch's cost, and a budget sets the price.

Why beside the Class-Module: for cheap backbones the Class-Module is a real share of the
work (15% of FSRCNN-56's multiply-adds) while the score costs 8 multiply-adds a pixel; and
the table ranks patches by what each branch *gains* there, where the classifier learned
difficulty classes for argmax. On the 4K test mosaic the edge score ranks the gain of
FSRCNN over bicubic with Spearman 0.91 (docs/performance.md).

The table is measured by :func:`classsr_core.routing.calibration.calibrate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from classsr_core.engine.run import Run
from classsr_core.errors import CheckpointError, InputError
from classsr_core.routing.base import Router, Scores

EDGE_MACS_PER_PIXEL = 8  # luma: 3 multiply-adds; 4-neighbour Laplacian: 5
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as basicsr's rgb2ycbcr


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> ``(N, H, W)``: |4-neighbour Laplacian| of the luma
    (of the channel mean unless C is 3), borders replicated."""
    if x.shape[1] == 3:
        g = (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        g = x.mean(1, keepdim=True)
    g = F.pad(g.float(), (1, 1, 1, 1), mode="replicate")
    c = g[..., 1:-1, 1:-1]
    lap = 4 * c - g[..., :-2, 1:-1] - g[..., 2:, 1:-1] - g[..., 1:-1, :-2] - g[..., 1:-1, 2:]
    return lap.abs()[:, 0]


def patch_scores(emap: torch.Tensor, ys, xs, patch_size: int) -> torch.Tensor:
    """Mean of an ``(H, W)`` edge map over every ``patch_size`` square whose top-left
    corner is ``(ys[i], xs[j])``: ``(len(ys) * len(xs),)`` on the CPU, row-major. One
    integral image, so the cost does not grow with the patch size; in float64 on the CPU
    (the routing runs there, and MPS has no float64)."""
    p = int(patch_size)
    table = F.pad(emap.detach().cpu().double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    y = torch.as_tensor(ys)[:, None]
    x = torch.as_tensor(xs)[None, :]
    total = table[y + p, x + p] - table[y, x + p] - table[y + p, x] + table[y, x]
    return (total / (p * p)).reshape(-1).float()


@dataclass(frozen=True)
class EdgeTable:
    """Expected error of each branch by edge score, and the default price of cost.

    ``edges``: ``B - 1`` increasing score boundaries (bin ``b`` holds scores in
    ``[edges[b-1], edges[b])``). ``mse``: ``B`` rows of ``M`` mean squared errors (images in
    [0, 1]), cheapest branch first. ``price``: the default trade-off, in squared error per
    multiply-add per pixel, chosen on the calibration photos as the highest that loses at
    most ``tolerance_db`` against the widest branch everywhere.
    """

    edges: tuple[float, ...]
    mse: tuple[tuple[float, ...], ...]
    price: float
    tolerance_db: float
    patches: int = 0  # calibration patches the table was measured on

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        mse = np.asarray(self.mse, dtype=np.float64)
        if mse.ndim != 2 or mse.shape[0] != len(edges) + 1 or mse.shape[1] < 1:
            raise CheckpointError(
                f"edge table: {mse.shape} error rows for {len(edges)} boundaries; "
                "expected one row per bin (boundaries + 1), one column per branch"
            )
        if not (np.isfinite(edges).all() and np.isfinite(mse).all() and math.isfinite(self.price)):
            raise CheckpointError("edge table holds non-finite numbers; calibrate it again")
        if (np.diff(edges) <= 0).any():
            raise CheckpointError("edge table boundaries must increase; calibrate it again")

    @property
    def num_branches(self) -> int:
        return len(self.mse[0])

    def expected_mse(self, scores: np.ndarray) -> np.ndarray:
        """``(n, M)`` expected squared error of every branch for ``n`` edge scores."""
        bins = np.searchsorted(np.asarray(self.edges), np.asarray(scores), side="right")
        return np.asarray(self.mse, dtype=np.float64)[bins]

    def route(self, scores: np.ndarray, pixel_costs, price: float | None = None) -> np.ndarray:
        """Branch per patch minimising expected error + ``price`` x multiply-adds per pixel."""
        price = self.price if price is None else float(price)
        cost = np.asarray(pixel_costs, dtype=np.float64)[None, :]
        return np.argmin(self.expected_mse(scores) + price * cost, axis=1)

    def to_dict(self) -> dict:
        return {
            "edges": list(self.edges),
            "mse": [list(r) for r in self.mse],
            "price": self.price,
            "tolerance_db": self.tolerance_db,
            "patches": self.patches,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EdgeTable:
        try:
            return cls(
                edges=tuple(float(v) for v in d["edges"]),
                mse=tuple(tuple(float(v) for v in row) for row in d["mse"]),
                price=float(d["price"]),
                tolerance_db=float(d["tolerance_db"]),
                patches=int(d.get("patches", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"unreadable edge table in the checkpoint ({exc})") from None


class EdgeRouter(Router):
    """Routes by the model's calibrated :class:`EdgeTable` (``model.router_states["edge"]``);
    no classifier runs. No budget: the table's price; a budget: minus the expected error."""

    name = "edge"
    state_type = EdgeTable

    def check(self, model) -> None:
        table = self.state(model)
        if table is None:
            raise InputError(
                "router='edge' needs a calibrated edge table and this model has none: make "
                "one with `classsr calibrate` (or classsr_core.routing.calibration.calibrate "
                "and save the model), or use router='classifier'"
            )
        if table.num_branches != len(model.branches):
            raise InputError(
                f"the edge table has {table.num_branches} branches, the model "
                f"{len(model.branches)}: calibrate it again for this model"
            )

    def cost(self, model, patch_size: int) -> float:
        return float(EDGE_MACS_PER_PIXEL * patch_size * patch_size)

    def score(self, run: Run) -> Scores:
        table = self.state(run.model)
        grid = run.grid
        scores = patch_scores(edge_map(run.lr)[0], grid.ys, grid.xs, grid.patch_size).numpy()
        default = table.route(scores, np.asarray(run.costs.per_pixel))
        return Scores(torch.from_numpy(default), lambda: -table.expected_mse(scores))
