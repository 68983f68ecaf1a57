"""The tile engine: one image through grid -> router -> policy -> executor -> result.

Each arrow is one small interface: a :class:`~classsr_core.routing.base.Router` scores the
patches, a policy (:mod:`classsr_core.routing.policies`) picks a class per patch, an
:class:`~classsr_core.execution.base.Executor` runs the branches and stitches. Routers and
executors are plugin kinds looked up by name, so a new one needs no edit here. Classes,
FLOPs and time are counted on the way, not estimated afterwards.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from classsr_core.base.costs import PatchCosts
from classsr_core.base.defaults import default_mode
from classsr_core.base.flops import count_flops
from classsr_core.base.grid import check_classes, pad_to, patch_grid
from classsr_core.base.run import Run
from classsr_core.engine.convert import from_tensor, model_device, model_dtype, to_tensor
from classsr_core.engine.options import InferOptions
from classsr_core.engine.result import InferResult
from classsr_core.errors import BudgetWarning, DeviceWarning, InputError, PluginError
from classsr_core.execution.base import Executor
from classsr_core.plugins import get_registry, lookup
from classsr_core.routing.base import Router, Scores
from classsr_core.routing.policies import capped, choose

AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}

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


def infer(
    model,
    image,
    *,
    options: InferOptions | None = None,
    patch_size: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    blend: str | None = None,
    budget: float | None = None,
    device: str | torch.device | None = None,
    classes=None,
    mode: str | None = None,
    halo: int | None = None,
    max_cells: int | None = None,
    amp: str | None = None,
    router: str | None = None,
    tolerance: float | None = None,
    price: float | None = None,
    **executor_options,
) -> InferResult:
    """Run a whole image through ``model`` (a :class:`~classsr_core.model.ClassWrapper`).

    Args:
        image: float tensor ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1], or a uint8 numpy
            array ``(H, W, C)`` / ``(H, W)`` in 0..255. The output (``result.output``) is of
            the same kind and layout, ``scale`` x larger: a uint8 array in gives a uint8
            array out, rounded and clipped to 0..255; a float tensor in gives a float tensor
            of the same dtype, on the same device, out raw: *not* clipped, so values may
            overshoot [0, 1] a little (clamp before saving or comparing). A grey uint8
            array (``(H, W)`` / ``(H, W, 1)``) given to an RGB model is replicated to RGB and
            the output averaged back to one channel, as ``classsr upscale`` treats a grey
            file. Layout mix-ups (CHW arrays, channels-last tensors) are refused with the
            transpose / permute that fixes them. Float values
            outside [-0.05, 1.05], NaN, other numpy dtypes and batches of more than one
            image are refused with an :class:`~classsr_core.errors.InputError`.
        patch_size, stride: LR tiling; default the model's (32 / 28; in "regions" the stride
            defaults to the patch size).
        batch_size: patches per branch call (the classifier takes at least 128); default
            per device type and branch cost (:func:`default_batch_size`).
        options: an :class:`~classsr_core.engine.options.InferOptions` holding any of the
            options below (the keywords given here win): what a tool that passes the same
            options to many runs builds once.
        blend: an option of ``"patches"`` (its ``options_model``, as ``halo`` and
            ``max_cells`` are of ``"regions"``; an executor refuses an option it does not
            take): ``"mean"`` (average over overlaps, the default) or ``"window"``.
        budget: target FLOPs as a fraction of the widest branch on the same tiling
            (true multiply-adds, routing included); every image lands within about a
            patch's cost step of it. ``None``: the router's own routing.
        device: where to run; default where the model's parameters are. A given device
            moves the model there.
        classes: force the routing: one class per patch, shape ``(rows, cols)`` or
            ``(rows * cols,)`` of :func:`~classsr_core.engine.grid.patch_grid`. The router
            still runs (its scores are returned and its cost counted).
        mode: a registered executor (``classsr plugins``): ``"patches"`` runs every patch
            on its own and averages the overlaps (the paper); ``"regions"`` merges
            neighbouring patches of the same class into tiles with a halo and writes each
            output pixel once (then ``flops_fraction`` is relative to the widest branch on
            the whole image). ``None``: the model's own default (``model.defaults["mode"]``,
            recorded in its checkpoint: ``"regions"`` for the shipped ClassSR models),
            ``"patches"`` if it records none; ``result.mode`` says which ran.
        halo: "regions" only: LR pixels of context around each tile, every branch alike;
            default each branch's measured receptive field (at most 8), narrowed to the
            halo the model records (``model.defaults["halo"]``, measured by ``classsr
            calibrate`` to lose <= 0.001 dB; 4 for the shipped models). ``halo=8``: every
            tile exactly the branch's whole-image output.
        max_cells: "regions" only: the largest tile, in patches a side (default 8).
        amp: ``"fp16"`` or ``"bf16"``: run the router and branches under ``torch.autocast``
            (the recommended path to reduced precision). A model whose weights are cast
            instead (``model.half()``, ``model.to(torch.bfloat16)``) also runs: each network
            gets its input in its weights' dtype, while the LR image, the routing statistics,
            the halos' measurement and the HR canvas stay float32, and the output follows
            the input as above; what a device cannot run so is an ``InputError``.
        router: a registered router (``classsr plugins``): ``"classifier"`` (the
            Class-Module, as the paper) or ``"edge"`` (the model's calibrated edge table;
            no classifier runs). ``None``: the model's own default router (recorded in its
            checkpoint; ``"classifier"`` if it records none).
        tolerance: dB of expected loss against the widest branch (e.g. 0.05): the router's
            calibrated price for it (the edge router; see docs/routing.md). The first knob
            to reach for; ``budget`` fixes the FLOPs instead.
        price: the trade-off of the router's utility per multiply-add per LR pixel (what a
            tolerance or a folder budget resolves to); for tools, not a user knob.
        executor_options: the options of a plugin executor (its ``options_model``); an
            option the executor does not take (``halo`` with ``mode="patches"``, a typo) is
            refused with an ``InputError`` naming the executor and the options it knows.
    """
    t_start = time.perf_counter()
    opts = InferOptions.build(
        options,
        patch_size=patch_size,
        stride=stride,
        batch_size=batch_size,
        blend=blend,
        budget=budget,
        mode=mode,
        halo=halo,
        max_cells=max_cells,
        amp=amp,
        router=router,
        tolerance=tolerance,
        price=price,
        **executor_options,
    )
    executor, router_, options = check_options(model, opts)
    budget, tolerance, price, amp = opts.budget, opts.tolerance, opts.price, opts.amp
    _check_knobs(budget, tolerance, price)
    setup = _setup(model, image, executor, router_, opts, device)
    x, kind, dev, grid, costs, sizes, p, s = setup
    if amp == "fp16" and dev.type == "cpu":
        warnings.warn(
            DeviceWarning(
                f"amp='fp16' on {dev}: a CPU has no fast float16 kernels, and autocast to "
                "float16 runs several times slower than float32 there; leave amp unset on a "
                "CPU (amp is for GPUs: --device cuda)"
            ),
            stacklevel=3,
        )
    forced = check_classes(classes, grid, len(model.branches))
    autocast = torch.autocast(dev.type, dtype=AMP[amp]) if amp else contextlib.nullcontext()
    with _eval_mode(model), torch.inference_mode(), autocast, _cast_errors(model, dev):
        run = _open_run(model, x, kind, dev, grid, costs, sizes, options)
        t0 = run.now()
        scores = router_.score(run)
        executor.prepare(run)
        fraction_of = executor.fraction_of(run)
        routed = choose(
            scores,
            len(grid),
            forced=forced,
            budget=budget,
            tolerance=tolerance,
            price=price,
            costs=costs,
            fraction_of=fraction_of,
            router=router_.name,
        )
        if budget is not None and forced is None:
            warn_unmet_budget(budget, len(grid), costs, fraction_of)
        run.timings["classify"] = run.now() - t0
        hr, flops, fraction, tiles = executor.execute(run, routed)
        t0 = run.now()
        output = from_tensor(hr, kind, image)
        run.timings["stitch"] += run.now() - t0
    run.timings["total"] = time.perf_counter() - t_start
    return _result(run, output, routed, scores, (flops, fraction, tiles), executor, router_)


def cheapest_fraction(n: int, costs: PatchCosts, fraction_of) -> float:
    """The FLOPs fraction of the cheapest routing of ``n`` patches (every patch on the
    cheapest branch, routing included): the least any budget can spend."""
    if fraction_of is not None:
        return float(fraction_of(np.zeros(n, dtype=np.int64)))
    return costs.spent_on_patches(n, [n] + [0] * (len(costs.branches) - 1))[1]


def warn_unmet_budget(budget: float, n: int, costs: PatchCosts, fraction_of) -> None:
    """A :class:`BudgetWarning` when ``budget`` is below the cheapest routing's cost: the
    image then spends that, and the caller should hear how much."""
    cheapest = cheapest_fraction(n, costs, fraction_of)
    if math.isfinite(cheapest) and cheapest > float(budget) + 1e-3:
        warnings.warn(
            BudgetWarning(
                f"budget {float(budget):g} cannot be met: the cheapest routing (every patch "
                f"on the cheapest branch, routing included) costs {cheapest:.3f} of the "
                f"widest branch on this image, and that is what it spends; give a budget of "
                f"at least {math.ceil(cheapest * 100) / 100:g}"
            ),
            stacklevel=4,
        )


def _result(run: Run, output, routed, scores, spent, executor, router_) -> InferResult:
    """What one run did: the output, the classes, what it cost and how long it took."""
    grid, m = run.grid, len(run.model.branches)
    flops, fraction, tiles = spent
    counts = torch.bincount(routed, minlength=m).tolist()
    probs = None if scores is None or scores.probs is None else scores.probs.cpu().numpy()
    return InferResult(
        output=output,
        class_map=routed.numpy().astype(np.int64).reshape(grid.rows, grid.cols),
        class_counts=[int(c) for c in counts],
        flops=flops,
        flops_fraction=fraction,
        timings=run.timings,
        probs=None if probs is None else probs.reshape(grid.rows, grid.cols, -1),
        grid=grid,
        patch_size=grid.patch_size,
        stride=grid.stride,
        scale=int(run.model.scale),
        batch_sizes=run.batch_sizes,
        blend=run.options.get("blend", "mean"),
        device=str(run.device),
        padding=(grid.height - run.height, grid.width - run.width),
        flops_per_patch=run.costs,
        mode=executor.name,
        halos=run.info.get("halos", []),
        tiles=tiles,
        router=router_.name,
    )


@dataclass
class RoutePlan:
    """An image routed but not run (:func:`plan_routes`): what a folder-wide price needs."""

    scores: Scores | None
    costs: PatchCosts
    fraction_of: Callable[[np.ndarray], float] | None  # None: the per-patch sum is exact
    num_patches: int
    widest_flops: float  # the widest branch on this image, the fraction's denominator

    def flops_at(self, price: float) -> float:
        """Multiply-adds this image spends when routed at ``price`` (as infer(price=))."""
        n = self.num_patches
        assign = choose(self.scores, n, price=price, costs=self.costs, fraction_of=None)
        assign = capped(assign.numpy(), len(self.costs.branches), self.fraction_of)
        if self.fraction_of is not None:
            return self.fraction_of(assign) * self.widest_flops
        counts = np.bincount(assign, minlength=len(self.costs.branches)).tolist()
        return self.costs.spent_on_patches(n, counts)[0]


def plan_routes(
    model,
    image,
    options: InferOptions | None = None,
    *,
    device: str | torch.device | None = None,
    **keywords,
) -> RoutePlan:
    """Score ``image`` with the router as :func:`infer` would, without running a branch: a
    folder budget (:mod:`classsr_core.routing.folder`) finds one price for many images.
    ``options`` / ``keywords``: :func:`infer`'s (``mode=None``: the model's own default, as
    in :func:`infer`); the routing knobs (budget, tolerance, price) are not read."""
    opts = InferOptions.build(options, **keywords)
    executor, router_, exec_options = check_options(model, replace(opts, budget=None, amp=None))
    setup = _setup(model, image, executor, router_, replace(opts, batch_size=None), device)
    x, kind, dev, grid, costs, sizes, p, s = setup
    with _eval_mode(model), torch.inference_mode():
        run = _open_run(model, x, kind, dev, grid, costs, sizes, exec_options)
        scores = router_.score(run)
        executor.prepare(run)
        fraction_of = executor.fraction_of(run)
    run.lr = run._view = None  # keep the geometry, not the image
    widest = widest_flops(costs, len(grid), run.height, run.width, fraction_of)
    return RoutePlan(scores, costs, fraction_of, len(grid), widest)


def widest_flops(
    costs: PatchCosts, num_patches: int, height: int, width: int, fraction_of
) -> float:
    """The widest branch's multiply-adds on an image, a FLOPs fraction's denominator: on the
    whole ``height x width`` LR image when the executor counts its real cost
    (``fraction_of``), else on each of the ``num_patches`` patches."""
    if fraction_of is not None:
        return float(max(costs.per_pixel) * height * width)
    return float(num_patches * costs.widest)


def get_router(model, name: str | None) -> Router:
    """The registered router ``name`` (``None``: the model's default), checked against the
    model: a clear error when it is unknown or the model lacks what it needs."""
    if name is None:
        name = getattr(model, "default_router", None) or "classifier"
    router = _plugin("routers", name, "router").factory()
    router.check(model)
    return router


def get_executor(name: str) -> Executor:
    return _plugin("executors", name, "mode").factory()


def patch_costs(model, patch_size: int, router: Router) -> PatchCosts:
    """fvcore multiply-adds of routing and of each branch on one patch (cached by
    :func:`~classsr_core.base.flops.count_flops`); NaN with a warning when uncountable."""
    shape = (1, model.in_channels, patch_size, patch_size)
    try:
        routing = router.cost(model, patch_size)
        branches = tuple(count_flops(b, shape) for b in model.branches)
    except InputError as exc:
        warnings.warn(f"FLOPs not counted: {exc}", stacklevel=3)
        return PatchCosts(float("nan"), (float("nan"),) * len(model.branches), patch_size)
    return PatchCosts(float(routing), branches, patch_size)


def default_batch_size(device: torch.device | str, flops_per_patch: float | None = None) -> int:
    """Patches per branch call on ``device`` for a branch of ``flops_per_patch``
    multiply-adds (see ``_DEFAULT_BATCH``); unknown cost counts as heavy."""
    threshold, light, heavy = _DEFAULT_BATCH.get(torch.device(device).type, (1e9, 32, 8))
    if flops_per_patch is not None and flops_per_patch < threshold:
        return light
    return heavy


def check_router(model, router: str | None):
    """The router's state on ``model`` after checking that it can route it (for commands
    that fail once, up front, before a folder)."""
    r = get_router(model, router)
    return r.state(model)


def _setup(model, image, executor, router_, opts: InferOptions, device):
    """The image as a tensor, the device, the grid, the costs and the batch sizes."""
    p = int(opts.patch_size if opts.patch_size is not None else model.patch_size)
    s = int(opts.stride if opts.stride is not None else executor.default_stride(model, p))
    x, kind = to_tensor(image, model.in_channels)
    dev = torch.device(device) if device is not None else model_device(model)
    if device is not None:
        model.to(dev)
    grid = patch_grid(x.shape[-2], x.shape[-1], p, s)
    costs = patch_costs(model, p, router_)
    sizes = (
        [int(opts.batch_size)] * len(model.branches)
        if opts.batch_size is not None
        else [default_batch_size(dev, f) for f in costs.branches]
    )
    return x, kind, dev, grid, costs, sizes, p, s


def _open_run(model, x, kind, dev, grid, costs, sizes, options) -> Run:
    """The run on the device (inside inference mode): the LR image uploaded and padded."""
    if dev.type == "cuda" and x.device.type == "cpu":
        # One upload of the whole LR image (there are no per-patch copies): from pinned
        # memory it is a DMA transfer that does not block the host.
        x = x.pin_memory().to(dev, non_blocking=True)
    # Never below float32 (a model cast to fp16 / bf16): see Run; the networks' inputs are
    # cast to their weights' dtype where they are called.
    dtype = torch.promote_types(model_dtype(model), torch.float32)
    lr = pad_to(x.to(dev, dtype), grid.height, grid.width)
    height, width = x.shape[-2:]
    return Run(model, lr, height, width, grid, costs, sizes, dev, kind == "numpy", options)


def check_budget(model, budget) -> None:
    """A budget needs branches to choose between: refuse it on a one-branch model."""
    if budget is not None and model.classifier is None:
        raise InputError("budget= needs a model with at least two branches to choose from")


def check_options(model, opts: InferOptions) -> tuple[Executor, Router, dict[str, Any]]:
    """``opts`` checked against ``model`` before any work: the executor (``opts.mode``, else
    the model's default), the router, and the executor's options validated by its
    ``options_model`` (the dict a run's ``options`` holds). Raises an
    :class:`~classsr_core.errors.InputError` that names what is wrong."""
    check_budget(model, opts.budget)
    if opts.amp is not None and opts.amp not in AMP:
        raise InputError(f"amp must be None, 'fp16' or 'bf16', got {opts.amp!r}")
    executor = get_executor(default_mode(model, opts.mode))
    options = executor.parse_options(opts.executor_options)
    router_ = get_router(model, opts.router)
    if opts.batch_size is not None and int(opts.batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {opts.batch_size}")
    return executor, router_, options


def _check_knobs(budget, tolerance, price) -> None:
    given = [k for k, v in (("budget", budget), ("tolerance", tolerance)) if v is not None]
    if len(given) > 1:
        raise InputError("give budget= or tolerance=, not both: each sets the routing alone")
    for name, value, low in (("tolerance", tolerance, 0.0), ("price", price, 0.0)):
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and v >= low):
            raise InputError(
                f"{name} must be a finite number >= {low:g} (dB of expected loss against the "
                f"widest branch, e.g. 0.05), got {value!r}"
            )


def _plugin(kind: str, name, what: str):
    try:
        return lookup(kind, name)
    except PluginError:
        known = tuple(get_registry().names(kind))
        raise InputError(f"{what} must be one of {known}, got {name!r}") from None


# What torch says when a device has no kernel for a dtype, or a network's layers disagree.
_DTYPE_FAILURE = re.compile(
    r"not implemented for '(Half|BFloat16)'|should be the same|same dtype|expected scalar type",
    re.IGNORECASE,
)


@contextlib.contextmanager
def _cast_errors(model, dev: torch.device):
    """A model cast to fp16 / bf16 (``model.half()``) runs with each network's input in its
    weights' dtype; where the device or a partly cast model cannot, say so and name the
    supported path (autocast) instead of torch's internal dtype error."""
    try:
        yield
    except RuntimeError as exc:
        low = sorted({str(t.dtype) for t in model.parameters() if t.dtype in AMP.values()})
        if not low or not _DTYPE_FAILURE.search(str(exc)):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"the model's weights are cast to {', '.join(low)} and it cannot run so on "
            f"{dev.type} ({first}); keep the weights in float32 (model.float()) and pass "
            f"amp='fp16' or amp='bf16' to infer (autocast; --amp on the command line)"
        ) from exc


@contextlib.contextmanager
def _eval_mode(model):
    """Eval mode for the run, then every submodule's own flag back (frozen BatchNorm
    branches stay in eval while the classifier trains): model.train(flag) would flip all."""
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in was_training:
            m.training = flag
