"""Scale out (#18): ranks over a folder, and the peak memory of images in bands.

    .venv/bin/python benchmarks/scale_out.py ranks  [--photos 8] [--folder DIR] [--model NAME]
    .venv/bin/python benchmarks/scale_out.py memory [--sizes 2000,4000,8000] [--same 1000]

``ranks``: the first N photos of data/photos/holdout (scripts/fetch_val_photos.sh; else
data/photos/val, or --folder), downscaled x4 with ``classsr_core._basicsr.imresize``,
upscaled by one process with one thread, then by ``torchrun --nproc-per-node 2
--standalone`` (gloo; each rank gets cores // 2 threads, one on a 2-core machine); wall
clock of each command (start-up and model loading included) and whether the outputs are
byte-identical. Target: two ranks <= 0.6x the time of one process.

``memory``: an LR image of S x S (a real photo mirrored to that size, an uncompressed TIFF
read by rows), upscaled x4 with ``--stream`` in a subprocess. The parent samples the
child's anonymous memory (``RssAnon``: heap and tensors, not the mapped libraries) every
few milliseconds and reports its peak; the child reports ``VmHWM`` (peak resident, mapped
files included). Then the same photo at ``--same`` pixels is upscaled in memory and
streamed, and the decoded outputs compared. Target: peak anonymous memory under 1.5 GB at
8000 x 8000, and within 10% of it for an LR 4x smaller (4000 x 4000; 2000 x 2000 also run).

Each prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FAST = "classsr-fsrcnn-x4-fast"

_PROBE = """
import re, sys, time
from classsr_core.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - t
status = open('/proc/self/status').read()
kb = lambda key: int(re.search(key + r':\\s+(\\d+)', status).group(1))
print('PROBE', code, wall, kb('VmHWM'), kb('RssAnon'), file=sys.stderr)
"""


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}


def photo_folder(folder: str | None) -> Path:
    if folder:
        return Path(folder)
    for name in ("holdout", "val"):
        if (ROOT / "data" / "photos" / name).is_dir():
            return ROOT / "data" / "photos" / name
    raise SystemExit("no photos: run scripts/fetch_val_photos.sh, or pass --folder DIR")


def make_lr(photos: int, source: Path, folder: Path) -> list[Path]:
    import cv2

    from classsr_core._basicsr import imresize

    files = sorted(source.glob("*.png"))[:photos]
    if len(files) < photos:
        raise SystemExit(
            f"need {photos} PNG photos in {source} (scripts/fetch_val_photos.sh, or --folder)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        hr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        h, w = (hr.shape[0] // 4) * 4, (hr.shape[1] // 4) * 4
        lr = imresize(hr[:h, :w].astype(np.float64) / 255, 1 / 4)
        path = folder / f.name
        cv2.imwrite(str(path), np.clip(np.rint(lr * 255), 0, 255).astype(np.uint8))
        out.append(path)
    return out


def ranks(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="classsr-ranks-"))
    try:
        lr = make_lr(args.photos, photo_folder(args.folder), tmp / "lr")
        pixels = sum(int(np.prod(_size(p))) for p in lr)
        common = ["upscale", str(tmp / "lr"), "--model", args.model, "--mode", args.mode]
        common += ["--no-progress", "--device", "cpu"]
        one = [sys.executable, "-m", "classsr_core", *common, "-o", str(tmp / "one")]
        two = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        two += ["--standalone", "-m", "classsr_core", *common, "-o", str(tmp / "two")]
        times = {}
        for name, cmd in (("one", one), ("two", two)):
            t = time.perf_counter()
            done = subprocess.run(cmd, env=_env(1), capture_output=True, text=True)
            times[name] = time.perf_counter() - t
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the {name} run failed")
        ones = sorted(p.name for p in (tmp / "one").iterdir())
        same = ones == sorted(p.name for p in (tmp / "two").iterdir() if p.suffix == ".png")
        same = same and all(
            (tmp / "one" / n).read_bytes() == (tmp / "two" / n).read_bytes() for n in ones
        )
        print(
            json.dumps(
                {
                    "photos": len(lr),
                    "lr_megapixels": round(pixels / 1e6, 2),
                    "model": args.model,
                    "mode": args.mode,
                    "one_process_s": round(times["one"], 2),
                    "two_ranks_s": round(times["two"], 2),
                    "ratio": round(times["two"] / times["one"], 3),
                    "target_ratio": 0.6,
                    "byte_identical": same,
                }
            ),
            flush=True,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _size(path: Path) -> tuple[int, int]:
    from classsr_core.io.streams import image_size

    return image_size(path)


def big_lr(size: int, path: Path) -> None:
    """A real photo mirrored (reflected tiles, no seams) to ``size x size``."""
    import cv2
    import tifffile

    photo = cv2.imread(str(ROOT / "classsr_core" / "assets" / "demo_hr.png"))[:, :, ::-1]
    reps = (size // photo.shape[0] + 1, size // photo.shape[1] + 1)
    rows = [np.flip(photo, 0) if i % 2 else photo for i in range(reps[0])]
    col = np.concatenate(rows)
    cols = [np.flip(col, 1) if j % 2 else col for j in range(reps[1])]
    img = np.ascontiguousarray(np.concatenate(cols, axis=1)[:size, :size])
    if path.suffix == ".tif":
        tifffile.imwrite(path, img, photometric="rgb", bigtiff=img.nbytes > 2**31)
    else:
        cv2.imwrite(str(path), img[:, :, ::-1])


def _peak_anon(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str, int]:
    """Run ``cmd``; its stderr and the peak of its ``RssAnon`` in kB, sampled every 5 ms."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                text = status.read_text()
                kb = int(text.split("RssAnon:")[1].split()[0])
                peak = max(peak, kb)
            except (OSError, IndexError, ValueError):  # exiting: the last sample stands
                pass
            time.sleep(0.005)
        err.seek(0)
        return proc, err.read(), peak


def _upscale_probe(args, src: Path, out: Path, *extra: str) -> dict:
    argv = ["upscale", str(src), "-o", str(out), "--model", args.model, "--mode", args.mode]
    argv += ["--no-progress", "--overwrite", "--device", "cpu", "--max-pixels", "0", *extra]
    if args.budget is not None:
        argv += ["--budget", str(args.budget)]
    proc, stderr, peak = _peak_anon([sys.executable, "-c", _PROBE, *argv], _env(args.threads))
    probe = [line for line in stderr.splitlines() if line.startswith("PROBE")]
    if proc.returncode != 0 or not probe:
        print(stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"the run on {src.name} failed")
    _, _code, wall, hwm, _anon = probe[-1].split()
    peaks = {"peak_anon_mb": round(peak / 1024), "peak_rss_mb": round(int(hwm) / 1024)}
    return {"seconds": round(float(wall), 1), **peaks}


def _decoded(path: Path) -> np.ndarray:
    """RGB pixels of an output, whichever path wrote it (OpenCV's TIFFs are LZW, which
    tifffile reads only with imagecodecs; OpenCV reads both, BigTIFF included)."""
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


def memory(args) -> None:
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="classsr-bands-"))
    tmp.mkdir(parents=True, exist_ok=True)
    common = {"mode": args.mode, "model": args.model, "threads": args.threads}
    if args.budget is not None:
        common["budget"] = args.budget
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            src = tmp / f"lr{size}.{args.input}"
            big_lr(size, src)
            out = tmp / f"sr{size}.{args.output}"
            row = _upscale_probe(args, src, out, "--stream")
            row = {"lr": f"{size}x{size}", "out": f"{4 * size}x{4 * size}", **common, **row}
            row["output_mb"] = round(out.stat().st_size / 2**20)
            print(json.dumps(row), flush=True)
            out.unlink()
            src.unlink()
        # Byte-identity: one image both paths can hold, the decoded pixels compared.
        src = tmp / f"lr{args.same}.{args.input}"
        big_lr(args.same, src)
        mem, streamed = tmp / f"mem.{args.output}", tmp / f"streamed.{args.output}"
        row_mem = _upscale_probe(args, src, mem, "--stream-above", "0")
        row_str = _upscale_probe(args, src, streamed, "--stream")
        a, b = _decoded(mem), _decoded(streamed)
        same = a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
        print(
            json.dumps(
                {
                    "lr": f"{args.same}x{args.same}",
                    **common,
                    "in_memory": row_mem,
                    "streamed": row_str,
                    "pixels_identical": same,
                }
            ),
            flush=True,
        )
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("ranks")
    r.add_argument("--photos", type=int, default=8)
    r.add_argument("--folder", default=None, help="photos (default: data/photos/holdout)")
    r.add_argument("--model", default="classsr-fsrcnn-x4-shared")
    r.add_argument("--mode", default="patches")
    m = sub.add_parser("memory")
    m.add_argument("--sizes", default="2000,4000,8000", help="LR sizes, streamed")
    m.add_argument("--same", type=int, default=1000, help="LR size run both ways")
    m.add_argument("--input", choices=("tif", "png"), default="tif")
    m.add_argument("--output", choices=("tif", "png"), default="tif")
    m.add_argument("--model", default=FAST)
    m.add_argument("--mode", default="regions")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument(
        "--budget",
        type=float,
        default=None,
        help="route at this FLOPs budget (default: the model's router). The fast model at "
        "0.03 sends every patch to its bicubic branch: the band machinery's memory at "
        "sizes whose full compute would take hours on 2 cores",
    )
    m.add_argument("--tmp", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    ranks(args) if args.what == "ranks" else memory(args)


if __name__ == "__main__":
    main()
