"""Edge routing, after ARM (Chen et al., ECCV 2022): no classifier runs.

Each patch's edge score indexes a table of every branch's expected error there, measured
once on calibration photos; a price per multiply-add trades that error against the
branch's cost, and a tolerance (dB) or a budget sets the price.

Two scores (the table records which one it was measured with):

- ``gradient-max`` (the default since tables record it): the largest colour gradient in
  the patch (central differences per RGB channel, magnitude, max over channels, max over
  the patch; 18 multiply-adds a pixel). A maximum sees one thin edge in a flat patch and
  an edge between two colours of equal brightness, which a luma mean averages away; on
  26 unseen images it ranks what the widest branch gains over bicubic with Spearman 0.83
  (docs/routing.md).
- ``laplacian-mean``: the mean absolute Laplacian of the luma (8 multiply-adds a pixel),
  the first edge tables' score.

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

from classsr_core.base.run import Run
from classsr_core.errors import CheckpointError, InputError
from classsr_core.plugins.hookspecs import hookimpl
from classsr_core.routing.base import Router, Scores

EDGE_MACS_PER_PIXEL = 8  # luma: 3 multiply-adds; 4-neighbour Laplacian: 5
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as basicsr's rgb2ycbcr


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> the 4-neighbour Laplacian of every channel, in float32, borders
    replicated: the stencil the edge statistics and the flat map share."""
    g = F.pad(x.float(), (1, 1, 1, 1), mode="replicate")
    c = g[..., 1:-1, 1:-1]
    lap = 4 * c - g[..., :-2, 1:-1] - g[..., 2:, 1:-1] - g[..., 1:-1, :-2] - g[..., 1:-1, 2:]
    return lap


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> ``(N, H, W)``: |4-neighbour Laplacian| of the luma
    (of the channel mean unless C is 3), borders replicated."""
    if x.shape[1] == 3:
        g = (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        g = x.mean(1, keepdim=True)
    return laplacian(g).abs()[:, 0]


def patch_scores(emap: torch.Tensor, ys, xs, patch_size: int) -> torch.Tensor:
    """Mean of an ``(H, W)`` edge map over every ``patch_size`` square whose top-left
    corner is ``(ys[i], xs[j])``: ``(len(ys) * len(xs),)`` on the CPU, row-major. Per patch
    row, its column sums, then running sums along the row (float64, on the CPU: the routing
    runs there, and MPS has no float64): a patch's score depends only on its own rows, so
    an image scored in bands (the band engine) gets the same numbers to the last bit."""
    p = int(patch_size)
    m = emap.detach().cpu().double()
    x = torch.as_tensor(xs)
    out = []
    for y in ys:
        run = F.pad(m[y : y + p].sum(dim=0).cumsum(0), (1, 0))
        out.append(run[x + p] - run[x])
    return (torch.stack(out) / (p * p)).reshape(-1).float()


GRADIENT_MACS_PER_PIXEL = 18  # per RGB channel: 2 differences, 2 squares, 1 add, + max


def gradient_map(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``: the colour gradient magnitude, the largest over
    channels of ``sqrt(dx^2 + dy^2)`` with central differences (borders replicated)."""
    g = F.pad(x.float(), (1, 1, 1, 1), mode="replicate")
    dx = (g[..., 1:-1, 2:] - g[..., 1:-1, :-2]) * 0.5
    dy = (g[..., 2:, 1:-1] - g[..., :-2, 1:-1]) * 0.5
    return (dx.square() + dy.square()).sqrt().amax(dim=1)


def patch_maxima(emap: torch.Tensor, ys, xs, patch_size: int) -> torch.Tensor:
    """Max of an ``(H, W)`` map over every ``patch_size`` square whose top-left corner is
    ``(ys[i], xs[j])``: ``(len(ys) * len(xs),)`` on the CPU, row-major. Rows first, then
    columns: each pass reads the map about once."""
    p = int(patch_size)
    m = emap.detach().float().cpu()
    rows = torch.stack([m[y : y + p].amax(dim=0) for y in ys])  # (R, W)
    cols = torch.stack([rows[:, x : x + p].amax(dim=1) for x in xs], dim=1)  # (R, C)
    return cols.reshape(-1)


def energy_map(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``: the squared 4-neighbour Laplacian, the largest over
    the channels (borders replicated). Its mean over a patch is the patch's high-frequency
    energy: what a network can add above bicubic lives there, and a squared error is a mean
    of squares too. Per channel, so that an edge between two colours of equal brightness,
    which a luma Laplacian does not see, counts."""
    return laplacian(x).square().amax(dim=1)


ENERGY_MACS_PER_PIXEL = 20  # per channel: 5 for the Laplacian, 1 to square; + the max

# A pixel is flat when no channel's 4-neighbour Laplacian reaches half an 8-bit level: on an
# image read from a file (levels k/255) exactly when all four neighbours equal it.
FLAT_LEVEL = 0.5 / 255
FLAT_MACS_PER_PIXEL = 16  # per channel: 5 for the Laplacian; + the comparison
FLAT_MACS_FROM_ENERGY = 2  # the laplacian-energy map holds the Laplacian: compare, average
FLAT_LIMIT = 0.5  # an image more than half flat is a render: see EdgeTable.flat_limit


def flat_map(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``: 1.0 where the pixel is flat (:data:`FLAT_LEVEL`),
    else 0.0 (borders replicated)."""
    return (laplacian(x).abs().amax(dim=1) < FLAT_LEVEL).float()


# name -> (per-pixel map, per-patch reduction, multiply-adds per pixel)
STATISTICS = {
    "laplacian-mean": (edge_map, patch_scores, EDGE_MACS_PER_PIXEL),
    "gradient-max": (gradient_map, patch_maxima, GRADIENT_MACS_PER_PIXEL),
    "laplacian-energy": (energy_map, patch_scores, ENERGY_MACS_PER_PIXEL),
}
DEFAULT_STATISTIC = "laplacian-energy"
ALLOCATIONS = ("price", "relative")


def edge_scores(x: torch.Tensor, ys, xs, patch_size: int, statistic: str) -> np.ndarray:
    """The ``statistic`` of every patch of ``x`` (``(1, C, H, W)``), row-major."""
    if statistic not in STATISTICS:
        raise InputError(f"unknown edge statistic {statistic!r}; choose one of {list(STATISTICS)}")
    per_pixel, per_patch, _ = STATISTICS[statistic]
    return per_patch(per_pixel(x)[0], ys, xs, patch_size).numpy()


@dataclass(frozen=True)
class EdgeTable:
    """Expected error of each branch by edge score, and the default price of cost.

    ``edges``: ``B - 1`` increasing score boundaries (bin ``b`` holds scores in
    ``[edges[b-1], edges[b])``). ``mse``: ``B`` rows of ``M`` mean squared errors (images in
    [0, 1]), cheapest branch first. ``price``: the default trade-off, in squared error per
    multiply-add per pixel: the price for ``tolerance_db``. ``statistic``: the edge score
    the table was measured with (:data:`STATISTICS`). ``curve``: ``(price, mean_db,
    worst_db)``, prices increasing: the mean and the worst loss against the widest branch
    of the calibration images (the worst after leaving out the ``worst_share`` that lose
    most), each routed at that price by a table measured *without* it
    (leave one image out), so ``tolerance=`` maps to a price by what held on images the
    table had not seen.
    """

    edges: tuple[float, ...]
    mse: tuple[tuple[float, ...], ...]
    price: float
    tolerance_db: float
    patches: int = 0  # calibration patches the table was measured on
    statistic: str = "laplacian-mean"  # what tables written before the field measured
    curve: tuple[tuple[float, float, float], ...] = ()
    # Interpolate linearly between bin centres instead of a step per bin: every patch in a
    # bin then has its own expected error, so a price (a budget, a folder budget) moves
    # patches one by one, not a whole bin at once. Tables written before: steps.
    interpolate: bool = False
    # "price": one price per multiply-add for every image (``price``; the curve's first
    # column is a price). "relative": a tolerance is a dB loss of *each image*, so each image
    # gets the loss budget ``10^(t/10) - 1`` times its own expected error on the widest
    # branch, and the cheapest routing within it (the curve's first column is that ``t``).
    # A sky and a page of text then pay the same dB, not the same squared error.
    allocation: str = "price"
    # Multiply-adds per pixel of each branch the table was measured with: a model whose
    # branches cost otherwise (other widths) is refused instead of routed by a wrong table.
    branch_costs: tuple[float, ...] = ()
    # The share of calibration images the curve's worst column leaves out (the worst ones;
    # calibration.WORST_SHARE). 0: none, as the tables written before the field.
    worst_share: float = 0.0
    # A "relative" table routes an image whose share of flat pixels (:func:`flat_map`, the
    # mean over its patches) exceeds this at the curve's lowest point, whatever the
    # tolerance. Photos have sensor noise and texture (no calibration or holdout photo is
    # past 0.26 flat: benchmarks/flat_shares.py); an image more than half flat is a render,
    # flat colour fields with sharp edges, on which the table's estimates fail both ways
    # and which no calibration photo is like (docs/routing.md, "Renders"). 1: no limit, as
    # the tables written before the field.
    flat_limit: float = 1.0

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
        if self.statistic not in STATISTICS:
            raise CheckpointError(
                f"edge table: unknown statistic {self.statistic!r} (known: "
                f"{', '.join(STATISTICS)}); this file needs a newer classsr"
            )
        if self.allocation not in ALLOCATIONS:
            raise CheckpointError(
                f"edge table: unknown allocation {self.allocation!r} (known: "
                f"{', '.join(ALLOCATIONS)}); this file needs a newer classsr"
            )
        if not (0 < self.flat_limit <= 1):
            raise CheckpointError(
                f"edge table: flat_limit must be in (0, 1], got {self.flat_limit}; "
                "calibrate it again"
            )

    def price_for(
        self, tolerance_db: float, *, pixel_costs=None, expected=None, flat_share=None
    ) -> float:
        """The price for ``tolerance_db``: the highest calibrated point at which the
        held-out images lost at most ``tolerance_db`` on average and none more than twice
        that (a tolerance is a mean that no single image may blow: the worst is what a user
        notices), all but the ``worst_share`` of them that lose most; the lowest calibrated
        point if none is, or if the image's ``flat_share`` exceeds ``flat_limit``. A
        "relative" table's point is a per-image loss budget, turned into this image's price
        from its patches' ``expected`` errors (:meth:`expected_mse`) and the branches'
        ``pixel_costs``."""
        if not self.curve:
            raise InputError(
                "this model's edge table has no tolerance curve (it was calibrated before "
                "tolerance= existed): calibrate it again with `classsr calibrate`, or use "
                "budget="
            )
        best = self.curve[0][0]
        render = flat_share is not None and flat_share > self.flat_limit
        for point, mean, worst in self.curve:
            if render or mean > tolerance_db or worst > 2 * tolerance_db:
                break  # a render stays at the lowest point
            best = point
        if self.allocation == "price":
            return float(best)
        if expected is None or pixel_costs is None:
            raise InputError(
                "a relative edge table prices each image: pass its expected errors and the "
                "branch costs"
            )
        return image_price(expected, pixel_costs, float(best))

    @property
    def num_branches(self) -> int:
        return len(self.mse[0])

    def expected_mse(self, scores: np.ndarray) -> np.ndarray:
        """``(n, M)`` expected squared error of every branch for ``n`` edge scores."""
        mse = np.asarray(self.mse, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if self.interpolate and len(self.edges) >= 2:
            edges = np.asarray(self.edges)
            knots = np.concatenate([edges[:1], (edges[1:] + edges[:-1]) / 2, edges[-1:]])
            return np.stack([np.interp(scores, knots, mse[:, j]) for j in range(mse.shape[1])], 1)
        bins = np.searchsorted(np.asarray(self.edges), scores, side="right")
        return mse[bins]

    def route(
        self,
        scores: np.ndarray,
        pixel_costs,
        price: float | None = None,
        *,
        expected=None,
        flat_share=None,
    ) -> np.ndarray:
        """Branch per patch minimising expected error + ``price`` x multiply-adds per pixel
        (default: the table's own tolerance)."""
        if expected is None:
            expected = self.expected_mse(scores)
        if price is None:
            price = (
                self.price
                if self.allocation == "price"
                else self.price_for(
                    self.tolerance_db,
                    pixel_costs=pixel_costs,
                    expected=expected,
                    flat_share=flat_share,
                )
            )
        cost = np.asarray(pixel_costs, dtype=np.float64)[None, :]
        return np.argmin(expected + price * cost, axis=1)

    def to_dict(self) -> dict:
        return {
            "edges": list(self.edges),
            "mse": [list(r) for r in self.mse],
            "price": self.price,
            "tolerance_db": self.tolerance_db,
            "patches": self.patches,
            "statistic": self.statistic,
            "curve": [list(row) for row in self.curve],
            "interpolate": self.interpolate,
            "allocation": self.allocation,
            "branch_costs": list(self.branch_costs),
            "worst_share": self.worst_share,
            "flat_limit": self.flat_limit,
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
                statistic=str(d.get("statistic", "laplacian-mean")),
                curve=tuple(tuple(float(v) for v in row) for row in d.get("curve", ())),
                interpolate=bool(d.get("interpolate", False)),
                allocation=str(d.get("allocation", "price")),
                branch_costs=tuple(float(v) for v in d.get("branch_costs", ())),
                worst_share=float(d.get("worst_share", 0.0)),
                flat_limit=float(d.get("flat_limit", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"unreadable edge table in the checkpoint ({exc})") from None


def branch_pixel_costs(model) -> list[float]:
    """Each branch's multiply-adds per LR pixel (fvcore, cached): what a table's prices are
    per; an ``InputError`` when a branch cannot be counted."""
    from classsr_core.base.flops import count_flops

    p = int(model.patch_size)
    return [count_flops(b, (1, model.in_channels, p, p)) / (p * p) for b in model.branches]


def image_price(expected: np.ndarray, pixel_costs, loss_db: float) -> float:
    """The highest price at which routing one image by ``expected`` (``(n, M)`` squared
    errors, widest branch last) keeps its expected loss against the widest branch within
    ``loss_db``: the image's allowance is ``10^(loss_db/10) - 1`` times its own expected
    error on the widest branch. Bisection on the log of the price (the expected loss grows
    with the price)."""
    expected = np.asarray(expected, dtype=np.float64)
    if expected.size == 0:
        return 0.0
    cost = np.asarray(pixel_costs, dtype=np.float64)[None, :]
    loss = np.maximum(expected - expected[:, -1:], 0.0)
    allowed = (10 ** (loss_db / 10) - 1) * expected[:, -1].sum()
    rows = np.arange(len(expected))
    # Prices span the scale of the errors per multiply-add: far below, every patch takes the
    # widest branch; far above, the cheapest.
    scale = max(float(np.ptp(expected)), 1e-12) / max(float(np.ptp(cost)), 1e-12)
    lo, hi = math.log(scale * 1e-6), math.log(scale * 1e3)
    for _ in range(40):
        mid = (lo + hi) / 2
        assign = np.argmin(expected + math.exp(mid) * cost, axis=1)
        if loss[rows, assign].sum() <= allowed:
            lo = mid
        else:
            hi = mid
    return math.exp(lo)


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
        if table.branch_costs:
            try:
                have = branch_pixel_costs(model)
            except InputError:  # uncountable: FLOPs are reported as unknown, route anyway
                return
            if not np.allclose(table.branch_costs, have, rtol=0.01, atol=1e-6):
                widths = getattr(model, "spec", {}).get("widths")
                what = f" (widths {list(widths)})" if widths else ""
                raise InputError(
                    "the edge table was calibrated for branches costing "
                    f"{[round(c, 1) for c in table.branch_costs]} multiply-adds a pixel, this "
                    f"model's cost {[round(c, 1) for c in have]}{what}: the table belongs to "
                    "another model; calibrate it again for this one (`classsr calibrate`)"
                )

    def cost(self, model, patch_size: int) -> float:
        table = self.state(model)
        macs = STATISTICS[table.statistic][2] + _flat_macs(table)
        return float(macs * patch_size * patch_size)

    def score(self, run: Run) -> Scores:
        table = self.state(run.model)
        grid = run.grid
        per_pixel, per_patch, _ = STATISTICS[table.statistic]
        emap = per_pixel(run.lr)[0]
        scores = per_patch(emap, grid.ys, grid.xs, grid.patch_size).numpy()
        flat = None
        if _flat_macs(table):
            # The energy map is the squared Laplacian's largest channel: flat where it is
            # below the level's square, without a second Laplacian.
            fmap = (
                (emap < FLAT_LEVEL**2).float()
                if table.statistic == "laplacian-energy"
                else flat_map(run.lr)[0]
            )
            flat = patch_scores(fmap, grid.ys, grid.xs, grid.patch_size).numpy()
        costs = np.asarray(run.costs.per_pixel)
        return table_scores(table, table.expected_mse(scores), costs, flat)


def _flat_macs(table: EdgeTable) -> int:
    """Multiply-adds a pixel the flat share costs (0: the table sets no flat limit)."""
    if table.allocation != "relative" or table.flat_limit >= 1:
        return 0
    return FLAT_MACS_FROM_ENERGY if table.statistic == "laplacian-energy" else FLAT_MACS_PER_PIXEL


def table_scores(
    table: EdgeTable, expected: np.ndarray, costs: np.ndarray, flat: np.ndarray | None = None
) -> Scores:
    """The router's view of an image whose patches' expected errors are ``expected`` (and
    shares of flat pixels ``flat``): its default routing, minus the errors as utility, and
    the price per tolerance (a relative table's depends on the whole image, so parts of one
    are re-scored whole)."""
    share = None if flat is None or len(flat) == 0 else float(np.mean(flat))
    default = table.route(None, costs, expected=expected, flat_share=share)
    return Scores(
        torch.from_numpy(default),
        -expected,
        tolerance_price=lambda t: table.price_for(
            t, pixel_costs=costs, expected=expected, flat_share=share
        ),
        whole=None
        if table.allocation == "price"
        else lambda utility, cells: table_scores(
            table, -np.asarray(utility), costs, cells.get("flat")
        ),
        cells=None if flat is None else {"flat": flat},
    )


@hookimpl
def classsr_register_routers(register):
    """Registered by the ``builtin_routers`` entry point (``classsr_plugins.routers.builtin``)."""
    register(
        "edge",
        EdgeRouter,
        description="a calibrated table from each patch's edge score to every branch's "
        "expected error (after ARM); no classifier runs",
    )
