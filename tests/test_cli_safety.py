"""Command-line data safety (docs/safety.md): no command overwrites its inputs or its own
outputs, existing outputs need a flag, bad files are per-file errors, EXIF orientation is
applied, and bad flags are one message up front."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import photo, save, snapshot, tiny_model, up
from PIL import Image as PILImage
from PIL import ImageOps

from classsr_core.cli import main
from classsr_core.io.images import read_image, write_image
from classsr_core.model import loading as checkpoint
from classsr_core.model.loading import save_model
from classsr_core.model.wrapper import ClassWrapper


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def denoiser_path(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ClassWrapper("fsrcnn", widths=[8, 16], scale=1, patch_size=16, stride=12)
    path = tmp_path_factory.mktemp("m") / "denoise.safetensors"
    save_model(model, path, {"config": {"task": {"name": "denoise", "sigma": 15}}})
    return str(path)


# -- 2. an output is never one of the inputs or another output --------------------------


def test_class_map_naming_an_input_file_is_refused(model_path, photos, tmp_path, capsys, no_load):
    before = snapshot(photos)
    src = str(photos / "a.png")
    argv = up(model_path, src, "-o", str(tmp_path / "o.png"), "--class-map", src)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is the input" in err and "a.png" in err
    assert snapshot(photos) == before
    assert not (tmp_path / "o.png").exists()


def test_class_map_folder_equal_to_the_input_folder_is_refused(
    model_path, photos, tmp_path, capsys, no_load
):
    before = snapshot(photos)
    argv = up(model_path, str(photos), "-o", str(tmp_path / "out"), "--class-map", str(photos))
    assert main(argv) == 2
    assert "input folder" in capsys.readouterr().err
    assert snapshot(photos) == before  # no overlay joined (or replaced) the inputs


def test_output_folder_equal_to_the_input_folder_is_refused(model_path, photos, capsys, no_load):
    before = snapshot(photos)
    assert main(up(model_path, str(photos), "-o", str(photos))) == 2
    assert "input folder" in capsys.readouterr().err
    assert snapshot(photos) == before


def test_output_equal_to_class_map_is_refused(model_path, photos, tmp_path, capsys, no_load):
    before = snapshot(photos)
    dst = str(tmp_path / "same.png")
    argv = up(model_path, str(photos / "a.png"), "-o", dst, "--class-map", dst)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the output of" in err and "the class map of" in err
    assert not Path(dst).exists()
    assert snapshot(photos) == before


def test_output_given_through_another_spelling_is_still_the_input(
    model_path, photos, capsys, monkeypatch, no_load
):
    monkeypatch.chdir(photos)
    before = snapshot(photos)
    assert main(up(model_path, "a.png", "-o", str(photos / "." / "a.png"))) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert snapshot(photos) == before


def test_convert_official_refuses_to_overwrite_its_input(tmp_path, capsys):
    pth = tmp_path / "X.pth"
    pth.write_bytes(b"official weights stand-in")
    assert main(["convert-official", str(pth), str(pth), "--arch", "fsrcnn"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert pth.read_bytes() == b"official weights stand-in"


@pytest.mark.parametrize("target", ["photo", "model"])
def test_calibrate_refuses_an_output_that_is_an_input(
    model_path, photos, tmp_path, capsys, no_load, target
):
    model = tmp_path / "m.safetensors"
    model.write_bytes(Path(model_path).read_bytes())
    before = snapshot(photos, model)
    out = photos / "a.png" if target == "photo" else model
    argv = ["calibrate", str(photos), "--model", str(model), "-o", str(out)]
    assert main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(photos, model) == before


def test_sweep_refuses_to_write_its_plot_among_the_photos(model_path, photos, capsys, no_load):
    before = snapshot(photos)
    assert main(["sweep", str(photos), "--model", model_path, "-o", str(photos / "a")]) == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(photos) == before


# -- 3. two inputs may not share an output ---------------------------------------------


def test_inputs_with_the_same_stem_are_refused(model_path, tmp_path, capsys, no_load):
    a1 = save(tmp_path / "d1" / "a.png", 0)
    a2 = save(tmp_path / "d2" / "a.png", 1)
    a3 = tmp_path / "d1" / "a.jpg"
    PILImage.fromarray(photo(2)).save(a3)
    out = tmp_path / "out"
    assert main(up(model_path, str(a1), str(a2), str(a3), "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert all(str(p) in err for p in (a1, a2, a3))
    assert "rename them, or run them separately" in err
    assert not out.exists()


def test_the_same_file_given_twice_is_one_job(model_path, photos, tmp_path, capsys):
    argv = up(model_path, str(photos), str(photos / "a.png"), "-o", str(tmp_path / "o"))
    assert main([*argv, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


# -- 4. existing outputs ---------------------------------------------------------------


def test_existing_outputs_are_refused_skipped_or_replaced(model_path, photos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = up(model_path, str(photos), "-o", str(out))
    assert main(argv) == 0
    capsys.readouterr()
    first = {p.name: (p.read_bytes(), p.stat().st_ino) for p in out.iterdir()}
    assert sorted(first) == ["a_x2.png", "b_x2.png"]

    # Default: refused before any work, naming the files and both flags.
    save(photos / "c.png", 2)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a_x2.png" in err and "--overwrite" in err and "--skip-existing" in err
    assert not (out / "c_x2.png").exists()

    # --skip-existing: only the new input is processed, the others are reported skipped.
    assert main([*argv, "--skip-existing", "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(r["input"]).name for r in json.loads(captured.out)] == ["c.png"]
    assert "a.png: skipped" in captured.err and "1 written, 2 skipped" in captured.err
    for name, (data, inode) in first.items():
        assert (out / name).read_bytes() == data and (out / name).stat().st_ino == inode

    # --overwrite: replaced (atomically: a new file renamed onto the old name).
    assert main([*argv, "--overwrite"]) == 0
    assert all((out / n).stat().st_ino != inode for n, (_, inode) in first.items())
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"]


def test_overwrite_and_skip_existing_exclude_each_other(model_path, photos, tmp_path, capsys):
    argv = up(model_path, str(photos), "-o", str(tmp_path), "--overwrite", "--skip-existing")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")

    def half_then_fail(self, data):
        Path.write_text(self, "half")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError):
        write_image(dst, photo())
    monkeypatch.undo()
    assert dst.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left


# -- 5. bad files are per-file errors; the pixel limit is read from the header -----------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png() -> bytes:
    """A valid PNG header that claims 30000x30000 RGB, with almost no data behind it."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_bad_files_are_reported_and_the_rest_processed(
    model_path, photos, tmp_path, capsys, monkeypatch
):
    import cv2

    (photos / "empty.png").write_bytes(b"")
    bomb = _bomb_png()
    assert len(bomb) < 100
    (photos / "huge.png").write_bytes(bomb)
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(
        cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags)
    )

    out = tmp_path / "out"
    code = main(up(model_path, str(photos), "-o", str(out)))
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]
    assert "empty.png: empty file" in captured.err
    assert "huge.png" in captured.err and "--max-pixels" in captured.err
    assert "2 written, 0 skipped, 2 failed, of 4 images" in captured.err
    assert "Traceback" not in captured.err
    assert len(bomb) not in decoded  # refused from its header: never handed to the decoder


def test_max_pixels_flag(model_path, photos, tmp_path, capsys):
    code = main(up(model_path, str(photos / "a.png"), "-o", str(tmp_path), "--max-pixels", "1000"))
    assert code == 1
    assert "32x32 = 1,024 pixels, over the limit of 1,000" in capsys.readouterr().err
    assert read_image(photos / "a.png", max_pixels=1024).rgb.shape == (32, 32, 3)


# -- 6. EXIF orientation --------------------------------------------------------------


def _stored_with_marker() -> np.ndarray:
    """64x48 (width x height) with a red top-left and a blue bottom-left block, as stored."""
    img = np.full((48, 64, 3), 128, np.uint8)
    img[:12, :12] = (255, 0, 0)
    img[-12:, :12] = (0, 0, 255)
    return img


def _with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    PILImage.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_jpeg_orientation_6_is_read_as_displayed(tmp_path):
    path = _with_orientation(tmp_path / "phone.jpg", _stored_with_marker(), 6)
    img = read_image(path)
    assert img.rgb.shape == (64, 48, 3)  # 48 wide, 64 high: as viewers show it
    # Orientation 6: shown turned 90 degrees clockwise, the stored top-left goes top-right
    # and the stored bottom-left top-left.
    top_right = img.rgb[2:10, -10:-2].mean(axis=(0, 1))
    top_left = img.rgb[2:10, 2:10].mean(axis=(0, 1))
    assert top_right[0] > 0.9 and top_right[2] < 0.1  # red
    assert top_left[2] > 0.9 and top_left[0] < 0.1  # blue
    shown = np.asarray(ImageOps.exif_transpose(PILImage.open(path)), np.float32) / 255
    assert np.abs(img.rgb - shown).max() < 1e-6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pil(tmp_path, orientation):
    path = _with_orientation(tmp_path / "o.png", _stored_with_marker(), orientation)
    shown = np.asarray(ImageOps.exif_transpose(PILImage.open(path)))
    assert np.array_equal(np.rint(read_image(path).rgb * 255).astype(np.uint8), shown)


def test_orientation_keeps_alpha_and_16_bit(tmp_path):
    rgba = np.concatenate([_stored_with_marker(), np.full((48, 64, 1), 200, np.uint8)], axis=2)
    img = read_image(_with_orientation(tmp_path / "a.png", rgba, 8))
    assert img.rgb.shape == (64, 48, 3) and img.alpha.shape == (64, 48)
    deep = tmp_path / "deep.png"
    write_image(deep, _stored_with_marker().astype(np.uint16) * 257)
    assert read_image(deep).max_value == 65535


def test_upscale_writes_the_displayed_orientation(model_path, tmp_path, capsys):
    path = _with_orientation(tmp_path / "phone.jpg", _stored_with_marker(), 6)
    out = tmp_path / "out.png"
    assert main(up(model_path, str(path), "-o", str(out))) == 0
    assert PILImage.open(out).size == (96, 128)


# -- 7. bad flags: one message, up front -----------------------------------------------


def _parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_unknown_device_is_one_clear_error(model_path, photos, tmp_path, capsys, no_load):
    err = _parse_error(
        up(model_path, str(photos), "-o", str(tmp_path), "--device", "banana"), capsys
    )
    assert "--device" in err and "cpu, cuda, cuda:N, mps" in err


def test_missing_gpu_is_one_clear_error(model_path, photos, tmp_path, capsys, monkeypatch, no_load):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _parse_error(up(model_path, str(photos), "-o", str(tmp_path), "--device", "cuda"), capsys)
    assert "--device" in err and "no CUDA GPU" in err and "available: cpu" in err


@pytest.mark.parametrize("budget", ["abc", "-1", "0", "1.5", "nan", "inf"])
def test_bad_budget_is_refused_up_front(model_path, photos, tmp_path, capsys, no_load, budget):
    err = _parse_error(up(model_path, str(photos), "-o", str(tmp_path), "--budget", budget), capsys)
    assert "--budget" in err and "(0, 1]" in err
    assert err.count("error:") == 1


# -- task and scale: upscale is for sr, run for anything ----------------------------------


def test_upscale_refuses_a_denoiser_and_run_reports_it(denoiser_path, photos, tmp_path, capsys):
    src = str(photos / "a.png")
    assert main(up(denoiser_path, src, "-o", str(tmp_path / "x.png"))) == 2
    err = capsys.readouterr().err
    assert "denoise" in err and "classsr run" in err
    assert not (tmp_path / "x.png").exists()

    argv = ["run", src, "-o", str(tmp_path / "y.png"), "--model", denoiser_path]
    assert main([*argv, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["task"], row["scale"]) == ("denoise", 1)
    assert main([*argv, "--overwrite"]) == 0
    assert "denoise x1" in capsys.readouterr().out


def test_result_lines_name_task_and_scale_and_the_bar_stays_off_stdout(
    model_path, photos, tmp_path, capsys
):
    assert main(["upscale", str(photos), "-o", str(tmp_path / "o"), "--model", model_path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(" sr x2 " in line for line in out)


# -- --trust-code reaches load_model ----------------------------------------------------


@pytest.mark.parametrize("command", ["upscale", "run", "calibrate", "sweep"])
def test_trust_code_is_passed_to_load_model(model_path, photos, tmp_path, monkeypatch, command):
    from classsr_core.errors import ClassSRError

    seen = []

    def fake_load(name, *args, **kwargs):
        seen.append(kwargs.get("trust_code", False))
        raise ClassSRError("stop here")

    monkeypatch.setattr(checkpoint, "load_model", fake_load)
    out = str(tmp_path / ("o.safetensors" if command == "calibrate" else "o"))
    argv = [command, str(photos), "-o", out]
    for flags, expected in (([], False), (["--trust-code"], True)):
        assert main([*argv, "--model", model_path, *flags]) == 2
        assert seen.pop() is expected
