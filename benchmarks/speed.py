"""Time, peak memory, PSNR and FLOPs of x4 upscaling real photos to 2K, 4K and 8K outputs.

Run by hand (not a test), from the repository root:

    scripts/fetch_photos.sh        # data/mate/...: the full-size Wood.jpg and YellowFlower.jpg
    .venv/bin/python benchmarks/speed.py [--sizes 2K 4K 8K] [--threads 2] [--reps 1]
        [--model classsr-fsrcnn-x4 ...] [--o-model fsrcnn-x4] [--budget 0.8 ...]
        [--router classifier edge] [--kinds patches regions]
        [--skip-loop-above 4K] [--no-loop] [--o-kinds whole tiled o-regions]
        [--out table.md] [--json rows.json]
    .venv/bin/python benchmarks/speed.py --device cuda [--dtype fp32 fp16 bf16]
    bash benchmarks/gpu_check.sh                      # the GPU check (docs/performance.md)

Test images (made once, cached under runs/speed-images/): the two validation photos at full
size (2560 px wide) are centre-cropped to 16:9 and resized to 1920x1080 tiles with MATLAB
bicubic (antialiased). 2K is the Wood tile; 4K the 2x2 mosaic [[Wood, YellowFlower mirrored
left-right], [YellowFlower mirrored top-bottom, Wood turned 180 degrees]]; 8K that 2x2
pattern repeated over 4x4 tiles. The LR input is the SR task's degradation of the HR
(MATLAB bicubic x1/4), rounded to uint8 as ``prepare`` does. The resize is
``common.imresize``, a float32 port of the one the SR task takes from basicsr, so that this
script runs where basicsr is not installed (the GPU check); it matches basicsr's to float32
rounding (25 of the 6.2M uint8 values of a tile differ by one level), so images cached by
either serve both and the PSNRs agree.

Methods, each mapping the uint8 LR array to a uint8 HR array (host-device copies included):
``-O whole`` (the -O model's one branch on the whole LR image at once), ``-O tiled`` and
``-O regions`` (the -O model through the tile engine's two modes), ``official loop`` (the
ClassSR model, one 32x32 patch at a time: classifier, then its argmax branch;
benchmarks/common.py), ``ClassSR patches`` (``model.infer``), ``ClassSR regions``
(``model.infer(mode="regions")``) and, per ``--budget``, patches and regions at that FLOPs
budget; ``--router edge`` adds the same rows routed by the model's edge table instead of
its classifier (``--kinds`` picks the modes). The ClassSR rows name their router to the engine,
so a model whose default router is its edge table still runs its classifier in the
classifier rows. ``--dtype fp32 fp16 bf16`` repeats the rows in each precision: fp16 and bf16
run fp32 weights under ``torch.autocast``, the engine's ``amp=`` (its output canvas stays
fp32); the official loop runs in fp32 only, the precision of the official code. (Weights cast
with ``model.half()`` are not measured: regions mode fails on them, see docs/performance.md.)

Two passes per size. Memory, PSNR, FLOPs and classes: on CPU every (size, method) runs once
in a fresh process (``--one SIZE KIND``), so its peak RSS is its own (on a GPU, or with
``--in-process``, in this process). Time: then all methods of the size run in this one
process, each once at full size (a warm-up: the first call on an image size pays for
allocation and oneDNN's kernel choice), then ``--reps`` rounds that take the methods in
turn, so that a slow spell of the machine hits all of them alike; a method's time is its
fastest round, and every ratio is between times of the same process. Run it on an otherwise
idle machine. The official loop visits 170, 700 and 2,691 patches at 2K, 4K and 8K (about
0.45 s at 2K on one busy CPU thread), so it runs at every size unless skipped.
Progress goes to stderr, the table to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from common import imresize, machine, official_loop

from classsr_core.device import synchronize
from classsr_core.errors import InputError

SCALE = 4
SIZES = {"2K": 1, "4K": 2, "8K": 4}  # tiles per side; a tile is 1920x1080 HR
TILE = (1920, 1080)
# HR pixels left out on each side of a tile boundary by the "photo content" PSNR: the
# jump between two photos is no texture a network can restore, and its errors (25-26 dB
# there) would outweigh the photos' own (a 16-px band is 2.5% of the 8K pixels and moves
# the 8K PSNR by 2.7 dB).
SEAM_BAND = 16
PHOTOS = ("Wood", "YellowFlower")
MATE = Path("data/mate/usr/share/backgrounds/mate/nature")
KINDS = ("whole", "tiled", "o-regions", "loop", "patches", "regions")
O_KINDS = ("whole", "tiled", "o-regions")  # rows of the -O model
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LABELS = {
    "whole": "-O whole",
    "tiled": "-O tiled",
    "o-regions": "-O regions",
    "loop": "official loop",
    "patches": "ClassSR patches",
    "regions": "ClassSR regions",
}
WARM_UP = (96, 128)  # LR crop for the warm-up run: 4 x 5 patches


class Unavailable(Exception):
    """The method cannot run with this engine (e.g. a mode it does not have yet)."""


@dataclass(frozen=True)
class Method:
    kind: str
    model: str
    budget: float | None = None
    router: str = "classifier"
    dtype: str = "fp32"

    @property
    def label(self) -> str:
        label = LABELS[self.kind]
        if self.router != "classifier":
            label += f", {self.router} router"
        label = label if self.budget is None else f"{label}, budget {self.budget:g}"
        return label if self.dtype == "fp32" else f"{label}, {self.dtype}"


@dataclass
class Row:
    size: str
    method: str
    model: str
    kind: str
    budget: float | None = None
    dtype: str = "fp32"
    times: list[float] = field(default_factory=list)
    mem_above_mib: float | None = None
    mem_peak_mib: float | None = None
    mem_upper_bound: bool = False  # the peak did not rise during the runs (see header)
    psnr: float | None = None
    psnr_tiles: float | None = None  # the seam bands between mosaic tiles left out
    flops: float | None = None
    class_counts: list[int] | None = None
    engine: dict | None = None  # the engine's last run: timings (s), tiles, batch sizes
    note: str = ""

    @property
    def time(self) -> float | None:
        return min(self.times) if self.times else None


# -- test images ---------------------------------------------------------------------------


def read_uint8(path: Path) -> np.ndarray:
    from classsr_core.io.images import read_image, to_array

    return to_array(read_image(path))


@lru_cache(maxsize=2)  # in one process every row of a size reads the same LR and HR
def read_cached(path: str) -> np.ndarray:
    return read_uint8(Path(path))


def centre_crop(img: np.ndarray, aspect: float) -> np.ndarray:
    h, w = img.shape[:2]
    if w / h > aspect:
        cw = round(h * aspect)
        return img[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    ch = round(w / aspect)
    return img[(h - ch) // 2 : (h - ch) // 2 + ch]


def make_tile(stem: str, cache: Path) -> np.ndarray:
    """A 1920x1080 uint8 tile of a full-size validation photo (cached)."""
    from classsr_core.io.images import read_image, write_image

    path = cache / f"tile-{stem}.png"
    if path.is_file():
        return read_uint8(path)
    src = MATE / f"{stem}.jpg"
    if not src.is_file():
        raise SystemExit(f"{src} is missing: run scripts/fetch_photos.sh first")
    crop = centre_crop(read_image(src).rgb, TILE[0] / TILE[1])
    tile = to_uint8(imresize(crop, TILE[0] / crop.shape[1]))
    if tile.shape[:2] != (TILE[1], TILE[0]):
        raise SystemExit(f"{src}: tile came out {tile.shape[1]}x{tile.shape[0]}, not {TILE}")
    write_image(path, tile)
    return tile


def mosaic(n: int, tiles: list[np.ndarray]) -> np.ndarray:
    """``n x n`` tiles: the photos alternate; odd columns / rows are mirrored."""
    rows = []
    for r in range(n):
        row = []
        for c in range(n):
            t = tiles[(r + c) % len(tiles)]
            t = t[:, ::-1] if c % 2 else t
            row.append(t[::-1] if r % 2 else t)
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip as ``classsr_core.training.prepare`` does."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def ensure_images(size: str, cache: Path) -> tuple[Path, Path]:
    """``(LR path, HR path)`` of a test size, made and cached on first use."""
    from classsr_core.io.images import write_image

    lr_path, hr_path = cache / f"{size}-lr.png", cache / f"{size}-hr.png"
    if lr_path.is_file() and hr_path.is_file():
        return lr_path, hr_path
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    hr = mosaic(SIZES[size], [make_tile(stem, cache) for stem in PHOTOS])
    # The SR task's make_input (HR sides are multiples of 4, so its modcrop is a no-op).
    lr = to_uint8(np.clip(imresize(hr.astype(np.float32) / 255.0, 1 / SCALE), 0.0, 1.0))
    write_image(hr_path, hr)
    write_image(lr_path, lr)  # written last: its presence means both are complete
    took = time.perf_counter() - t0
    print(f"made {size}: HR {hr.shape[1]}x{hr.shape[0]} in {took:.1f} s", file=sys.stderr)
    return lr_path, hr_path


def load_lr(size: str, args) -> np.ndarray:
    lr = read_cached(str(Path(args.images) / f"{size}-lr.png"))
    return np.ascontiguousarray(lr[: args.max_side, : args.max_side]) if args.max_side else lr


def load_hr(size: str, args) -> np.ndarray:
    hr = read_cached(str(Path(args.images) / f"{size}-hr.png"))
    side = args.max_side * SCALE if args.max_side else None
    return hr[:side, :side]


# -- methods -------------------------------------------------------------------------------


def to_input(lr8: np.ndarray, model, dev: torch.device) -> torch.Tensor:
    """``(1, C, H, W)`` in [0, 1], the model's dtype; channels-last on CPU as the engine."""
    dtype = next(model.parameters()).dtype
    x = torch.from_numpy(lr8).permute(2, 0, 1)[None].to(dev).float().div_(255).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else x


def to_uint8_image(hr: torch.Tensor) -> np.ndarray:
    """Round and clip as the engine does for numpy input."""
    arr = hr[0].float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(arr.cpu().numpy())


def run(method: Method, model, lr8: np.ndarray, dev: torch.device) -> tuple[np.ndarray, dict]:
    """One call of ``method``: the uint8 HR output and ``{"flops", "class_counts"}``."""
    low = DTYPES[method.dtype] if method.dtype != "fp32" else None
    # fp16 / bf16 as the engine's amp= does it: fp32 weights under torch.autocast.
    autocast = torch.autocast(dev.type, dtype=low) if low else contextlib.nullcontext()
    if method.kind == "whole":
        with torch.inference_mode(), autocast:
            out = to_uint8_image(model.branches[0](to_input(lr8, model, dev)))
        return out, {}
    if method.kind == "loop":
        with torch.inference_mode(), autocast:
            hr, classes = official_loop(model, to_input(lr8, model, dev))
            out = to_uint8_image(hr)
        counts = np.bincount(classes, minlength=len(model.branches)).tolist()
        return out, {"class_counts": counts}
    options = {} if method.budget is None else {"budget": method.budget}
    if method.kind in ("patches", "regions"):
        # Named, not left to the model's default router (the shipped models default to
        # their edge table), so that a row's label says what routed it.
        options["router"] = method.router
    # The mode named too: a shipped ClassSR model records "regions" as its default, and a
    # "patches" row left to the default ran regions (same numbers in both rows).
    options["mode"] = "regions" if method.kind in ("regions", "o-regions") else "patches"
    if low:
        options["amp"] = method.dtype
    try:
        res = model.infer(lr8, **options)
    except TypeError as exc:
        if method.kind == "regions" and "'mode'" in str(exc):  # an engine without modes
            raise Unavailable("mode not available") from exc
        raise
    except InputError as exc:
        if "calibrated" in str(exc):  # e.g. an edge row for a model with no edge table
            raise Unavailable(f"{method.router} router not calibrated for this model") from exc
        raise
    engine = {"timings": res.timings, "tiles": getattr(res, "tiles", None)}
    engine["batch_sizes"] = res.batch_sizes
    return res.output, {"flops": res.flops, "class_counts": res.class_counts, "engine": engine}


def whole_flops(model, lr_shape: tuple[int, ...]) -> float:
    """The branch's multiply-adds per LR pixel (counted on 64x64) times the pixels: exact
    for a fully convolutional branch, without tracing an 8K-sized forward."""
    from classsr_core.analysis.flops import count_flops

    per_pixel = count_flops(model.branches[0], (1, model.in_channels, 64, 64)) / 64**2
    return per_pixel * lr_shape[0] * lr_shape[1]


def loop_flops(model, counts: list[int]) -> float:
    """What the engine counts for the same routing: classifier on every patch + branches."""
    from classsr_core.analysis.flops import model_costs

    costs = model_costs(model)
    spent = sum(c * b["flops"] for c, b in zip(counts, costs["branches"]))
    return sum(counts) * costs["classifier"]["flops"] + spent


# -- memory --------------------------------------------------------------------------------


STATM = Path("/proc/self/statm")


def rss_mib() -> float:
    """Resident set size now (MiB); the peak so far where /proc is missing."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return max_rss_mib()


def max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


class RssSampler:
    """The largest resident set size seen while it runs (MiB), sampled from
    ``/proc/self/statm`` every ``interval`` seconds by a thread: the peak of the runs alone.
    ``ru_maxrss`` cannot give it in a fresh process, whose start-up (loading torch) peaks
    above what a 2K or 4K run adds."""

    def __init__(self, interval: float = 0.002):
        import threading

        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    @staticmethod
    def available() -> bool:
        return STATM.is_file()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mib())


class MemoryProbe:
    """Peak memory of what runs between construction and :meth:`read`."""

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.sampler = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            self.base = torch.cuda.memory_allocated(dev) / 2**20
        else:
            self.base = rss_mib()
            self.max_before = max_rss_mib()
            if dev.type == "cpu" and RssSampler.available():
                self.sampler = RssSampler()

    def read(self, row: Row) -> None:
        if self.dev.type == "cuda":
            row.mem_peak_mib = torch.cuda.max_memory_allocated(self.dev) / 2**20
        elif self.sampler is not None:
            row.mem_peak_mib = self.sampler.stop()
        elif self.dev.type == "cpu":
            row.mem_peak_mib = max_rss_mib()
            # ru_maxrss did not rise: the runs stayed under an earlier peak (imports).
            row.mem_upper_bound = row.mem_peak_mib <= self.max_before
        else:
            return
        row.mem_above_mib = row.mem_peak_mib - self.base


# -- one measurement -----------------------------------------------------------------------


def load(name: str, dev: torch.device):
    from classsr_core.model.loading import load_model

    return load_model(name, device=dev)


def measure(size: str, method: Method, model, args, dev: torch.device, reps: int = 1) -> Row:
    """Warm up on a small crop, then run ``reps`` times under the memory probe, then score
    the last output. (The times recorded here are not the table's: see :func:`time_size`.)"""
    row = Row(size, method.label, method.model, method.kind, method.budget, method.dtype)
    lr8 = load_lr(size, args)
    try:
        run(method, model, np.ascontiguousarray(lr8[: WARM_UP[0], : WARM_UP[1]]), dev)
    except Unavailable as exc:
        row.note = f"n/a ({exc})"
        return row
    flops = whole_flops(model, lr8.shape) if method.kind == "whole" else None
    if method.kind == "loop":
        loop_flops(model, [0] * len(model.branches))  # count (and cache) before the probe
    synchronize(dev)
    probe = MemoryProbe(dev)
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        out, info = run(method, model, lr8, dev)
        synchronize(dev)
        row.times.append(time.perf_counter() - t0)
    probe.read(row)
    row.class_counts = info.get("class_counts")
    row.engine = info.get("engine")
    if method.kind == "loop":
        flops = loop_flops(model, row.class_counts)
    row.flops = info.get("flops", flops)
    hr = load_hr(size, args)
    errors = squared_errors(out, hr)  # once: at 8K each pass over the pixels costs seconds
    row.psnr = psnr(out, hr, errors=errors)
    row.psnr_tiles = psnr(out, hr, seam_band=SEAM_BAND, errors=errors)
    return row


def squared_errors(out: np.ndarray, hr: np.ndarray) -> torch.Tensor:
    """Per HR pixel, the squared error summed over the channels: integers, exact, in torch
    (threaded) rather than numpy float64 (4 s a pass at 8K on one core)."""
    diff = (torch.from_numpy(out).to(torch.int16) - torch.from_numpy(hr).to(torch.int16)).int()
    sq = diff * diff  # at most 3 * 255**2 a pixel: int32 holds it
    return sq.sum(dim=2, dtype=torch.int32) if sq.dim() == 3 else sq


def psnr(
    out: np.ndarray, hr: np.ndarray, seam_band: int = 0, errors: torch.Tensor | None = None
) -> float:
    """The SR task's PSNR (RGB, 0..255, its crop_border; SSIM is skipped: slow at 8K).
    ``seam_band``: also leave out the HR pixels within that distance of a boundary between
    mosaic tiles (where two unrelated photos meet, no network can restore the jump).
    ``errors``: :func:`squared_errors` of the pair, if already computed."""
    from classsr_core.plugins.registry import lookup

    border = lookup("tasks", "sr").factory(scale=SCALE).crop_border()
    keep = np.zeros(hr.shape[:2], dtype=bool)
    keep[border : hr.shape[0] - border, border : hr.shape[1] - border] = True
    if seam_band:
        for y in range(TILE[1], hr.shape[0], TILE[1]):
            keep[y - seam_band : y + seam_band] = False
        for x in range(TILE[0], hr.shape[1], TILE[0]):
            keep[:, x - seam_band : x + seam_band] = False
    errors = squared_errors(out, hr) if errors is None else errors
    channels = out.shape[2] if out.ndim == 3 else 1
    kept = torch.from_numpy(keep)
    mse = int(torch.where(kept, errors, 0).sum(dtype=torch.int64)) / (int(kept.sum()) * channels)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def one(args) -> int:
    """``--one SIZE KIND``: one measurement in this (fresh) process; prints its row."""
    size, kind = args.one
    if size not in SIZES or kind not in KINDS:
        raise SystemExit(f"--one takes a size of {list(SIZES)} and a kind of {KINDS}")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = args.o_model if kind in O_KINDS else args.model[0]
    budget = args.budget[0] if args.budget else None
    method = Method(kind, name, budget, args.router[0], args.dtype[0])
    row = measure(size, method, load(name, dev), args, dev)
    print("ROW " + json.dumps(asdict(row)))
    return 0


# -- the whole run -------------------------------------------------------------------------


def plan(args) -> list[tuple[str, Method]]:
    todo = []
    for dtype in args.dtype:  # fp32 first: a run cut short keeps the reference rows
        for size in args.sizes:
            todo += [(size, Method(kind, args.o_model, dtype=dtype)) for kind in args.o_kinds]
            for name in args.model:
                if dtype == "fp32" and not args.no_loop:
                    todo.append((size, Method("loop", name)))
                kinds = args.kinds if dtype == "fp32" else args.amp_kinds or args.kinds
                for router in args.router:
                    for budget in [None, *args.budget]:
                        for kind in kinds:
                            todo.append((size, Method(kind, name, budget, router, dtype)))
    return todo


def loop_skipped(size: str, args) -> bool:
    order = list(SIZES)
    return bool(args.skip_loop_above) and order.index(size) > order.index(args.skip_loop_above)


def child_command(size: str, method: Method, args) -> list[str]:
    cmd = [sys.executable, __file__, "--one", size, method.kind, "--device", "cpu"]
    cmd += ["--model", method.model, "--o-model", args.o_model, "--images", args.images]
    cmd += ["--threads", str(args.threads), "--reps", "1"]  # memory, PSNR: one run
    if method.budget is not None:
        cmd += ["--budget", repr(method.budget)]
    cmd += ["--router", method.router, "--dtype", method.dtype]
    if args.max_side:
        cmd += ["--max-side", str(args.max_side)]
    return cmd


def measure_in_child(size: str, method: Method, args) -> Row:
    proc = subprocess.run(child_command(size, method, args), capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("ROW "):
            return Row(**json.loads(line[4:]))
    sys.stderr.write(proc.stderr[-3000:])
    row = Row(size, method.label, method.model, method.kind, method.budget, method.dtype)
    row.note = f"failed (exit {proc.returncode}; its stderr is printed above)"
    return row


def measure_here(size: str, method: Method, args, dev: torch.device, models: dict) -> Row:
    """In this process (GPU, or --in-process): a failure becomes a row, not the end."""
    try:
        if method.model not in models:  # kept: small next to the images; counts cached
            models[method.model] = load(method.model, dev)
        return measure(size, method, models[method.model], args, dev)
    except Exception as exc:
        traceback.print_exc()
        row = Row(size, method.label, method.model, method.kind, method.budget, method.dtype)
        row.note = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
        return row


def time_size(todo: list[tuple[Method, Row]], args, dev: torch.device, models: dict) -> None:
    """The times of one size's rows, in this process: every method once at full size (a
    warm-up), then ``args.reps`` rounds, each running every method once in turn; each row
    gets its round times (the table shows the fastest)."""
    todo = [(m, r) for m, r in todo if not r.note]
    if not todo:
        return
    lr8 = load_lr(todo[0][1].size, args)
    calls = []
    for method, row in todo:
        row.times = []
        if method.model not in models:
            models[method.model] = load(method.model, dev)
        try:
            run(method, models[method.model], lr8, dev)  # warm-up at full size
        except Exception as exc:
            traceback.print_exc()
            row.note = f"failed in the timing pass ({type(exc).__name__}: {str(exc)[:60]})"
            continue
        calls.append((method, row))
    for r in range(args.reps):
        for method, row in calls:
            synchronize(dev)
            t0 = time.perf_counter()
            run(method, models[method.model], lr8, dev)
            synchronize(dev)
            row.times.append(time.perf_counter() - t0)
        print(f"{todo[0][1].size}: timing round {r + 1} of {args.reps} done", file=sys.stderr)


def measure_all(args, dev: torch.device, head: list[str]) -> list[Row]:
    rows, models = [], {}
    todo = plan(args)
    # One group per (precision, size), in the plan's order (fp32 first: a run cut short
    # keeps the reference rows); the methods of a group are timed against each other.
    groups = dict.fromkeys((method.dtype, size) for size, method in todo)
    for dtype, size in groups:
        of_size = []
        for size_, method in todo:
            if (method.dtype, size_) != (dtype, size):
                continue
            t0 = time.perf_counter()
            if method.kind == "loop" and loop_skipped(size, args):
                row = Row(size, method.label, method.model, method.kind, dtype=method.dtype)
                row.note = f"skipped (--skip-loop-above {args.skip_loop_above})"
            elif dev.type == "cpu" and not args.in_process:
                row = measure_in_child(size, method, args)
            else:
                row = measure_here(size, method, args, dev, models)
            row.times = []  # the table's times come from the interleaved rounds below
            rows.append(row)
            of_size.append((method, row))
            took = time.perf_counter() - t0
            print(
                f"{size} {method.label} ({method.model}): "
                f"{row.note or f'PSNR {row.psnr:.2f} dB'} [{took:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
            write(args, rows, head)  # a run cut short keeps what it measured ("not timed")
        time_size(of_size, args, dev, models)
        for method, row in of_size:
            print(
                f"{size} {method.label} ({method.model}): {fmt_time(row)}",
                file=sys.stderr,
                flush=True,
            )
        write(args, rows, head)
    return rows


# -- report --------------------------------------------------------------------------------


def command() -> str:
    """This run's command line; a Python outside the repository by its name only (the GPU
    check's tables name no path outside it)."""
    python = os.path.relpath(sys.executable)
    python = os.path.basename(sys.executable) if python.startswith("..") else python
    return shlex.join([python, *sys.argv])


def header(args, dev: torch.device) -> list[str]:
    if dev.type == "cuda":
        memory = (
            "peak memory: torch.cuda.max_memory_allocated during one run; 'above "
            "baseline' subtracts what was allocated before it (models, caches)"
        )
    elif dev.type != "cpu":
        memory = f"peak memory: not measured on {dev.type}"
    else:
        where = (
            "all rows run in this one process (--in-process), so earlier rows' peaks can hide "
            "a row's"
            if args.in_process
            else "each row runs in a fresh process"
        )
        memory = (
            f"peak memory: {where}; 'peak RSS above baseline' is the largest RSS sampled "
            "every 2 ms during one run (/proc/self/statm) minus the RSS after imports, model "
            "load, input read and a warm-up; 'absolute' is that largest RSS. (Without /proc: "
            "ru_maxrss, '<=' where the run never rose above an earlier peak, an upper bound)"
        )
    crop = f"; debug: LR cropped to at most {args.max_side} px a side" if args.max_side else ""
    dtypes = ", ".join(args.dtype)
    if args.dtype != ["fp32"]:
        dtypes += " (fp16 / bf16: fp32 weights under torch.autocast, the engine's amp=)"
    return [
        f"- machine: {machine(args.threads, dev)}",
        f"- command: `{command()}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; weights: {dtypes}",
        "- images: the two validation photos (Wood, YellowFlower) at full size, centre-"
        "cropped to 16:9, MATLAB-bicubic resized to 1920x1080 tiles; 2K one tile, 4K 2x2 "
        "and 8K 4x4 mosaics with mirrored tiles; LR = MATLAB bicubic x1/4, uint8" + crop,
        f"- time: the fastest of {args.reps} interleaved round(s) in one process (each round "
        "runs every method of the size once, in turn, after one full-size warm-up run of "
        "each) of uint8 LR array in, uint8 HR array out (host-device copies included)",
        f"- {memory}",
        "- PSNR: RGB, 0..255, 4-pixel border (the SR task's metric) against the HR; 'seams "
        f"out': also without the {SEAM_BAND} HR pixels either side of each boundary between "
        "mosaic tiles (photo content only; the 2K image has no seams); 'vs -O': that "
        "PSNR minus -O whole's",
        "- FLOPs: true multiply-adds (fvcore), classifier (or edge score) included, as a "
        "fraction of the -O network on the whole LR image; classes: share of patches per "
        "branch, cheapest first",
        "",
    ]


def fmt_time(row: Row) -> str:
    if row.note:
        return row.note
    return f"{row.time:.3f} s" if row.time is not None else "not timed"


def fmt_mem(value: float | None, upper: bool = False) -> str:
    if value is None:
        return "-"
    # RSS and ru_maxrss are sampled apart: a run that added nothing can read a hair below 0.
    return f"{'<=' if upper else ''}{max(value, 0.0):.0f} MiB"


def table(rows: list[Row]) -> list[str]:
    whole = {(r.size, r.dtype): r for r in rows if r.kind == "whole" and r.times}
    lines = [
        "| size | method | model | time s | time / -O whole | peak memory above baseline "
        "| absolute peak | PSNR dB | PSNR dB, seams out | vs -O, seams out "
        "| FLOPs / -O whole | classes % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: list(SIZES).index(r.size)):
        if r.note or r.time is None:
            note = r.note or "not timed (cut short)"
            lines.append(f"| {r.size} | {r.method} | {r.model} | {note} | | | | | | | | |")
            continue
        ref = whole.get((r.size, r.dtype))
        ratio = f"{r.time / ref.time:.2f}" if ref else "-"
        flops = f"{r.flops / ref.flops:.3f}" if ref and r.flops and ref.flops else "-"
        tiles = "-" if r.psnr_tiles is None else f"{r.psnr_tiles:.3f}"
        delta = "-"
        if ref and r.psnr_tiles is not None and ref.psnr_tiles is not None:
            delta = f"{r.psnr_tiles - ref.psnr_tiles:+.3f}"
        shares = "-"
        if r.class_counts:
            n = sum(r.class_counts)
            shares = "/".join(f"{100 * c / n:.0f}" for c in r.class_counts)
        lines.append(
            f"| {r.size} | {r.method} | {r.model} | {r.time:.3f} | {ratio} "
            f"| {fmt_mem(r.mem_above_mib, r.mem_upper_bound)} | {fmt_mem(r.mem_peak_mib)} "
            f"| {r.psnr:.2f} | {tiles} | {delta} | {flops} | {shares} |"
        )
    return lines


def targets(rows: list[Row]) -> list[str]:
    """The GPU targets of issue 17 read off the rows: each ClassSR row against the official
    loop (fp32, same size and model) and its time ratio to -O whole (same size and dtype)
    over its FLOPs ratio."""
    timed = [r for r in rows if r.times and not r.note]
    loop = {(r.size, r.model): r for r in timed if r.kind == "loop"}
    whole = {(r.size, r.dtype): r for r in timed if r.kind == "whole"}
    lines = []
    for r in timed:
        if r.kind not in ("patches", "regions"):
            continue
        parts = []
        ref = loop.get((r.size, r.model))
        if ref:
            loop_name = "official loop" if r.dtype == "fp32" else "official loop (fp32)"
            parts.append(f"{ref.time / r.time:.1f}x faster than the {loop_name} (>= 10)")
        o = whole.get((r.size, r.dtype))
        if o and r.flops and o.flops:
            t, f = r.time / o.time, r.flops / o.flops
            parts.append(f"time / -O whole {t:.2f} at FLOPs {f:.3f}: {t / f:.2f}x (<= 1.1)")
        if parts:
            lines.append(f"- {r.size} {r.method} ({r.model}): " + "; ".join(parts))
    return ["Against the GPU targets (issue 17):", "", *lines, ""] if lines else []


def render(rows: list[Row], head: list[str]) -> str:
    end = f"- load average at the end: {os.getloadavg()[0]:.2f}"
    return "\n".join([*head, *table(rows), "", *targets(rows), end, ""])


def write(args, rows: list[Row], head: list[str]) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        title = "# Speed: x4 upscaling of real photos to 2K, 4K and 8K\n\n"
        Path(args.out).write_text(title + render(rows, head))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"header": head, "rows": [{**asdict(r), "time": r.time} for r in rows]}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument(
        "--model",
        nargs="+",
        default=["classsr-fsrcnn-x4"],
        help="ClassSR models (shipped names or files); each gets its rows",
    )
    ap.add_argument("--o-model", default="fsrcnn-x4", help="the single-branch -O model")
    ap.add_argument(
        "--budget",
        type=float,
        nargs="*",
        default=[],
        help="also run patches and regions at these FLOPs budgets",
    )
    ap.add_argument(
        "--router",
        nargs="+",
        choices=("classifier", "edge"),
        default=["classifier"],
        help="routers of the ClassSR rows (edge: the model's calibrated edge table)",
    )
    ap.add_argument(
        "--kinds",
        nargs="+",
        choices=("patches", "regions"),
        default=["patches", "regions"],
        help="engine modes of the ClassSR rows",
    )
    ap.add_argument("--device", default=None, help="default: classsr_core.device.pick_device")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--reps", type=int, default=None, help="timed runs (default 1 CPU, 3 GPU)")
    ap.add_argument(
        "--dtype",
        nargs="+",
        choices=list(DTYPES),
        default=["fp32"],
        help="precisions, each with its rows: fp16 and bf16 under torch.autocast (the "
        "engine's amp=); for GPUs, slow on CPU",
    )
    ap.add_argument("--half", action="store_true", help="the same as --dtype fp16")
    ap.add_argument(
        "--amp-kinds",
        nargs="+",
        choices=("patches", "regions"),
        default=None,
        help="engine modes of the fp16 / bf16 ClassSR rows (default: --kinds)",
    )
    ap.add_argument(
        "--o-kinds",
        nargs="+",
        choices=O_KINDS,
        default=list(O_KINDS),
        help="rows of the -O model (whole is the reference of the ratios)",
    )
    ap.add_argument("--no-loop", action="store_true", help="leave out the official per-patch loop")
    ap.add_argument(
        "--skip-loop-above",
        choices=list(SIZES),
        default=None,
        help="skip the official loop at sizes above this one",
    )
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--images", default="runs/speed-images", help="cache of the test images")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="CPU: measure every row in this process (faster; peak RSS then also holds what "
        "earlier rows left)",
    )
    ap.add_argument("--prepare-only", action="store_true", help="make the images and stop")
    ap.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="debug: crop the LR to at most this many pixels a side",
    )
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.one:
        return one(args)
    from classsr_core.device import pick_device

    try:
        dev = pick_device(args.device)
    except InputError as exc:  # e.g. --device cuda where torch sees no GPU
        raise SystemExit(f"--device: {exc}") from None
    if args.half:
        args.dtype = ["fp16"]
    args.dtype = sorted(set(args.dtype), key=list(DTYPES).index)  # fp32 rows first
    if dev.type == "cpu" and args.dtype != ["fp32"]:
        print(
            "note: fp16 / bf16 on CPU only prove the code path (slow, not a timing)",
            file=sys.stderr,
        )
    args.device = str(dev)
    if args.reps is None:
        args.reps = 1 if dev.type == "cpu" else 3
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        ensure_images(size, Path(args.images))
    if args.prepare_only:
        return 0
    head = header(args, dev)
    rows = measure_all(args, dev, head)
    print(render(rows, head))
    write(args, rows, head)
    return 1 if any(r.note.startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
