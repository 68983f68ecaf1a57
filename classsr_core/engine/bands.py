"""One image through the engine in horizontal bands, so that memory follows the band.

The output of :func:`~classsr_core.engine.pipeline.infer` on a whole image is rebuilt band
by band, pixel for pixel:

1. **Routing**, band by band of patch rows (each patch is scored on its own pixels), the
   scores put together and the policy (:func:`~classsr_core.routing.policies.choose`) run
   once for the whole grid: a budget, a tolerance, a price and the regions executor's cap
   see the whole image, as in ``infer``. The result is a
   :class:`~classsr_core.engine.pipeline.RoutePlan` of the whole image (what a folder
   budget needs) and a class per patch.
2. **Execution**, band by band: the band's *kept* LR rows are cells of the grid
   (:func:`~classsr_core.execution.base.cell_bounds`); ``infer`` runs, with the classes
   forced, on the patch rows that touch them plus context. How much context, and with which
   classes, the executor says, not this module (it knows no executor by name):
   :meth:`~classsr_core.execution.base.Executor.band_margin` gives the LR rows of context
   either side (``patches``: 0, every patch row whose output overlaps a kept row, so
   overlaps average exactly as on the whole image; ``regions``: the branches' widest halo)
   and :meth:`~classsr_core.execution.base.Executor.band_classes` the classes the band runs
   (``regions``: the context rows on the cheapest branch). An executor that cannot be
   streamed so says so there (an ``InputError``, before any work), as does one that does
   not say. The bands are cut at patch rows, so the band's grid is the whole grid's rows
   shifted; the output rows are cropped to the kept ones.

Memory is the LR image (or, for an uncompressed TIFF, the band's rows), one band's canvas
and one band of output, whatever the image's height. Two things keep it there:

- **The heap, given back band by band.** glibc's malloc raises its mmap threshold to the
  largest block freed so far (up to 32 MB), so the bands' buffers of a few to 32 MB (the
  LR rows, the routing statistics' maps, the HR rows rounded to integers) come from the
  heap. Allocated and freed in shifting orders, band after band, they fragment it: its
  free space is neither reused nor given back, and the process grows with the number of
  bands, i.e. with the image (measured: routing an LR of 8000 x 8000 in 63 bands left
  450 to 840 MB free in the heap, 4000 x 4000 under 100 MB). :func:`release_freed`
  (``malloc_trim``) hands the heap's free pages back after every band, routing and
  execution alike (glibc only; elsewhere it does nothing).
- **One band of output at a time.** The bands handed out are views of the band's canvas;
  the canvas goes as soon as the last of them is dropped, before the next band runs
  (:func:`~classsr_core.io.streams.write_bands` drops each once written).

The price is compute on the context rows: in ``patches`` mode a patch row either side of
each band runs its own branch (its overlap is averaged into the kept rows); in ``regions``
mode the context rows only lend their pixels to the halos and run the cheapest branch.

Byte-identity with ``infer`` on the whole image holds in ``patches`` mode by construction
(every kept pixel sums the same patch outputs in the same order) and in ``regions`` mode
when the halo covers the branches' receptive field (``halo=8``): tiles are then cut
differently near a band's edge without changing a pixel. The shipped models record a
narrower halo (measured to lose <= 0.001 dB, ``model.defaults["halo"]``), with which a
pixel near a tile's edge depends a little on the cut: a level or two apart, over 50 dB.
``tests/test_scale_out.py`` checks all three on images cut into several bands.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from classsr_core.base.defaults import default_mode
from classsr_core.base.grid import PatchGrid, patch_grid
from classsr_core.base.run import Run
from classsr_core.engine.options import InferOptions
from classsr_core.engine.pipeline import (
    RoutePlan,
    check_options,
    get_executor,
    infer,
    plan_routes,
    warn_unmet_budget,
    widest_flops,
)
from classsr_core.errors import InputError
from classsr_core.execution.base import Executor, cell_bounds
from classsr_core.io.images import Image, resize_alpha
from classsr_core.io.streams import LRSource
from classsr_core.routing.base import Router, Scores
from classsr_core.routing.policies import choose

# Bytes of float output one band may take (its canvas, context rows included): about 256 MB.
BAND_BYTES = 256 * 2**20
# HR rows converted to integers at a time (bounds the temporaries of the conversion).
WRITE_ROWS = 64
# Patch rows routed at a time, at least (plus a row of context either side).
ROUTE_ROWS = 4


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library, another system)."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed() -> None:
    """Give the heap's free pages back to the system (module docstring: without it, the
    heap fragmented by band-sized buffers grows with the number of bands). A walk over the
    free blocks, milliseconds: called once a band."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class BandOptions(InferOptions):
    """What ``infer`` takes (:class:`~classsr_core.engine.options.InferOptions`), for a band
    run, and the band sizes. ``BandOptions.of(options, band_rows=1)`` adds them to
    options built elsewhere."""

    band_bytes: int = BAND_BYTES
    band_rows: int | None = None  # kept patch rows per band; default from band_bytes
    stats: dict = field(default_factory=dict)  # filled by stream_bands: flops, seconds, bands

    @classmethod
    def of(cls, options: InferOptions, **bands) -> BandOptions:
        """``options`` (any :class:`InferOptions`) with the band sizes ``bands``."""
        engine = {k: getattr(options, k) for k in options.engine_fields()}
        return cls(**engine, executor_options=dict(options.executor_options), **bands)


def to_input(rgb: np.ndarray, device) -> torch.Tensor:
    """The LR band as ``classsr upscale`` hands an image to ``infer``."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)


def mode_of(model, opts: BandOptions) -> str:
    """The executor a band run uses: ``opts.mode``, else the model's own default."""
    return default_mode(model, opts.mode)


def whole_grid(model, height: int, width: int, opts: BandOptions) -> PatchGrid:
    p = int(opts.patch_size if opts.patch_size is not None else model.patch_size)
    s = opts.stride
    s = int(s if s is not None else get_executor(mode_of(model, opts)).default_stride(model, p))
    return patch_grid(height, width, p, s)


def _row_span(grid: PatchGrid, height: int, r0: int, r1: int) -> tuple[int, int]:
    """LR rows read by patch rows ``[r0, r1)`` (clipped to the real image)."""
    return grid.ys[r0], min(grid.ys[r1 - 1] + grid.patch_size, height)


def _concat(parts: list[Scores | None]) -> Scores | None:
    if not parts or any(s is None for s in parts):
        return None
    probs = None
    if all(s.probs is not None for s in parts):
        probs = torch.cat([s.probs for s in parts])
    if parts[0].whole is not None:  # a per-image choice: route as on the whole image
        cells = {k: np.concatenate([s.cells[k] for s in parts]) for k in parts[0].cells}
        whole = parts[0].whole(np.concatenate([np.asarray(s.utility) for s in parts]), cells)
        whole.probs = probs
        return whole
    return Scores(
        torch.cat([s.default for s in parts]),
        lambda: np.concatenate([np.asarray(s.utility) for s in parts]),
        probs,
        parts[0].tolerance_price,
    )


def _rows_of(scores: Scores | None, k0: int, k1: int) -> Scores | None:
    """Patches ``[k0, k1)`` of ``scores``."""
    if scores is None:
        return None
    probs = None if scores.probs is None else scores.probs[k0:k1]
    utility = np.asarray(scores.utility)[k0:k1]
    cells = {k: v[k0:k1] for k, v in scores.cells.items()}
    return Scores(
        scores.default[k0:k1], utility, probs, scores.tolerance_price, scores.whole, cells
    )


def _route_rows(grid: PatchGrid, rows: int) -> list[tuple[int, int]]:
    return [(r, min(r + rows, grid.rows)) for r in range(0, grid.rows, rows)]


def _rows_per_band(model, grid: PatchGrid, width: int, opts: BandOptions) -> int:
    if opts.band_rows is not None:
        return max(1, int(opts.band_rows))
    per_lr_row = width * model.scale * model.scale * model.in_channels * 4
    lr_rows = max(1, opts.band_bytes // per_lr_row)
    return max(2, lr_rows // grid.stride - 2)  # and a row of context either side


def check_streaming(model, opts: InferOptions, device=None) -> None:
    """Refuse, before any work, options the executor does not take or an executor that
    cannot be streamed (:meth:`~classsr_core.execution.base.Executor.band_margin`): an
    :class:`~classsr_core.errors.InputError` that says why. Cheap (a branch's halo is
    measured once): a command asks it once, before the first image."""
    _streaming(model, opts, device)


def _streaming(model, opts: InferOptions, device=None) -> tuple[Executor, Router, dict, int]:
    """The executor, the router, the executor's options validated, and the LR rows of
    context its bands need."""
    executor, router_, options = check_options(model, opts)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    margin = int(executor.band_margin(model, options, dev))
    if margin < 0:
        raise InputError(f"executor {executor.name!r}: band_margin must be >= 0, got {margin}")
    return executor, router_, options, margin


def route(model, source: LRSource, opts: BandOptions, device=None) -> tuple[RoutePlan, np.ndarray]:
    """The routing of the whole image, computed band by band: its plan and the classes
    ``(rows, cols)`` ``infer`` would choose on the whole image with ``opts``."""
    executor, router_, options, _ = _streaming(model, opts, device)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    height, width = source.height, source.width
    grid = whole_grid(model, height, width, opts)
    parts, costs = [], None
    for r0, r1 in _route_rows(grid, max(ROUTE_ROWS, _rows_per_band(model, grid, grid.width, opts))):
        # One patch row of context either side: a router may look past a patch's edge (the
        # edge statistics' central differences do); only rows r0..r1 are kept.
        ra, rb = max(r0 - 1, 0), min(r1 + 1, grid.rows)
        y0, y1 = _row_span(grid, height, ra, rb)
        x = to_input(source.rgb(y0, y1), dev)
        plan = plan_routes(model, x, opts, patch_size=grid.patch_size, stride=grid.stride)
        del x
        release_freed()
        if plan.num_patches != (rb - ra) * grid.cols:  # the band's grid is not the whole's
            raise InputError(f"band rows {ra}..{rb}: the band grid does not match the image's")
        parts.append(_rows_of(plan.scores, (r0 - ra) * grid.cols, (r1 - ra) * grid.cols))
        costs = plan.costs
    scores = _concat(parts)
    # The executor's view of the whole image without its pixels: a geometry-only run (the
    # regions executor's cost is a function of the grid, the halos and the image size).
    p = grid.patch_size
    stub = torch.zeros(1, model.in_channels, p, p, device=dev)
    sizes = [1] * len(model.branches)
    run = Run(model, stub, height, width, grid, costs, sizes, dev, False, options)
    with torch.inference_mode():
        executor.prepare(run)
    fraction_of = executor.fraction_of(run)
    widest = widest_flops(costs, len(grid), height, width, fraction_of)
    plan = RoutePlan(scores, costs, fraction_of, len(grid), widest)
    if opts.budget is not None:
        warn_unmet_budget(opts.budget, len(grid), costs, fraction_of)
    classes = choose(
        scores,
        len(grid),
        budget=opts.budget,
        tolerance=opts.tolerance,
        price=opts.price,
        costs=costs,
        fraction_of=fraction_of,
        router=router_.name,
    )
    release_freed()  # the budget search's plans: before the first band runs
    return plan, classes.numpy().reshape(grid.rows, grid.cols)


def bands(model, grid: PatchGrid, height: int, opts: BandOptions, device=None) -> list[tuple]:
    """``(kept LR rows y0, y1, run patch rows ra, rb, kept patch rows r0, r1)`` per band,
    top to bottom: every patch row whose patches reach within the executor's
    :meth:`~classsr_core.execution.base.Executor.band_margin` of the kept rows runs."""
    margin = _streaming(model, opts, device)[3]
    bounds = cell_bounds(grid.ys, grid.patch_size, height)
    ys = np.asarray(grid.ys)
    p = grid.patch_size
    out = []
    for r0, r1 in _route_rows(grid, _rows_per_band(model, grid, grid.width, opts)):
        y0, y1 = int(bounds[r0]), int(bounds[r1])
        touch = np.flatnonzero((ys < y1 + margin) & (ys + p > y0 - margin))
        out.append((y0, y1, int(touch[0]), int(touch[-1]) + 1, r0, r1))
    return out


def stream_bands(
    model, source: LRSource, opts: BandOptions, classes: np.ndarray, device=None
) -> Iterator[Image]:
    """The output image, as :class:`Image` bands of at most ``WRITE_ROWS`` HR rows, top to
    bottom; ``opts.stats`` collects multiply-adds, seconds and the number of bands.

    The bands are views of the band's canvas: a consumer that keeps one past the next
    ``next()`` keeps that canvas alive while the next band runs (two canvases in memory)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    height, width, scale = source.height, source.width, int(model.scale)
    grid = whole_grid(model, height, width, opts)
    executor = _streaming(model, opts, dev)[0]
    # Every band runs the same options with the whole image's classes forced (the routing
    # knobs have done their work in route()), on the band's rows of the whole grid.
    band_opts = InferOptions.build(
        replace(opts, budget=None, tolerance=None, price=None),
        mode=mode_of(model, opts),
        patch_size=grid.patch_size,
        stride=grid.stride,
    )
    stats = opts.stats
    stats.update(flops=0.0, seconds=0.0, bands=0)
    for y0, y1, ra, rb, r0, r1 in bands(model, grid, height, opts, dev):
        top, bottom = _row_span(grid, height, ra, rb)
        x = to_input(source.rgb(top, bottom), dev)
        forced = executor.band_classes(classes[ra:rb], slice(r0 - ra, r1 - ra))
        result = infer(model, x, options=band_opts, classes=forced)
        stats["flops"] += float(result.flops)
        stats["seconds"] += float(result.timings["total"])
        stats["bands"] += 1
        sr = result.output[0].permute(1, 2, 0).cpu().numpy()  # as classsr upscale does
        del x, result
        alpha = None
        if source.has_alpha:  # bicubic reaches 2 LR rows: 4 rows of context, then cropped
            a0, a1 = max(y0 - 4, 0), min(y1 + 4, height)
            alpha = resize_alpha(source.alpha(a0, a1), scale)[(y0 - a0) * scale :]
        rows = a = None
        for h0 in range(y0 * scale, y1 * scale, WRITE_ROWS):
            h1 = min(h0 + WRITE_ROWS, y1 * scale)
            rows = sr[h0 - top * scale : h1 - top * scale]
            a = None if alpha is None else alpha[h0 - y0 * scale : h1 - y0 * scale]
            yield Image(rows, a, source.grey, source.max_value)
        del sr, alpha, rows, a  # views of the canvas: it goes before the next band runs
        release_freed()
