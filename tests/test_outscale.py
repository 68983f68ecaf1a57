"""`classsr upscale --outscale`: any output scale, as Real-ESRGAN's -s (the model's output
resized with Lanczos up, area down)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from classsr_core.cli import main


@pytest.fixture
def photo(tmp_path):
    from skimage import data

    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), data.chelsea()[:60, :80, ::-1])
    return path


@pytest.mark.parametrize(
    "outscale, size, name", [(2, (120, 160), "cat_x2.png"), (3.5, (210, 280), "cat_x3.5.png")]
)
def test_outscale_resizes_the_model_output(photo, tmp_path, outscale, size, name):
    out = tmp_path / "out"
    argv = ["upscale", str(photo), "-o", str(out), "--outscale", str(outscale), "--no-progress"]
    assert main(argv) == 0
    got = cv2.imread(str(out / name))
    assert got.shape[:2] == size
    # the same as resizing the x4 output by hand
    assert main(["upscale", str(photo), "-o", str(tmp_path / "x4"), "--no-progress"]) == 0
    x4 = cv2.imread(str(tmp_path / "x4" / "cat_x4.png")).astype(np.float32) / 255
    interp = cv2.INTER_AREA
    want = np.clip(cv2.resize(x4, (size[1], size[0]), interpolation=interp), 0, 1)
    assert np.abs(got.astype(np.float32) / 255 - want).max() <= 2 / 255


@pytest.mark.parametrize("bad", ["0", "-1", "17", "two"])
def test_a_bad_outscale_is_refused_by_the_parser(photo, tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["upscale", str(photo), "-o", str(tmp_path / "o"), "--outscale", bad])
    assert exc.value.code == 2 and "--outscale" in capsys.readouterr().err


def test_outscale_with_streaming_is_refused_before_any_work(photo, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["upscale", str(photo), "-o", str(out), "--outscale", "2", "--stream"]) == 2
    assert "--outscale" in capsys.readouterr().err and not out.exists()
