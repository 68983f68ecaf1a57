"""The default path is the fast path (#25): a model records its executor (``mode``) as it
records its router; what ran is said in every result and report; the first hour of a new
user (budgets that cannot be met, fp16 on a CPU, folder trees, output formats, `classsr
models`) goes without a stumble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from classsr_core import load_model
from classsr_core.cli import main
from classsr_core.errors import BudgetWarning, CheckpointError, DeviceWarning, InputError
from classsr_core.io.inputs import list_inputs
from classsr_core.model.defaults import check_defaults, default_mode, recorded_mode

FAST = "classsr-fsrcnn-x4-fast"  # 340 KB, a bicubic cheapest branch: quick to run


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 180:244])  # (48, 64, 3) uint8


@pytest.fixture(scope="module")
def fast():
    return load_model(FAST, device="cpu")


def test_mode_is_a_known_default():
    assert check_defaults({"mode": "regions", "halo": 4}) == {"mode": "regions", "halo": 4}
    for bad in ("nope", "", 3, None):
        with pytest.raises(InputError, match="mode"):
            check_defaults({"mode": bad})
    assert recorded_mode({"defaults": {"mode": "regions"}}) == "regions"
    assert recorded_mode({}) == recorded_mode(None) == "patches"


def test_infer_takes_the_recorded_mode_and_the_caller_wins(fast, lr):
    was = dict(fast.defaults)
    try:
        fast.defaults["mode"] = "regions"
        assert fast.infer(lr).mode == "regions"
        assert fast.infer(lr, mode="patches").mode == "patches"
        fast.defaults.pop("mode")
        assert default_mode(fast) == "patches"
        assert fast.infer(lr).mode == "patches"
    finally:
        fast.defaults = was


def test_the_recorded_mode_is_saved_and_a_bad_one_refused(fast, tmp_path):
    was = dict(fast.defaults)
    try:
        fast.defaults["mode"] = "regions"
        fast.save(tmp_path / "m.safetensors")
    finally:
        fast.defaults = was
    assert load_model(tmp_path / "m.safetensors").defaults["mode"] == "regions"

    from classsr_core.io.checkpoint import read_checkpoint, save_state

    state, meta = read_checkpoint(tmp_path / "m.safetensors")
    meta["defaults"] = {"mode": "no-such-executor"}
    save_state(state, tmp_path / "bad.safetensors", meta)
    with pytest.raises(CheckpointError, match="registered executor"):
        load_model(tmp_path / "bad.safetensors")


def test_shipped_classsr_models_default_to_the_fast_path():
    from classsr_core.io.checkpoint import read_meta, shipped_models

    for name, path in shipped_models().items():
        meta = read_meta(path)
        if len(meta["model"]["widths"]) > 1:
            assert meta.get("default_router") == "edge", name
            assert recorded_mode(meta) == "regions", name


def test_a_budget_below_the_cheapest_routing_says_what_it_costs(fast, lr):
    with pytest.warns(BudgetWarning, match=r"cannot be met: the cheapest routing .* costs 0\.\d+"):
        result = fast.infer(lr, budget=0.001)
    assert result.flops_fraction > 0.001


def test_fp16_on_a_cpu_warns_naming_the_device(fast, lr):
    with pytest.warns(DeviceWarning, match="amp='fp16' on cpu"):
        fast.infer(lr[:32, :32], amp="fp16")


# -- the command line -------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path, lr) -> Path:
    """in/a.png, in/sub/b.png, in/sub/deeper/c.png"""
    root = tmp_path / "in"
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(lr[:32, :40]).save(root / rel)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["upscale", *map(str, argv), "--model", FAST, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_names_the_subfolders_it_skips(tree, tmp_path, capsys):
    code, _, err = _run(capsys, tree, "-o", tmp_path / "out")
    assert code == 0
    assert "skipped 1 subfolder(s), not searched: sub (give --recursive" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_x4.png"]


def test_recursive_mirrors_the_tree(tree, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, tree, "-o", out, "--recursive")
    assert code == 0, err
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert found == ["a_x4.png", "sub/b_x4.png", "sub/deeper/c_x4.png"]


def test_recursive_leaves_out_an_output_folder_inside_the_input(tree):
    files, _ = list_inputs([tree], recursive=True, exclude=[tree / "sub" / "deeper"])
    assert [p.name for p in files] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (["--format", "jpg", "--quality", "80"], "a_x4.jpg"),
        (["--format", "webp"], "a_x4.webp"),
        (["--format", "tif", "--suffix", ""], "a.tif"),
        (["--suffix=-big"], "a-big.png"),
    ],
)
def test_suffix_and_format(tree, tmp_path, capsys, extra, name):
    out = tmp_path / "out"
    code, _, err = _run(capsys, tree / "a.png", tree / "sub" / "b.png", "-o", out, *extra)
    assert code == 0, err
    assert (out / name).is_file()
    from classsr_core.io.images import read_image

    assert read_image(out / name).rgb.shape == (128, 160, 3)


def test_format_and_quality_that_contradict_the_output_are_refused(tree, tmp_path, capsys):
    code, _, err = _run(capsys, tree / "a.png", "-o", tmp_path / "x.png", "--format", "jpg")
    assert code == 2 and "--format jpg but -o" in err
    code, _, err = _run(capsys, tree, "-o", tmp_path / "out", "--quality", "80")
    assert code == 2 and "--quality is for jpg and webp" in err


def test_json_and_report_share_one_schema_that_says_what_ran(tree, tmp_path, capsys):
    from classsr_core.commands.upscale import ROW_KEYS

    report = tmp_path / "r.jsonl"
    argv = (tree, "-o", tmp_path / "out", "--budget", "0.9", "--report", report, "--json")
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    printed = json.loads(out)
    written = [json.loads(line) for line in report.read_text().splitlines()]
    assert printed == written
    row = printed[0]
    assert list(row) == list(ROW_KEYS)
    assert row["model"] == FAST and row["router"] == "edge" and row["mode"] == "regions"
    assert row["budget"] == 0.9 and row["budget_scope"] == "image" and row["tolerance"] is None
    code, out, _ = _run(capsys, tree, "-o", tmp_path / "out2", "--mode", "patches", "--json")
    assert json.loads(out)[0]["mode"] == "patches"


def test_an_unmet_budget_is_one_line_per_image(tree, tmp_path, capsys):
    code, _, err = _run(capsys, tree, "-o", tmp_path / "out", "--budget", "0.001")
    assert code == 0
    assert f"classsr upscale: warning: {tree / 'a.png'}: budget 0.001 cannot be met" in err


def test_models_marks_the_default_and_aligns(capsys):
    from classsr_core.commands.upscale import DEFAULT_MODEL

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines[: lines.index("")]]
    starts = {line.index(" fsrcnn ") for line in table if " fsrcnn " in line}
    assert len(starts) == 1  # the columns line up
    marked = [line for line in table if line.startswith("*")]
    assert len(marked) == 1 and DEFAULT_MODEL in marked[0]
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows if r["default"]] == [DEFAULT_MODEL]
    assert {r["mode"] for r in rows if len(r["widths"]) > 1} == {"regions"}


def test_upscale_help_names_the_default_model(capsys):
    from classsr_core.commands.upscale import DEFAULT_MODEL

    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert f"(default: {DEFAULT_MODEL})" in capsys.readouterr().out.replace("\n", " ")


def test_sweep_and_calibrate_honour_no_progress(tree, tmp_path, capsys):
    folder = tree / "sub"
    sweep = ["sweep", folder, "--model", FAST, "--budgets", "0.9", "-o", tmp_path / "s"]
    assert main([*map(str, sweep), "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err  # no bar
    assert (tmp_path / "s.png").is_file()
    from skimage import data

    photos = tmp_path / "photos"  # LR 40x48: one whole 32x32 cell each
    photos.mkdir()
    for k, img in enumerate((data.astronaut(), data.coffee())):
        PILImage.fromarray(img[:160, :192]).save(photos / f"{k}.png")
    cal = ["calibrate", photos, "--model", FAST, "-o", tmp_path / "c.safetensors"]
    cal += ["--halo-loss", "0", "--bins", "2", "--no-progress", "--make-default"]
    assert main([*map(str, cal)]) == 0
    assert "%|" not in capsys.readouterr().err
    model = load_model(tmp_path / "c.safetensors")
    assert model.default_router == "edge" and model.defaults["mode"] == "regions"


def test_sweep_plot_labels_keep_their_spaces():
    from PIL import Image, ImageDraw, ImageFont

    from classsr_core.analysis.sweep import _words

    draw = ImageDraw.Draw(Image.new("RGB", (200, 40), "white"))
    font = ImageFont.load_default(size=12)
    spots = []
    draw.text = lambda xy, s, **kw: spots.append((xy[0], s))  # where each word goes
    _words(draw, font)((0, 0), "-O network", "black")
    (x0, first), (x1, second) = spots
    assert (first, second) == ("-O", "network")
    assert x1 - (x0 + draw.textlength(first, font=font)) >= 4  # a visible space


def test_demo_strip_is_labelled_and_shows_the_detail_that_differs():
    from classsr_core.analysis.visualize import colour_names, labelled_strip, most_different

    rng = np.random.default_rng(0)
    a = rng.random((60, 90, 3)).astype(np.float32)
    b = a.copy()
    b[20:30, 50:60] = 0  # where the two differ
    y, x = most_different(a, b, 10)
    assert (y, x) == (20, 50)
    strip = labelled_strip([("bicubic", a), ("ClassSR", b)], (y, x, 10))
    assert strip.shape[1] == 2 * 90 + 6 and strip.shape[0] > 60 + 90  # label, image, detail
    assert colour_names(3) == ["green", "yellow", "red"]
