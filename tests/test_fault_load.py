"""Load and fault (#23): a folder of 50 mixed good and bad entries through `classsr upscale`,
a run killed with SIGKILL at a seeded moment, a resume with --skip-existing, and every good
file complete and byte for byte what a one-shot run writes (docs/safety.md, "What a command
may overwrite").

The outcome must not depend on where the kill lands (before any output, mid-way, after the
end): only what the killed run left is observed (complete outputs, its fixed-name temporary
files), never how long anything took.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image as PILImage

from classsr_core.model.wrapper import ClassWrapper

pytestmark = [
    pytest.mark.skipif(
        os.name != "posix" or not hasattr(os, "mkfifo"), reason="POSIX FIFOs and symlinks"
    ),
    pytest.mark.slow,
]

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
TIMEOUT = 240  # seconds for one command: a hang (a FIFO opened) fails, it does not block CI
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# -- the folder -----------------------------------------------------------------------------


@dataclass
class Entry:
    """One entry of the input folder and what `upscale` must do with it.

    kind: ``good`` (processed: an output), ``bad`` (a per-file error: reported, no output),
    ``note`` (no regular file: skipped with one line naming ``why``), ``dup`` (the same file
    as an earlier entry: processed once, under the earlier name), ``ignored`` (no image
    suffix: not an input at all, not mentioned)."""

    name: str
    kind: str
    size: tuple[int, int] | None = None  # good: the upright input (h, w)
    why: str = ""  # note: the reason printed; bad: part of the error


def _pixels(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """Smooth gradients and noise, uint8 HWC (or HW when ``channels`` is 1)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6, size=channels)
    base = 110 + 70 * np.sin(x[..., None] / rng.uniform(2, 9) + phase) + 2 * y[..., None]
    noise = rng.normal(0, rng.uniform(2, 30), size=(h, w, channels))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return arr[..., 0] if channels == 1 else arr


def _encode(arr: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _build_folder(folder: Path, outside: Path) -> list[Entry]:
    """50 entries: 34 good images of every format and layout, an image reached through a
    symlink from outside, 7 bad files, 4 entries that are no regular file, a second name
    for a good image, and 3 files without an image suffix."""
    rng = np.random.default_rng(23)
    folder.mkdir(parents=True)
    outside.mkdir(parents=True)
    entries: list[Entry] = []

    def size() -> tuple[int, int]:
        w = int(rng.integers(24, 49))
        h = int(rng.integers(20, 41))
        return h, w

    def good(name: str, data: bytes, hw: tuple[int, int]) -> None:
        (folder / name).write_bytes(data)
        entries.append(Entry(name, "good", hw))

    # 8-bit RGB in every format the command reads
    for i in range(11):
        hw = size()
        good(f"g{i:02d}.png", _encode(_pixels(rng, *hw), "PNG"), hw)
    for i in range(3):
        hw = size()
        good(f"j{i:02d}.jpg", _encode(_pixels(rng, *hw), "JPEG", quality=90), hw)
    hw = size()
    good("j03.jpeg", _encode(_pixels(rng, *hw), "JPEG", quality=75), hw)
    for i in range(2):
        hw = size()
        path = folder / f"t{i:02d}.tif"
        tifffile.imwrite(path, _pixels(rng, *hw))
        entries.append(Entry(path.name, "good", hw))
    hw = size()
    good("w00.webp", _encode(_pixels(rng, *hw), "WEBP", quality=80), hw)
    hw = size()
    good("w01.webp", _encode(_pixels(rng, *hw), "WEBP", lossless=True), hw)
    hw = size()
    good("b00.bmp", _encode(_pixels(rng, *hw), "BMP"), hw)
    hw = size()
    good("UPPER.PNG", _encode(_pixels(rng, *hw), "PNG"), hw)  # the suffix in capitals

    # other bit depths and layouts
    hw = size()
    ok, buf = cv2.imencode(".png", _pixels(rng, *hw).astype(np.uint16) * 257)
    assert ok
    good("m_rgb16.png", buf.tobytes(), hw)
    hw = size()
    ok, buf = cv2.imencode(".png", _pixels(rng, *hw, channels=1).astype(np.uint16) * 257)
    assert ok
    good("m_grey16.png", buf.tobytes(), hw)
    hw = size()
    path = folder / "m_tif16.tif"
    tifffile.imwrite(path, _pixels(rng, *hw).astype(np.uint16) * 257)
    entries.append(Entry(path.name, "good", hw))
    hw = size()
    good("m_grey.png", _encode(_pixels(rng, *hw, channels=1), "PNG"), hw)
    hw = size()
    good("m_greyj.jpg", _encode(_pixels(rng, *hw, 1), "JPEG"), hw)
    hw = size()
    good("m_rgba.png", _encode(_pixels(rng, *hw, channels=4), "PNG"), hw)
    hw = size()
    good("m_rgbaw.webp", _encode(_pixels(rng, *hw, 4), "WEBP"), hw)
    hw = size()
    la = PILImage.fromarray(_pixels(rng, *hw, channels=4)).convert("LA")
    buf = io.BytesIO()
    la.save(buf, "PNG")
    good("m_la.png", buf.getvalue(), hw)
    hw = size()
    pal = PILImage.fromarray(_pixels(rng, *hw)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    good("m_palette.png", buf.getvalue(), hw)
    hw = size()
    one_bit = PILImage.fromarray(_pixels(rng, *hw)).convert("1")
    buf = io.BytesIO()
    one_bit.save(buf, "PNG")
    good("m_1bit.png", buf.getvalue(), hw)
    # a phone photo stored landscape and tagged "rotate 90": read upright (h and w swap)
    h, w = size()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    good("m_exif6.jpg", _encode(_pixels(rng, h, w), "JPEG", exif=exif.tobytes()), (w, h))

    # a suffix that does not say what the file is: decoded by its content
    hw = size()
    good("s_png_named.jpg", _encode(_pixels(rng, *hw), "PNG"), hw)
    hw = size()
    good("s_jpeg_named.png", _encode(_pixels(rng, *hw), "JPEG"), hw)

    # a symlink to an image outside the folder: an input under the link's name
    hw = size()
    (outside / "far.png").write_bytes(_encode(_pixels(rng, *hw), "PNG"))
    os.symlink(outside / "far.png", folder / "l_outside.png")
    entries.append(Entry("l_outside.png", "good", hw))
    # a second name (sorted after it) for an image of the folder: one file, processed once
    os.symlink(folder / "g00.png", folder / "z_link_to_g00.png")
    entries.append(Entry("z_link_to_g00.png", "dup"))

    # bad files: each a per-file error, the others still processed
    png = _encode(_pixels(rng, 40, 48), "PNG")
    jpeg = _encode(_pixels(rng, 40, 48), "JPEG")
    unreadable = "not a readable image"
    bad = {
        "x_trunc_png.png": (png[: len(png) // 2], unreadable),
        "x_trunc_jpg.jpg": (jpeg[: len(jpeg) // 2], unreadable),
        "x_empty.png": (b"", "empty file (0 bytes)"),
        "x_text.png": (b"this is not an image\n", unreadable),
        "x_noise.tif": (rng.integers(0, 256, 700, dtype=np.uint8).tobytes(), unreadable),
        # a 57-byte PNG whose header claims 30000x30000: refused before decoding
        "x_bomb.png": (
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + _png_chunk(b"IEND", b""),
            "over the limit of 100,000,000",
        ),
    }
    for name, (data, why) in bad.items():
        (folder / name).write_bytes(data)
        entries.append(Entry(name, "bad", why=why))
    tifffile.imwrite(
        folder / "x_float.tif", rng.random((20, 24, 3), dtype=np.float32), photometric="rgb"
    )
    entries.append(Entry("x_float.tif", "bad", why="unsupported pixel type"))

    # no regular file behind an image suffix: skipped with one line, never opened
    os.mkfifo(folder / "x.png")
    entries.append(Entry("x.png", "note", why="a FIFO"))
    (folder / "y.png").mkdir()
    (folder / "y.png" / "inner.png").write_bytes(png)  # folders are not entered
    entries.append(Entry("y.png", "note", why="a folder"))
    os.symlink(folder / "gone.png", folder / "n_broken.png")
    entries.append(Entry("n_broken.png", "note", why="a broken symlink"))
    os.symlink(folder / "n_loop.png", folder / "n_loop.png")
    entries.append(Entry("n_loop.png", "note", why="a symlink loop"))

    # no image suffix: not an input, whatever is inside
    (folder / "notes.txt").write_bytes(png)
    (folder / "README.md").write_text("photos of the trip\n")
    (folder / "g00.png.bak").write_bytes(png)
    entries += [Entry(n, "ignored") for n in ("notes.txt", "README.md", "g00.png.bak")]

    assert len(entries) == 50 and len(os.listdir(folder)) == 50
    return entries


# -- runs -------------------------------------------------------------------------------------


def _argv(model: Path, folder: Path, out: Path, *more: str) -> list[str]:
    cmd = [sys.executable, "-m", "classsr_core", "upscale", str(folder), "-o", str(out)]
    return [*cmd, "--model", str(model), "--no-progress", "--device", "cpu", *more]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _out_name(name: str) -> str:
    return f"{Path(name).stem}_x{SCALE}.png"


def _regular_files(*roots: Path) -> dict[Path, bytes]:
    """Bytes of every regular file under ``roots``; the rest by kind (a FIFO is not read)."""
    seen: dict[Path, bytes] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                seen[p] = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                seen[p] = b"link -> " + os.fsencode(os.readlink(p))
            else:
                seen[p] = f"mode {stat.S_IFMT(st.st_mode)}".encode()
    return seen


@dataclass
class Job:
    folder: Path
    outside: Path
    model: Path
    entries: list[Entry]
    ref: Path  # the one-shot run's output folder
    ref_rows: dict[str, dict]  # its report, by input
    inputs_before: dict[Path, bytes]

    def of(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def job_order(self) -> list[str]:
        """The job's images, in the order the report lists them (the folder sorted)."""
        names = [e.name for e in self.entries if e.kind in ("good", "bad")]
        return [str(p) for p in sorted(self.folder / n for n in names)]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Job:
    root = tmp_path_factory.mktemp("fault_load")
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=SCALE, patch_size=16, stride=12)
    model_path = root / "tiny.safetensors"
    model.save(model_path)
    entries = _build_folder(root / "in", root / "outside")
    before = _regular_files(root / "in", root / "outside")
    ref = root / "out_ref"
    done = _run(*_argv(model_path, root / "in", ref, "--report", str(ref / "report.jsonl")))
    assert done.returncode == 1, done.stderr[-3000:]  # some files failed (docs/safety.md)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    rows = {r["input"]: r for r in _report(ref / "report.jsonl")}
    j = Job(root / "in", root / "outside", model_path, entries, ref, rows, before)
    _check_complete_job(j, ref, done.stderr, skipped=set())
    # what the outputs are: the input's size times the scale, bit depth and layout kept
    for e in j.of("good"):
        out = cv2.imread(str(ref / _out_name(e.name)), cv2.IMREAD_UNCHANGED)
        assert out is not None and out.shape[:2] == (SCALE * e.size[0], SCALE * e.size[1]), e
    layouts = {
        "m_rgb16": (np.uint16, 3),
        "m_grey16": (np.uint16, 1),
        "m_tif16": (np.uint16, 3),
        "m_grey": (np.uint8, 1),
        "m_rgba": (np.uint8, 4),
        "g00": (np.uint8, 3),
    }
    for stem, (dtype, channels) in layouts.items():
        out = cv2.imread(str(ref / f"{stem}_x{SCALE}.png"), cv2.IMREAD_UNCHANGED)
        got = 1 if out.ndim == 2 else out.shape[2]
        assert (out.dtype, got) == (dtype, channels), (stem, out.dtype, out.shape)
    return j


def _check_complete_job(job: Job, out: Path, err: str, skipped: set[str]) -> list[dict]:
    """What a finished job over the folder must show, however it got there: one output per
    good image, no output for a bad one, nothing else in ``out`` (no temporary file), every
    entry accounted for on stderr, a report line per image in the job's order, and the
    inputs untouched. ``skipped``: the inputs whose outputs a killed run had written."""
    folder = job.folder
    assert "Traceback" not in err, err[-3000:]

    # out/: the outputs of the good images and the report, nothing else
    expected = {_out_name(e.name) for e in job.of("good")} | {"report.jsonl"}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)

    # stderr: each entry that is no regular file named once, each bad file named with its
    # error, each skipped input named, the summary line
    for e in job.of("note"):
        line = f"classsr upscale: {folder / e.name}: skipped, {e.why}, not an image file"
        assert err.count(line) == 1, (line, err)
    for e in job.of("bad"):
        prefix = f"classsr upscale: {folder / e.name}: "
        assert err.count(prefix) == 1, (prefix, err)
        assert e.why in err.split(prefix, 1)[1].splitlines()[0], (e, err)
    said_skipped = {
        line.removeprefix("classsr upscale: ").removesuffix(": skipped, its outputs exist")
        for line in err.splitlines()
        if line.endswith(": skipped, its outputs exist")
    }
    assert said_skipped == skipped
    n_good, n_bad = len(job.of("good")), len(job.of("bad"))
    written = n_good - len(skipped)
    summary = f"{written} written, {len(skipped)} skipped, {n_bad} failed, of {n_good + n_bad}"
    assert f"classsr upscale: {summary} images" in err, err[-2000:]
    for e in job.of("ignored") + job.of("dup"):
        assert e.name not in err

    # the report: one line per image of the job, in its order, each with its status
    rows = _report(out / "report.jsonl")
    assert [r["input"] for r in rows] == job.job_order()
    good = {str(folder / e.name): e for e in job.of("good")}
    for row in rows:
        src = row["input"]
        assert row["output"] == str(out / _out_name(src)), row
        assert row["task"] == "sr" and row["scale"] == SCALE, row
        if src in good:
            status = "skipped" if src in skipped else "written"
            assert row["status"] == status, row
            h, w = good[src].size
            assert row["size"] == [SCALE * h, SCALE * w], row
            assert "error" not in row, row
        else:
            assert row["status"] == "failed", row
            assert src in row["error"], row
            if job.ref_rows:  # the same error as the one-shot run's
                assert row["error"] == job.ref_rows[src]["error"], row

    # never its inputs: every input byte for byte, links and the FIFO as they were
    assert _regular_files(folder, job.outside) == job.inputs_before
    return rows


# -- the test ---------------------------------------------------------------------------------


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.endswith(f"_x{SCALE}.png"))


def _kill(proc: subprocess.Popen, out: Path, moment: str, rng: random.Random) -> None:
    """SIGKILL ``proc`` at ``moment``: ``before-output`` a seeded 0-0.5 s after the start
    (still importing, mostly); ``mid-run`` a seeded 0-0.3 s after the first output appears;
    ``after-end`` once it has ended (nothing left to kill). Wherever it lands is fine."""
    deadline = time.monotonic() + TIMEOUT
    if moment == "before-output":
        time.sleep(rng.uniform(0, 0.5))
    elif moment == "mid-run":
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and _outputs(out):
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
    else:
        proc.wait(timeout=TIMEOUT)
    proc.send_signal(signal.SIGKILL)  # a no-op if it has ended
    proc.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("moment", ["mid-run", "before-output", "after-end"])
def test_killed_job_resumes_to_the_one_shot_result(job, tmp_path, moment):
    out = tmp_path / "out"
    report = out / "report.jsonl"
    argv = _argv(job.model, job.folder, out, "--report", str(report))
    rng = random.Random(f"issue-23-{moment}")

    with open(tmp_path / "killed.err", "wb") as err:
        proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        _kill(proc, out, moment, rng)
    assert proc.returncode in (-signal.SIGKILL, 1), (tmp_path / "killed.err").read_text()

    # What the killed run left: complete outputs, each already the one-shot run's bytes
    # (atomic writes), and at most the fixed-name temporary files of planned outputs.
    left = sorted(out.iterdir()) if out.is_dir() else []
    done_before = {p.name for p in _outputs(out)} if out.is_dir() else set()
    for name in done_before:
        assert (out / name).read_bytes() == (job.ref / name).read_bytes(), name
    planned = {_out_name(e.name) for e in job.of("good") + job.of("bad")} | {"report.jsonl"}
    temps = [p.name for p in left if p.name.startswith(".")]
    assert all(t.endswith(".tmp") and t[1:-4] in planned for t in temps), temps
    assert {p.name for p in left} <= done_before | set(temps) | {"report.jsonl"}
    # The writes are too quick for the kill to land inside one reliably: leave what a kill
    # there would (half a file under the fixed temporary name) for the report and for the
    # first image not written yet.
    out.mkdir(exist_ok=True)
    pending = [_out_name(e.name) for e in job.of("good") if _out_name(e.name) not in done_before]
    for name in ["report.jsonl", *pending[:1]]:
        tmp = out / f".{name}.tmp"
        if not tmp.exists():
            tmp.write_bytes(b"\x89PNG\r\n\x1a\nhalf a file")
            temps.append(tmp.name)

    # The resume: the same command with --skip-existing, into the same folder.
    done = _run(*argv, "--skip-existing")
    assert done.returncode == 1, done.stderr[-3000:]  # the bad files fail again
    skipped = {str(job.folder / e.name) for e in job.of("good") if _out_name(e.name) in done_before}
    rows = _check_complete_job(job, out, done.stderr, skipped)
    if temps:
        assert f"removed {len(temps)} temporary file(s) of an interrupted run" in done.stderr
    else:
        assert "temporary file(s)" not in done.stderr

    # Every good image: complete and identical to the one-shot run.
    for e in job.of("good"):
        name = _out_name(e.name)
        assert (out / name).read_bytes() == (job.ref / name).read_bytes(), name
    # What was measured is the one-shot run's too, for the images this run wrote.
    for row in rows:
        if row["status"] == "written":
            ref = job.ref_rows[row["input"]]
            assert row["class_counts"] == ref["class_counts"], row
            assert row["flops"] == ref["flops"], row
