"""The tile engine: split, classify, group by class, run each branch in batches, stitch.

An image of any size is cut into LR patches of ``patch_size`` with ``stride`` (32 / 28 as
the paper). The last row and column of patches are moved back to end exactly at the image
edge, so every pixel is covered (the official code drops the strips that do not fit the
grid). An image smaller than one patch is padded at the bottom / right to the patch size
and the output cropped back: reflect padding (mirror, edge pixel not repeated) when the
missing part is smaller than the image, else replicate padding (repeat the edge pixel),
since reflection cannot pad beyond the image's own size.

Every patch goes through the classifier in batches; patches are grouped by class and each
branch runs only on its own group, in batches of ``batch_size``. Each output patch is
added into an HR canvas and the canvas is divided by the summed weights: the mean over
overlaps (``blend="mean"``, as the paper), or a smooth separable window that favours patch
centres (``blend="window"``). Patches are cut from a strided view of the LR image per
batch, so memory is the LR image, the HR canvas and one batch: an 8K output never holds
all patch outputs at once.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from classsr_core.budget import assign_utility, shortfall_utility
from classsr_core.checks import check_image_tensor, check_tiling
from classsr_core.device import synchronize
from classsr_core.edge_router import EDGE_MACS_PER_PIXEL
from classsr_core.errors import InputError

BLENDS = ("mean", "window")
MODES = ("patches", "regions")
AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}
ROUTERS = ("classifier", "edge")

# Patches per branch call when the caller gives none, by device type and the branch's
# multiply-adds per patch: (threshold, batch below it, batch at or above it). On CPU small
# batches keep a heavy branch's activations in cache and are faster per patch (SRResNet and
# CARN-M: batch 4 beats 16 and 64) while a light branch gains from amortising per-call
# overhead (FSRCNN: 64 beats 16 and 4); measured in docs/performance.md. GPUs need large
# batches to fill up (not measured here).
_DEFAULT_BATCH = {
    "cpu": (1e8, 64, 4),
    "cuda": (1e9, 256, 64),
    "mps": (1e9, 64, 16),
}
# The Class-Module is cheap and per-call overhead dominates: classify in larger batches
# (an LR batch of 256 patches of 32x32 is 3 MB).
_MIN_CLASSIFY_BATCH = 128


@dataclass(frozen=True)
class PatchGrid:
    """Top-left corners of the LR patches (in the padded image), row-major."""

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    patch_size: int
    stride: int
    height: int  # padded LR height
    width: int  # padded LR width

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    def __len__(self) -> int:
        return self.rows * self.cols

    def position(self, k: int) -> tuple[int, int]:
        """LR ``(y, x)`` of patch ``k`` (row-major)."""
        r, c = divmod(int(k), self.cols)
        return self.ys[r], self.xs[c]


@dataclass
class InferResult:
    """What :func:`infer` returns (see ``docs`` and ``shared/api.md``)."""

    output: Any  # torch.Tensor or uint8 numpy array, same kind as the input
    class_map: np.ndarray  # (rows, cols) int64: the class of every patch
    class_counts: list[int]  # patches per class, cheapest branch first
    flops: float  # fvcore multiply-adds spent, classifier included
    flops_fraction: float  # flops / (patches x widest branch's flops, no classifier)
    timings: dict[str, float]  # seconds: classify, branches, stitch, total (+ per branch)
    probs: np.ndarray | None = None  # (rows, cols, M) classifier probabilities
    grid: PatchGrid | None = None
    patch_size: int = 0  # LR patch size and stride used
    stride: int = 0
    scale: int = 1
    batch_sizes: list[int] = field(default_factory=list)  # patches per call, per branch
    blend: str = "mean"
    device: str = "cpu"
    padding: tuple[int, int] = (0, 0)  # LR rows / cols added at the bottom / right
    flops_per_patch: dict[str, Any] = field(default_factory=dict)  # classifier, branches
    mode: str = "patches"
    halos: list[int] = field(default_factory=list)  # regions: LR halo per branch
    tiles: int = 0  # branch inputs run: patches, or merged rectangles in "regions" mode
    router: str = "classifier"  # or "edge" (flops_per_patch["classifier"] is then its cost)

    @property
    def num_patches(self) -> int:
        return int(self.class_map.size)

    @property
    def origins(self) -> np.ndarray:
        """``(rows * cols, 2)`` LR ``(y, x)`` top-left corners, row-major like class_map."""
        if self.grid is None:
            return np.zeros((0, 2), dtype=np.int64)
        ys, xs = np.meshgrid(self.grid.ys, self.grid.xs, indexing="ij")
        return np.stack([ys.reshape(-1), xs.reshape(-1)], axis=1).astype(np.int64)


def patch_grid(height: int, width: int, patch_size: int, stride: int) -> PatchGrid:
    """The grid :func:`infer` uses on an LR image of ``height x width`` (before padding)."""
    check_tiling(patch_size, stride)
    h, w = max(height, patch_size), max(width, patch_size)
    return PatchGrid(
        _starts(h, patch_size, stride), _starts(w, patch_size, stride), patch_size, stride, h, w
    )


def assign_classes(
    probs: torch.Tensor,
    *,
    budget: float | None = None,
    costs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Route patches: ``(N, M)`` probabilities -> ``(N,)`` class indices.

    No budget: argmax, as the paper. With ``budget`` (a fraction of the widest branch's
    multiply-adds on the same tiling, classifier included) and the per-patch ``costs``
    (``{"classifier": float, "branches": [float, ...]}``), the assignment that maximises
    expected quality within the budget (:func:`classsr_core.budget.assign_budget`).
    """
    if budget is None:
        return probs.argmax(dim=1)
    from classsr_core.budget import assign_budget

    _check_budget_costs(costs)
    assign = assign_budget(
        probs.float().cpu().numpy(),
        costs["branches"],
        costs["classifier"],
        max(costs["branches"]),
        float(budget),
    )
    return torch.from_numpy(assign).to(probs.device)


def default_batch_size(device: torch.device | str, flops_per_patch: float | None = None) -> int:
    """Patches per branch call on ``device`` for a branch of ``flops_per_patch``
    multiply-adds (see ``_DEFAULT_BATCH``); unknown cost counts as heavy."""
    threshold, light, heavy = _DEFAULT_BATCH.get(torch.device(device).type, (1e9, 32, 8))
    if flops_per_patch is not None and flops_per_patch < threshold:
        return light
    return heavy


def infer(
    model,
    image,
    *,
    patch_size: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    blend: str = "mean",
    budget: float | None = None,
    device: str | torch.device | None = None,
    classes=None,
    mode: str = "patches",
    halo: int | None = None,
    max_cells: int | None = None,
    amp: str | None = None,
    router: str = "classifier",
) -> InferResult:
    """Run a whole image through ``model`` (a :class:`~classsr_core.wrapper.ClassWrapper`).

    Args:
        image: float tensor ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1], or a uint8 numpy
            array ``(H, W, C)`` / ``(H, W)``. The output is of the same kind, ``scale`` x
            larger; numpy output is rounded and clipped to uint8, tensor output is raw.
        patch_size, stride: LR tiling; default the model's (32 / 28; in "regions" the stride
            defaults to the patch size).
        batch_size: patches per branch call (the classifier takes at least 128); default
            per device type and branch cost (:func:`default_batch_size`).
        blend: ``"mean"`` (average over overlaps) or ``"window"`` (smooth weights).
        budget: target FLOPs as a fraction of the widest branch on the same tiling
            (true multiply-adds, classifier included); every image lands within about a
            patch's cost step of it (:mod:`classsr_core.budget`). ``None``: argmax routing.
        device: where to run; default where the model's parameters are. A given device
            moves the model there.
        classes: force the routing: one class per patch, shape ``(rows, cols)`` or
            ``(rows * cols,)`` of :func:`patch_grid`. The classifier still runs (its
            probabilities are returned and its cost counted), so costs are a real run's.
        mode: ``"patches"`` runs every patch on its own and averages the overlaps (the
            paper); ``"regions"`` merges neighbouring patches of the same class into larger
            tiles with a halo and writes each output pixel once (:mod:`classsr_core.regions`).
            In "regions" ``flops_fraction`` is relative to the widest branch on the whole
            image, and a budget chooses the classes by their per-patch costs.
        halo: "regions" only: LR pixels of context around each tile; default each branch's
            measured receptive field, at most 8 (with the full field the output equals the
            branch run on the whole image).
        max_cells: "regions" only: the largest tile, in patches a side (default 8).
        amp: ``"fp16"`` or ``"bf16"``: run the classifier and branches under
            ``torch.autocast`` (for GPUs with tensor cores; the output canvas stays fp32).
        router: ``"classifier"`` (the Class-Module, as the paper) or ``"edge"``: the
            model's calibrated edge table routes by each patch's edge score and no
            classifier runs (:mod:`classsr_core.edge_router`); without a budget it uses the
            table's price. Its 8 multiply-adds a pixel count as the routing cost.
    """
    t_start = time.perf_counter()
    if budget is not None and model.classifier is None:
        raise InputError("budget= needs a model with at least two branches to choose from")
    if blend not in BLENDS:
        raise InputError(f"blend must be one of {BLENDS}, got {blend!r}")
    if amp is not None and amp not in AMP:
        raise InputError(f"amp must be None, 'fp16' or 'bf16', got {amp!r}")
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    table = check_router(model, router)
    if mode == "regions" and blend != "mean":
        raise InputError("blend applies to mode='patches' only: regions do not overlap")
    if halo is not None and int(halo) < 0:
        raise InputError(f"halo must be 0 or more LR pixels, got {halo}")
    if max_cells is not None and int(max_cells) < 1:
        raise InputError(f"max_cells must be at least 1, got {max_cells}")
    p = int(patch_size if patch_size is not None else model.patch_size)
    if stride is None:
        # Regions need no overlap (halos give the context): the classifier's grid defaults
        # to side-by-side patches, 1.31x fewer than at the paper's 32 / 28.
        stride = p if mode == "regions" else model.stride
    s = int(stride)
    check_tiling(p, s)
    scale = int(model.scale)

    x, kind = _to_tensor(image, model.in_channels)
    dev = torch.device(device) if device is not None else _model_device(model)
    if device is not None:
        model.to(dev)
    if batch_size is not None and int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    dtype = _model_dtype(model)

    height, width = x.shape[-2:]
    grid = patch_grid(height, width, p, s)
    n = len(grid)
    num_classes = len(model.branches)
    forced = _check_classes(classes, grid, num_classes)
    costs = _patch_costs(model, (1, model.in_channels, p, p))
    if table is not None:  # the edge score replaces the classifier's cost
        costs = {**costs, "classifier": float(EDGE_MACS_PER_PIXEL * p * p)}
    if batch_size is not None:
        sizes = [int(batch_size)] * num_classes
    else:
        sizes = [default_batch_size(dev, f) for f in costs["branches"]]

    # Restore every submodule's own flag afterwards (frozen BatchNorm branches stay in eval
    # while the classifier trains): model.train(flag) would flip them all.
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    timings = {"classify": 0.0, "branches": 0.0, "stitch": 0.0}
    try:
        autocast = torch.autocast(dev.type, dtype=AMP[amp]) if amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            if dev.type == "cuda" and x.device.type == "cpu":
                # One upload of the whole LR image (there are no per-patch copies): from
                # pinned memory it is a DMA transfer that does not block the host.
                x = x.pin_memory().to(dev, non_blocking=True)
            lr = _pad_to(x.to(dev, dtype), grid.height, grid.width)
            # (H-p+1, W-p+1, C, p, p) view of every possible patch, no copy: a batch is cut
            # from it with one gather that yields (B, C, p, p) directly.
            view = lr.unfold(2, p, 1).unfold(3, p, 1)[0].permute(1, 2, 0, 3, 4)
            # On CPU, oneDNN runs convolutions on channels-last (NHWC) input 5-40% faster
            # (SRResNet-36: 27 vs 40 ms per patch, docs/performance.md); the layout then
            # carries through the network. Elsewhere keep PyTorch's default layout.
            layout = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
            ys = torch.tensor(grid.ys, device=dev)
            xs = torch.tensor(grid.xs, device=dev)

            def patches(idx: torch.Tensor) -> torch.Tensor:
                batch = view[ys[idx // grid.cols], xs[idx % grid.cols]]
                return batch.contiguous(memory_format=layout)

            # 1. classify every patch, in batches
            t0 = _now(dev)
            probs = utility = None
            if table is not None:
                from classsr_core.edge_router import edge_map, patch_scores

                scores = patch_scores(edge_map(lr)[0], grid.ys, grid.xs, p).numpy()
                utility = -table.expected_mse(scores)
            elif model.classifier is not None:
                chunks = []
                cbs = max(*sizes, _MIN_CLASSIFY_BATCH)
                for start in range(0, n, cbs):
                    idx = torch.arange(start, min(start + cbs, n), device=dev)
                    chunks.append(model.classify(patches(idx)).float().softmax(dim=1))
                probs = torch.cat(chunks)
            if mode == "regions":
                from classsr_core import regions

                halos = _halos(model, halo, dev)
                cap = regions.MAX_CELLS if max_cells is None else int(max_cells)

                def plan(assign: np.ndarray):
                    cells = np.asarray(assign).reshape(grid.rows, grid.cols)
                    # The real image, not the padded one: tiles need no whole patches, so
                    # they stop at its edge exactly as a whole-image run does.
                    rects = regions.rectangles(cells, grid.ys, grid.xs, p, height, width, cap)
                    batches = regions.tile_batches(rects, halos, height, width)
                    pixels = regions.class_pixels(batches, num_classes)
                    return batches, regions.fraction(costs, n, pixels, p, height * width)

            if probs is not None and budget is not None:
                utility = shortfall_utility(probs.float().cpu().numpy())
            if forced is not None:
                routed = forced.to(dev)
            elif utility is not None and budget is not None:
                _check_budget_costs(costs)
                if mode == "regions":
                    fraction_of = lambda a: plan(a)[1][1]  # noqa: E731
                    assign = regions.assign_for_regions(utility, float(budget), costs, fraction_of)
                else:
                    widest = max(costs["branches"])
                    args = (costs["branches"], costs["classifier"], widest, float(budget))
                    assign = assign_utility(utility, *args)
                routed = torch.from_numpy(assign).to(dev)
            elif utility is not None:  # edge table, no budget: its calibrated price
                pixel_costs = np.asarray(costs["branches"]) / (p * p)
                routed = torch.from_numpy(table.route(scores, pixel_costs)).to(dev)
            elif probs is not None:
                routed = assign_classes(probs, budget=budget, costs=costs)
            else:
                routed = torch.zeros(n, dtype=torch.long, device=dev)
            routed_cpu = routed.cpu()
            timings["classify"] = _now(dev) - t0

            if mode == "regions":
                batches, (flops, fraction) = plan(routed_cpu.numpy())
                # uint8 out: each tile is rounded into an HWC uint8 canvas as it is written
                # (every pixel once), never a float canvas plus a whole-image pass.
                to_uint8 = kind == "numpy"
                canvas, tiles = _run_regions(
                    model,
                    lr[:, :, :height, :width],
                    batches,
                    sizes,
                    (p, scale),
                    layout,
                    timings,
                    dev,
                    to_uint8,
                )
                hr = canvas if to_uint8 else canvas[None]  # tiles stop at the image's edge
            else:
                canvas = _run_patches(
                    model, routed_cpu, patches, grid, sizes, p, scale, blend, timings, dev
                )
                hr = canvas[None, :, : height * scale, : width * scale]
            t0 = _now(dev)
            output = _from_tensor(hr, kind, image)
            timings["stitch"] += _now(dev) - t0
    finally:
        for m, flag in was_training:
            m.training = flag

    counts = torch.bincount(routed_cpu, minlength=num_classes).tolist()
    if mode != "regions":
        flops, fraction = _spent(costs, n, counts)
        halos, tiles = [], n
    timings["total"] = time.perf_counter() - t_start
    return InferResult(
        output=output,
        class_map=routed_cpu.numpy().astype(np.int64).reshape(grid.rows, grid.cols),
        class_counts=[int(c) for c in counts],
        flops=flops,
        flops_fraction=fraction,
        timings=timings,
        probs=None if probs is None else probs.cpu().numpy().reshape(grid.rows, grid.cols, -1),
        grid=grid,
        patch_size=p,
        stride=s,
        scale=scale,
        batch_sizes=sizes,
        blend=blend,
        device=str(dev),
        padding=(grid.height - height, grid.width - width),
        flops_per_patch=costs,
        mode=mode,
        halos=halos,
        tiles=tiles,
        router=router,
    )


# -- internals -----------------------------------------------------------------------------


def _starts(length: int, patch: int, stride: int) -> tuple[int, ...]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:  # align the last patch to the edge: cover everything
        starts.append(length - patch)
    return tuple(starts)


def _now(dev: torch.device) -> float:
    synchronize(dev)
    return time.perf_counter()


def _model_device(model) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _model_dtype(model) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _to_tensor(image, channels: int) -> tuple[torch.Tensor, str]:
    """``(1, C, H, W)`` float tensor and the input's kind (numpy / tensor3 / tensor4)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(
                f"numpy images must be uint8 (H, W, C) or (H, W), got dtype {image.dtype}; "
                "pass a float torch tensor (1, C, H, W) in [0, 1] for other ranges"
            )
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise InputError(f"numpy images must be (H, W, C) or (H, W), got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        return check_image_tensor(t, channels), "numpy"
    if isinstance(image, torch.Tensor):
        kind = "tensor3" if image.dim() == 3 else "tensor4"
        t = check_image_tensor(image, channels)
        if t.shape[0] != 1:
            raise InputError(
                f"infer takes one image at a time, got a batch of {t.shape[0]}; loop over it "
                "(the engine batches patches, not images)"
            )
        return t, kind
    raise InputError(
        f"image must be a torch.Tensor or a uint8 numpy array, got {type(image).__name__}"
    )


def _from_tensor(hr: torch.Tensor, kind: str, image):
    """The output in the input's kind; ``hr`` is the (1, C, H, W) float canvas (a view),
    or for numpy output already the (H, W, C) uint8 canvas of regions mode."""
    if kind == "numpy":
        if hr.dtype == torch.uint8:  # regions mode's canvas, rounded tile by tile
            arr = hr.cpu().numpy()
        else:
            arr = hr[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)
            arr = np.ascontiguousarray(arr.cpu().numpy())
        return arr[:, :, 0] if image.ndim == 2 and arr.shape[2] == 1 else arr
    out = hr.to(image.device, image.dtype).contiguous()  # copies only if cropped or moved
    return out[0] if kind == "tensor3" else out


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom / right up to ``height x width`` (reflect where possible, else replicate)."""
    for dim, target in ((2, height), (3, width)):
        missing = target - x.shape[dim]
        if missing <= 0:
            continue
        pad = (0, 0, 0, missing) if dim == 2 else (0, missing, 0, 0)
        mode = "reflect" if missing < x.shape[dim] else "replicate"
        x = F.pad(x, pad, mode=mode)
    return x


def _window(size: int, blend: str, dev: torch.device) -> torch.Tensor:
    if blend == "mean":
        return torch.ones(size, device=dev)
    # Raised cosine sampled at pixel centres: smooth, largest in the middle, never zero
    # (pixels at the image edge are covered by one patch only and must keep a weight).
    t = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) / size
    return (0.5 - 0.5 * torch.cos(2 * math.pi * t)).clamp_min(1e-3)


def _coverage(starts, length: int, scale: int, win: torch.Tensor) -> torch.Tensor:
    """Summed 1D weights along one axis; the 2D weight map is their outer product because
    the patches form a full grid (rows x cols)."""
    w = torch.zeros(length * scale, device=win.device)
    ps = win.numel()
    for start in starts:
        w[start * scale : start * scale + ps] += win
    return w


def _divide(canvas: torch.Tensor, weight: torch.Tensor, dim: int) -> None:
    """Divide ``canvas`` in place by ``weight`` along ``dim``, skipping runs of weight 1.

    With the mean blend only the overlap strips (4 of every 28 rows / columns at 32/28)
    have a weight other than 1, so this touches a fraction of the HR canvas.
    """
    w = weight.cpu().numpy()
    todo = np.flatnonzero(w != 1.0)
    if todo.size == 0:
        return
    # split the indices into contiguous runs [start, stop)
    breaks = np.flatnonzero(np.diff(todo) != 1) + 1
    for run in np.split(todo, breaks):
        start, stop = int(run[0]), int(run[-1]) + 1
        shape = [1, 1, 1]
        shape[dim] = stop - start
        canvas.narrow(dim, start, stop - start).div_(weight[start:stop].view(shape))


def _check_classes(classes, grid: PatchGrid, num_classes: int) -> torch.Tensor | None:
    if classes is None:
        return None
    c = torch.as_tensor(np.asarray(classes.cpu() if torch.is_tensor(classes) else classes))
    if c.is_floating_point() or c.dtype == torch.bool:
        raise InputError(f"classes must be integers, got dtype {c.dtype}")
    if tuple(c.shape) not in ((grid.rows, grid.cols), (len(grid),)):
        raise InputError(
            f"classes has shape {tuple(c.shape)} but this image has a {grid.rows} x {grid.cols} "
            f"patch grid; give ({grid.rows}, {grid.cols}) or ({len(grid)},) "
            "(see classsr_core.tiling.patch_grid)"
        )
    c = c.reshape(-1).long()
    if c.numel() and (c.min() < 0 or c.max() >= num_classes):
        raise InputError(
            f"classes must be in 0..{num_classes - 1} (one per branch), got "
            f"{int(c.min())}..{int(c.max())}"
        )
    return c


def _patch_costs(model, shape) -> dict[str, Any]:
    """fvcore multiply-adds of the classifier and each branch on one patch (cached)."""
    from classsr_core.flops import count_flops

    try:
        clf = 0.0 if model.classifier is None else count_flops(model.classifier, shape)
        branches = [count_flops(b, shape) for b in model.branches]
    except InputError as exc:
        warnings.warn(f"FLOPs not counted: {exc}", stacklevel=3)
        return {"classifier": math.nan, "branches": [math.nan] * len(model.branches)}
    return {"classifier": clf, "branches": branches}


def check_router(model, router: str):
    """The model's edge table when ``router`` is "edge" (``None`` for the classifier); a
    clear error when the router is unknown or the model has no fitting table."""
    if router not in ROUTERS:
        raise InputError(f"router must be one of {ROUTERS}, got {router!r}")
    if router == "classifier":
        return None
    table = getattr(model, "edge_table", None)
    if table is None:
        raise InputError(
            "router='edge' needs a calibrated edge table and this model has none: make one "
            "with `classsr calibrate` (or classsr_core.edge_router.calibrate and save the "
            "model), or use router='classifier'"
        )
    if table.num_branches != len(model.branches):
        raise InputError(
            f"the edge table has {table.num_branches} branches, the model "
            f"{len(model.branches)}: calibrate it again for this model"
        )
    return table


def _spent(costs: dict[str, Any], n: int, counts: list[int]) -> tuple[float, float]:
    branch_flops = costs["branches"]
    spent = n * costs["classifier"] + sum(c * f for c, f in zip(counts, branch_flops))
    widest = n * max(branch_flops)
    return float(spent), float(spent / widest) if widest > 0 else math.nan


def _halos(model, halo: int | None, dev: torch.device) -> list[int]:
    """LR halo per branch: the given one, or each branch's receptive field (capped),
    measured once per branch and kept on the module."""
    if halo is not None:
        return [int(halo)] * len(model.branches)
    from classsr_core.regions import receptive_radius

    out = []
    for branch in model.branches:
        radius = getattr(branch, "_classsr_receptive_radius", None)
        if radius is None:
            radius = receptive_radius(branch, model.in_channels, model.scale, device=dev)
            branch._classsr_receptive_radius = radius
        out.append(radius)
    return out


def _run_patches(model, routed_cpu, patches, grid, sizes, p, scale, blend, timings, dev):
    """Each branch on its own patches, in batches (``patches(idx)`` cuts them); each output
    added into the HR canvas and the canvas divided by the summed blend weights. Returns
    the padded HR canvas."""
    ps = p * scale
    win = _window(ps, blend, dev)  # (ps,) separable weights
    win2 = win[:, None] * win[None, :]
    canvas = None
    for i, branch in enumerate(model.branches):
        bs = sizes[i]
        t_branch = 0.0
        idx_all = (routed_cpu == i).nonzero(as_tuple=True)[0]
        for start in range(0, idx_all.numel(), bs):
            idx = idx_all[start : start + bs]
            t0 = _now(dev)
            out = branch(patches(idx.to(dev)))
            t1 = _now(dev)
            t_branch += t1 - t0
            if out.shape[-2:] != (ps, ps):
                raise InputError(
                    f"branch {i} maps a {p}x{p} patch to {tuple(out.shape[-2:])}, "
                    f"not {ps}x{ps}: it does not upscale by the model's scale {scale}"
                )
            if canvas is None:
                # A normal tensor (not an inference tensor): it is updated in place
                # here and handed to the caller without a copy.
                with torch.inference_mode(False):
                    canvas = torch.zeros(
                        out.shape[1], grid.height * scale, grid.width * scale, device=dev
                    )
                # On CPU, add through numpy: a torch add of one patch is big enough
                # to be split over OpenMP threads, and on a busy machine waiting for
                # a descheduled thread made stitching ~100x slower (performance.md).
                target = canvas.numpy() if dev.type == "cpu" else canvas
            out = out.float()
            if blend == "window":
                out = out * win2
            if dev.type == "cpu":
                out = out.numpy()
            for k, j in enumerate(idx.tolist()):
                y, xx = grid.position(j)
                y, xx = y * scale, xx * scale
                target[:, y : y + ps, xx : xx + ps] += out[k]
            timings["stitch"] += _now(dev) - t1
        timings[f"branch_{i}"] = t_branch
        timings["branches"] += t_branch

    t0 = _now(dev)
    _divide(canvas, _coverage(grid.ys, grid.height, scale, win), dim=1)
    _divide(canvas, _coverage(grid.xs, grid.width, scale, win), dim=2)
    timings["stitch"] += _now(dev) - t0
    return canvas


def _run_regions(model, lr, batches, sizes, geometry, layout, timings, dev, to_uint8=False):
    """Each rectangle through its branch with its halo (``batches`` of
    :func:`classsr_core.regions.tile_batches`); every HR pixel written once.

    Tiles of one class and shape go in batches holding about as many pixels as a patch
    batch of that branch would. Returns the HR canvas, ``(C, H, W)`` float, or with
    ``to_uint8`` ``(H, W, C)`` uint8 rounded as :func:`_from_tensor` does (a numpy array on
    the CPU), and the number of tiles run."""
    p, scale = geometry
    height, width = lr.shape[-2:]
    canvas = target = None
    tiles = 0
    for cls, group in batches:
        ty0, ty1, tx0, tx1 = group[0][1]
        area = (ty1 - ty0) * (tx1 - tx0)
        per_call = max(1, sizes[cls] * p * p // area)
        for start in range(0, len(group), per_call):
            chunk = group[start : start + per_call]
            batch = torch.cat([lr[:, :, w[0] : w[1], w[2] : w[3]] for _, w in chunk])
            t0 = _now(dev)
            out = model.branches[cls](batch.contiguous(memory_format=layout))
            t1 = _now(dev)
            timings[f"branch_{cls}"] = timings.get(f"branch_{cls}", 0.0) + t1 - t0
            timings["branches"] += t1 - t0
            tiles += len(chunk)
            if out.shape[-2:] != ((ty1 - ty0) * scale, (tx1 - tx0) * scale):
                raise InputError(
                    f"branch {cls} maps a {ty1 - ty0}x{tx1 - tx0} tile to "
                    f"{tuple(out.shape[-2:])}: it does not upscale by the model's scale {scale}"
                )
            if canvas is None:
                # Every pixel is written exactly once: no zero fill needed.
                shape = (out.shape[1], height * scale, width * scale)
                with torch.inference_mode(False):
                    if to_uint8:
                        shape = (*shape[1:], shape[0])
                        canvas = torch.empty(shape, dtype=torch.uint8, device=dev)
                    else:
                        canvas = torch.empty(shape, device=dev)
                target = canvas.numpy() if dev.type == "cpu" else canvas  # see the patch path
            out = out.float()
            if to_uint8:  # NHWC: a free view of the channels-last output on CPU
                out = out.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
            if dev.type == "cpu":
                out = out.numpy()
            for b, (rect, win) in enumerate(chunk):
                oy, ox = (rect.y0 - win[0]) * scale, (rect.x0 - win[2]) * scale
                hh, ww = (rect.y1 - rect.y0) * scale, (rect.x1 - rect.x0) * scale
                ys = slice(rect.y0 * scale, rect.y1 * scale)
                xs = slice(rect.x0 * scale, rect.x1 * scale)
                if to_uint8:
                    target[ys, xs] = out[b, oy : oy + hh, ox : ox + ww]
                else:
                    target[:, ys, xs] = out[b, :, oy : oy + hh, ox : ox + ww]
            timings["stitch"] += _now(dev) - t1
    for i in range(len(model.branches)):
        timings.setdefault(f"branch_{i}", 0.0)
    return canvas, tiles


def _check_budget_costs(costs) -> None:
    if costs is None or any(math.isnan(c) for c in costs["branches"]):
        raise InputError("budget routing needs the branches' FLOPs, which could not be counted")
