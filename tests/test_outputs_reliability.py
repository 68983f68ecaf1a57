"""Outputs that cannot lose data or hang (#23): every file a command writes is kept off its
inputs and its other outputs, a resumed job's report lists the whole job, only regular
files are inputs, --patch is cut to the image, a full disk is one line, temporary names
fit and a killed run's temporary file is cleared, and --tolerance is checked once."""

from __future__ import annotations

import errno
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import photo, save, snapshot, tiny_model, up
from PIL import Image as PILImage

from classsr_core.cli import main
from classsr_core.io import atomic
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.routing.edge import EdgeTable

# -- fixtures: the tiny model of tests/test_cli_safety.py, two 32x32 photos ---------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory)


def _edge_model(tmp_path_factory, curve, default_router=None) -> str:
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 24, 64], scale=2, patch_size=16, stride=12)
    model.router_states["edge"] = EdgeTable(
        edges=(0.1,),
        mse=((0.01, 0.005, 0.001), (0.05, 0.02, 0.001)),
        price=1e-6,
        tolerance_db=0.05,
        curve=curve,
    )
    model.default_router = default_router
    path = tmp_path_factory.mktemp("m") / "edge.safetensors"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def uncurved_edge_model(tmp_path_factory) -> str:
    """An edge table without a tolerance curve (calibrated before --tolerance existed)."""
    return _edge_model(tmp_path_factory, (), "edge")


@pytest.fixture(scope="module")
def classifier_default_edge_model(tmp_path_factory) -> str:
    """A calibrated edge table, but the classifier as the default router."""
    return _edge_model(tmp_path_factory, ((1e-7, 0.01, 0.02), (1e-6, 0.05, 0.08)), None)


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_error(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("error:") == 1, err


@contextmanager
def _deadline(seconds: int):
    """Turn a hang (a FIFO opened for reading blocks until a writer comes) into a failure."""

    def fail(*_):
        raise TimeoutError(f"hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- 1. the report and every other written file join "no output is an input" -------------


def test_report_equal_to_the_output_is_refused(model_path, photos, tmp_path, capsys, no_load):
    out = tmp_path / "r.png"
    src = str(photos / "a.png")
    assert main(up(model_path, src, "-o", str(out), "--report", str(out))) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "the output of" in err and "the report (--report)" in err
    assert not out.exists()
    # --overwrite does not make it safe: an existing r.png is left as it was.
    out.write_bytes(b"earlier result")
    argv = up(model_path, src, "-o", str(out), "--report", str(out), "--overwrite")
    assert main(argv) == 2
    assert "the report (--report)" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier result"


@pytest.mark.parametrize("flag", ["--report", "--class-map", "-o"])
def test_no_output_replaces_the_model_file_even_with_overwrite(
    model_path, photos, tmp_path, capsys, no_load, flag
):
    model = tmp_path / "m.safetensors"
    model.write_bytes(Path(model_path).read_bytes())
    before = snapshot(photos, model)
    argv = ["-o", str(tmp_path / "x.png"), flag, str(model)]
    if flag == "-o":
        argv = ["-o", str(model)]
    assert main(up(str(model), str(photos / "a.png"), *argv, "--overwrite")) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert str(model) in err
    assert snapshot(photos, model) == before


def test_report_naming_an_input_image_or_the_class_map_is_refused(
    model_path, photos, tmp_path, capsys, no_load
):
    before = snapshot(photos)
    src = str(photos / "a.png")
    argv = up(model_path, src, "-o", str(tmp_path / "o.png"), "--report", src, "--overwrite")
    assert main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    cm = str(tmp_path / "cm.png")
    argv = up(model_path, src, "-o", str(tmp_path / "o.png"), "--class-map", cm, "--report", cm)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the class map of" in err and "the report (--report)" in err
    assert snapshot(photos) == before and not list(tmp_path.glob("*.png"))


def test_report_in_the_input_folder_or_a_folder_is_refused(
    model_path, photos, tmp_path, capsys, no_load
):
    out = str(tmp_path / "out")
    assert main(up(model_path, str(photos), "-o", out, "--report", str(photos / "r.png"))) == 2
    assert "input folder" in capsys.readouterr().err
    assert main(up(model_path, str(photos), "-o", out, "--report", str(tmp_path))) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_hard_linked_to_an_input_is_the_input(
    model_path, photos, tmp_path, capsys, no_load
):
    link = tmp_path / "link.png"
    os.link(photos / "a.png", link)
    before = snapshot(photos)
    argv = up(model_path, str(photos / "a.png"), "-o", str(link), "--overwrite")
    assert main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(photos) == before


def test_sweep_output_naming_its_model_is_refused(model_path, photos, tmp_path, capsys, no_load):
    model = tmp_path / "run.csv"  # a model file whatever its name: sweep -o run writes run.csv
    model.write_bytes(Path(model_path).read_bytes())
    argv = ["sweep", str(photos), "--model", str(model), "-o", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "is the input" in err and model.read_bytes() == Path(model_path).read_bytes()


def test_calibrate_output_naming_a_folder_is_refused(model_path, photos, tmp_path, capsys, no_load):
    argv = ["calibrate", str(photos), "--model", model_path, "-o", str(tmp_path)]
    assert main(argv) == 2
    assert "is a folder" in capsys.readouterr().err


# -- 2. a resumed job's report lists the whole job -----------------------------------------


def test_resumed_report_lists_every_image(model_path, photos, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    assert main(up(model_path, str(photos), "-o", str(out), "--report", str(report))) == 0
    first = {r["input"]: r for r in _report(report)}
    assert [r["status"] for r in first.values()] == ["written", "written"]

    # The job grows by two images, one of them broken; the report of the earlier run is
    # there: the skipped lines keep what it measured.
    save(photos / "c.png", 2)
    (photos / "d.png").write_bytes(b"")
    argv = up(model_path, str(photos), "-o", str(out), "--report", str(report))
    assert main([*argv, "--skip-existing"]) == 1
    rows = _report(report)
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("a.png", "skipped"),
        ("b.png", "skipped"),
        ("c.png", "written"),
        ("d.png", "failed"),
    ]
    a = rows[0]
    assert a["flops"] == first[a["input"]]["flops"] and a["output"] == str(out / "a_x2.png")
    assert "empty file" in rows[3]["error"]
    capsys.readouterr()


def test_report_after_a_kill_lists_the_skipped_images(model_path, photos, tmp_path, capsys):
    # A job killed after two images: their outputs are there, the report (written at the
    # end) is not. The resumed job's report still names every image of the job.
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    assert main(up(model_path, str(photos), "-o", str(out))) == 0
    save(photos / "c.png", 2)
    argv = up(model_path, str(photos), "-o", str(out), "--report", str(report))
    assert main([*argv, "--skip-existing"]) == 0
    rows = _report(report)
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("a.png", "skipped"),
        ("b.png", "skipped"),
        ("c.png", "written"),
    ]
    assert rows[0]["size"] == [64, 64] and rows[0]["task"] == "sr" and rows[0]["scale"] == 2
    capsys.readouterr()


def test_resumed_report_under_torchrun_lists_every_image(model_path, photos, tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "out"
    assert main(up(model_path, str(photos / "a.png"), "-o", str(out / "a_x2.png"))) == 0
    save(photos / "c.png", 2)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    cmd += ["-m", "classsr_core", *up(model_path, str(photos), "-o", str(out), "--skip-existing")]
    done = subprocess.run([*cmd, "--device", "cpu"], env=env, capture_output=True, text=True)
    known_abort = "terminate called without an active exception"  # tests/test_scale_out.py
    assert done.returncode == 0 or known_abort in done.stderr, done.stderr[-3000:]
    rows = _report(out / "report.jsonl")  # torchrun's default report
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("a.png", "skipped"),
        ("b.png", "written"),
        ("c.png", "written"),
    ]
    capsys.readouterr()


# -- 3. only regular files are inputs -------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_in_the_folder_is_skipped_not_opened(model_path, photos, tmp_path, capsys):
    os.mkfifo(photos / "c.png")
    out = tmp_path / "out"
    with _deadline(60):
        code = main(up(model_path, str(photos), "-o", str(out)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{photos / 'c.png'}: skipped, a FIFO" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_named_directly_is_refused(model_path, tmp_path, capsys, no_load):
    fifo = tmp_path / "b.png"
    os.mkfifo(fifo)
    with _deadline(60):
        code = main(up(model_path, str(fifo), "-o", str(tmp_path / "o.png")))
    assert code == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert f"{fifo} is a FIFO" in err


def test_symlink_loops_and_folders_are_skipped_links_to_files_followed(
    model_path, photos, tmp_path, capsys
):
    os.symlink(photos / "loop.png", photos / "loop.png")  # points at itself
    os.symlink(photos / "x.png", photos / "y.png")
    os.symlink(photos / "y.png", photos / "x.png")  # a loop of two
    (photos / "dir.png").mkdir()
    os.symlink(photos / "a.png", photos / "c.png")  # a link to an image: an input
    out = tmp_path / "out"
    with _deadline(60):
        code = main(up(model_path, str(photos), "-o", str(out)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    for name in ("loop.png", "x.png", "y.png"):
        assert f"{photos / name}: skipped, a symlink loop" in err
    assert f"{photos / 'dir.png'}: skipped, a folder" in err
    # c.png is a.png under another name: one file, processed once
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]


def test_list_inputs_opens_nothing(photos, tmp_path):
    from classsr_core.io.inputs import list_inputs

    if hasattr(os, "mkfifo"):
        os.mkfifo(photos / "f.jpg")
    (photos / "notes.txt").write_text("not an image suffix: not listed, not noted")
    with _deadline(30):
        files, notes = list_inputs([photos, photos / "a.png", tmp_path / "missing.png"])
    assert [p.name for p in files] == ["a.png", "b.png", "missing.png"]  # missing: per file
    assert len(notes) == int(hasattr(os, "mkfifo"))


# -- 4. --patch larger than the image is cut to it; bad sizes refused up front -------------


def _json_run(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)[0]


@pytest.mark.parametrize("stream", [False, True])
def test_patch_larger_than_the_image_is_cut_to_it(model_path, tmp_path, capsys, stream):
    src = save(tmp_path / "small.png", pixels=photo(0, 64)[:48])  # 64 wide, 48 high
    more = ["--stream"] if stream else []
    rows = {}
    for patch in ("4096", "64"):
        out = str(tmp_path / f"o{patch}.png")
        rows[patch] = _json_run(
            capsys, *up(model_path, str(src), "-o", out, "--patch", patch), *more
        )
    # One 64x64 patch either way: the 4096 patch cost what the image's own size costs
    # (not a 4096x4096 canvas: 14 GB and 4096**2 / 64**2 times the FLOPs).
    assert rows["4096"]["flops"] == rows["64"]["flops"] > 0
    a, b = (np.asarray(PILImage.open(tmp_path / f"o{p}.png")) for p in ("4096", "64"))
    assert a.shape == (96, 128, 3) and np.array_equal(a, b)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stride", "20", "--patch", "16"], "--stride 20 is larger than the patch size 16"),
        (["--stride", "20"], "--stride 20 is larger than the patch size 16"),
        (["--patch", "8"], "smaller than the model's stride 12"),
    ],
)
def test_tiling_that_would_fail_per_image_is_refused_once(
    model_path, photos, tmp_path, capsys, no_load, flags, message
):
    assert main(up(model_path, str(photos), "-o", str(tmp_path / "o"), *flags)) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert message in err


@pytest.mark.parametrize(
    "flag, value", [("--patch", "0"), ("--stride", "-1"), ("--batch-size", "0"), ("--halo", "-2")]
)
def test_bad_sizes_are_refused_by_the_parser(model_path, photos, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(up(model_path, str(photos), "-o", str(tmp_path / "o"), flag, value))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


# -- 5. a full disk is one line ---------------------------------------------------------------


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_report_on_a_full_disk_is_one_line(model_path, photos, tmp_path, capsys, monkeypatch):
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    monkeypatch.setattr(Path, "write_text", _full)
    code = main(up(model_path, str(photos), "-o", str(out), "--report", str(report)))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1
    _one_error(err)
    assert f"disk full while writing {report}" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]  # the work stays
    assert not report.exists() and not list(tmp_path.glob(".*tmp"))


def test_outputs_on_a_full_disk_are_named(model_path, photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(Path, "write_bytes", _full)
    code = main(up(model_path, str(photos), "-o", str(out)))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"disk full while writing {out / 'a_x2.png'}" in err
    assert "0 written, 0 skipped, 2 failed" in err
    assert not list(out.iterdir())  # no temporary file left either


def test_sweep_csv_on_a_full_disk_is_one_line(model_path, photos, tmp_path, capsys, monkeypatch):
    import csv

    monkeypatch.setattr(csv, "writer", _full)
    out = tmp_path / "sweep"
    argv = ["sweep", str(photos), "--model", model_path, "-o", str(out), "--budgets", "1.0"]
    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1
    _one_error(err)
    assert f"disk full while writing {out}.csv" in err


# -- 6. temporary names fit; a killed run's temporary file is cleared ----------------------


@pytest.mark.parametrize("length", [247, 251, 255])
def test_long_output_names_fit_their_temporary_name(tmp_path, length):
    from classsr_core.io.images import write_image

    name = "n" * (length - 4) + ".png"
    tmp = atomic.temp_path(tmp_path / name)
    assert len(os.fsencode(tmp.name)) <= 255 and tmp.name.startswith(".")
    assert tmp.name.endswith(".tmp") and tmp == atomic.temp_path(tmp_path / name)
    write_image(tmp_path / name, photo())
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_upscale_writes_a_247_character_output_name(model_path, tmp_path, capsys):
    src = save(tmp_path / "in" / ("s" * 240 + ".png"))
    out = tmp_path / "out"
    assert main(up(model_path, str(src), str(tmp_path / "in" / "x.png"), "-o", str(out))) == 1
    capsys.readouterr()  # x.png is missing: a per-file error; the long name is written
    (written,) = out.iterdir()
    assert len(written.name) == 247


@pytest.mark.parametrize("stream", [False, True])
def test_a_killed_runs_temporary_file_is_cleared_on_resume(
    model_path, photos, tmp_path, capsys, stream
):
    out = tmp_path / "out"
    more = ["--stream"] if stream else []
    assert main(up(model_path, str(photos / "a.png"), "-o", str(out / "a_x2.png"), *more)) == 0
    # Killed while writing b (this version's fixed temporary name) and while replacing a
    # with --overwrite (an earlier version's random name).
    (out / ".b_x2.png.tmp").write_bytes(b"half a png")
    (out / ".a_x2.png.q8x_3kz1.tmp").write_bytes(b"half a png")
    argv = up(model_path, str(photos), "-o", str(out), "--skip-existing", *more)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "removed 2 temporary file(s) of an interrupted run" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]
    assert np.asarray(PILImage.open(out / "b_x2.png")).shape == (64, 64, 3)


def test_a_write_under_way_is_not_taken_for_stale(tmp_path):
    target = tmp_path / "o.png"
    with atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"first writer")
        assert atomic.remove_stale_temps([target]) == []  # locked: a live writer's
        busy = pytest.raises(atomic.BusyError, match="being written by another process")
        with busy, atomic.atomic_path(target):
            pass
    assert target.read_bytes() == b"first writer" and os.listdir(tmp_path) == ["o.png"]


def test_a_stale_temporary_file_is_replaced_by_the_next_write(tmp_path):
    target = tmp_path / "o.png"
    atomic.temp_path(target).write_bytes(b"killed mid-write")
    atomic.atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and os.listdir(tmp_path) == ["o.png"]


# -- 7. --tolerance without a calibrated router: once, up front ------------------------------


def test_tolerance_without_an_edge_table_is_refused_once(
    model_path, photos, tmp_path, capsys, no_load
):
    argv = up(model_path, str(photos), "-o", str(tmp_path / "o"), "--tolerance", "0.05")
    assert main(argv) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert model_path in err and "classsr calibrate" in err
    assert not (tmp_path / "o").exists()


def test_tolerance_on_an_uncurved_edge_table_is_refused_once(
    uncurved_edge_model, photos, tmp_path, capsys, no_load
):
    argv = up(uncurved_edge_model, str(photos), "-o", str(tmp_path / "o"), "--tolerance", "0.05")
    assert main(argv) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "no tolerance curve" in err and "classsr calibrate" in err


def test_tolerance_with_the_classifier_as_default_names_router_edge(
    classifier_default_edge_model, photos, tmp_path, capsys
):
    argv = up(classifier_default_edge_model, str(photos), "-o", str(tmp_path / "o"))
    assert main([*argv, "--tolerance", "0.05"]) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "--router edge" in err
    assert main([*argv, "--tolerance", "0.05", "--router", "edge"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_x2.png", "b_x2.png"]
