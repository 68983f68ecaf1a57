"""Executors own their options and their streaming (#27): a plugin executor with an option
of its own needs no edit in the engine, streams exactly its in-memory output, and is refused
clearly when an option is unknown or it cannot stream."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from classsr_core.api import (
    Executor,
    ExecutorOptions,
    InputError,
    PatchesExecutor,
    RegionsExecutor,
    get_registry,
    hookimpl,
    reset_registry,
)
from classsr_core.cli import main
from classsr_core.engine import InferOptions, infer
from classsr_core.engine.bands import BandOptions, check_streaming, route, stream_bands
from classsr_core.io.images import Image, write_image
from classsr_core.io.streams import open_lr
from classsr_core.model.wrapper import ClassWrapper

FAST = "classsr-fsrcnn-x4-fast"


# -- the plugin, as a third party would write it ------------------------------------------


class GainOptions(PatchesExecutor.options_model):
    gain: float = 1.0


class GainPatches(PatchesExecutor):
    """The paper's patches, the output scaled by an option of its own."""

    name = "gain-patches"
    options_model = GainOptions

    def execute(self, run, assign):
        hr, flops, fraction, tiles = super().execute(run, assign)
        return hr * run.options["gain"], flops, fraction, tiles


class TintOptions(RegionsExecutor.options_model):
    tint: float = 0.0


class TintRegions(RegionsExecutor):
    """Regions with an offset added to every output pixel."""

    name = "tint-regions"
    options_model = TintOptions

    def execute(self, run, assign):
        hr, flops, fraction, tiles = super().execute(run, assign)
        if hr.is_floating_point():
            hr = hr + run.options["tint"]
        return hr, flops, fraction, tiles


class Normalised(PatchesExecutor):
    """Divides by the whole image's maximum: no band alone knows it, and it says so."""

    name = "normalised"

    def execute(self, run, assign):
        hr, flops, fraction, tiles = super().execute(run, assign)
        return hr / hr.max(), flops, fraction, tiles

    def band_margin(self, model, options, device):
        raise InputError(
            f"executor {self.name!r} cannot stream: it divides by the whole image's maximum"
        )


class Silent(Executor):
    """Runs the patches executor but says nothing about streaming: refused, not guessed."""

    name = "silent"

    def execute(self, run, assign):
        return PatchesExecutor().execute(run, assign)


class Bare(Executor):
    """Takes no options at all."""

    name = "bare"

    def execute(self, run, assign):
        return PatchesExecutor().execute(run, assign)


@hookimpl
def classsr_register_executors(register):
    for cls in (GainPatches, TintRegions, Normalised, Silent, Bare):
        register(cls.name, cls, description=cls.__doc__.splitlines()[0])


@pytest.fixture(scope="module", autouse=True)
def plugin():
    reset_registry()
    get_registry().add_plugin(
        types.SimpleNamespace(classsr_register_executors=classsr_register_executors),
        "test_executor_options",
    )
    yield
    reset_registry()  # the next test loads the installed plugins afresh


# -- a small model whose branches' receptive fields are known (exact regions halos) -------


class Convs(nn.Module):
    def __init__(self, width: int, depth: int, scale: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for i in range(depth):
            out = 3 * scale * scale if i == depth - 1 else width
            layers += [nn.Conv2d(ch, out, 3, 1, 1), nn.ReLU()]
            ch = out
        self.body = nn.Sequential(*layers[:-1])
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.up(self.body(x))


class ByBrightness(nn.Module):
    """Routes a patch by its mean: dark, mid, bright (mixed classes on any photo)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-(m - c).abs() for c in (0.1, 0.3, 0.5)], dim=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    branches = [Convs(4 + 2 * i, d) for i, d in enumerate((1, 2, 3))]
    model = ClassWrapper(branches=branches, scale=2, patch_size=12, stride=10).eval()
    model.classifier = ByBrightness()
    return model


@pytest.fixture()
def photo(tmp_path):
    """A real LR crop as a PNG (several routing classes) and the tensor the bands read."""
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "classsr_core" / "assets" / "demo_hr.png"
    rgb = cv2.imread(str(demo))[200:250, 100:160, ::-1].astype(np.float32) / 255
    path = tmp_path / "lr.png"
    write_image(path, Image(rgb, None, False, 255))
    source = open_lr(path)
    x = torch.from_numpy(source.rgb(0, source.height)).permute(2, 0, 1)[None]
    return path, x


def _streamed(model, path, opts) -> torch.Tensor:
    source = open_lr(path)
    _, classes = route(model, source, opts)
    rows = [
        torch.from_numpy(np.ascontiguousarray(b.rgb))
        for b in stream_bands(model, source, opts, classes)
    ]
    assert opts.stats["bands"] >= 3
    return torch.cat(rows)


# Bitwise-equal floats need every network call to see the same shapes in a band as on the
# whole image (CPU kernels round differently per batch and tile size): one patch a call, one
# cell a tile. (The 8-bit images written are equal without: the command-line test below.)
@pytest.mark.parametrize(
    ("mode", "option", "plain", "same_shapes"),
    [
        ("gain-patches", {"gain": 0.5}, "patches", {"batch_size": 1}),
        ("tint-regions", {"tint": 0.25}, "regions", {"batch_size": 1, "max_cells": 1}),
    ],
)
def test_plugin_option_streams_exactly_its_in_memory_output(
    model, photo, mode, option, plain, same_shapes
):
    path, x = photo
    mem = infer(model, x, mode=mode, **option, **same_shapes)
    # the bands cut across class edges
    assert mem.mode == mode and len(set(mem.class_map.reshape(-1).tolist())) == 3
    # The option reached the executor: against the built-in it subclasses.
    base = infer(model, x, mode=plain, **same_shapes).output
    want = base * 0.5 if mode == "gain-patches" else base + 0.25
    assert torch.equal(mem.output, want)
    # One options object, keywords or built: the same run.
    opts = InferOptions.build(mode=mode, router="classifier", **option, **same_shapes)
    own = {k: v for k, v in {**option, **same_shapes}.items() if k != "batch_size"}
    assert opts.executor_options == own  # the engine's fields by name, the rest the executor's
    assert opts.router == "classifier" and opts.batch_size == 1
    assert torch.equal(infer(model, x, options=opts).output, mem.output)
    # Streamed band by band (one, then two patch rows a band): the in-memory output.
    want = mem.output[0].permute(1, 2, 0)
    assert torch.equal(_streamed(model, path, BandOptions.of(opts, band_rows=1)), want)
    again = BandOptions.build(mode=mode, band_rows=2, **option, **same_shapes)
    assert again.band_rows == 2 and again.executor_options == own
    assert torch.equal(_streamed(model, path, again), want)


def test_unknown_options_are_refused_naming_them(model, photo):
    _, x = photo
    assert Bare.options_model is ExecutorOptions and issubclass(GainOptions, ExecutorOptions)
    with pytest.raises(
        InputError, match=r"'gain-patches'.* no option 'gian'; its options: blend, gain"
    ):
        infer(model, x, mode="gain-patches", gian=2)
    with pytest.raises(InputError, match=r"'patches'.* no option 'halo'; its options: blend"):
        infer(model, x, mode="patches", halo=4)
    with pytest.raises(
        InputError, match=r"'regions'.* no option 'gain'; its options: halo, max_cells"
    ):
        infer(model, x, mode="regions", gain=4)
    with pytest.raises(InputError, match=r"'bare'.* no option 'blend'; its options: none"):
        infer(model, x, mode="bare", blend="mean")
    with pytest.raises(InputError, match=r"executor 'gain-patches': option 'gain'"):
        infer(model, x, mode="gain-patches", gain="loud")
    # The built-ins' own checks keep their messages.
    with pytest.raises(InputError, match="blend must be one of"):
        infer(model, x, mode="gain-patches", blend="max")
    with pytest.raises(InputError, match="halo must be 0 or more LR pixels, got -1"):
        infer(model, x, mode="tint-regions", halo=-1)
    # None is "not given": every executor takes it.
    assert infer(model, x, mode="bare", halo=None, blend=None).mode == "bare"
    # Refused before routing in the band engine too.
    with pytest.raises(InputError, match="no option 'gian'"):
        check_streaming(model, BandOptions.build(mode="gain-patches", gian=2))


@pytest.mark.parametrize(
    ("mode", "why"), [("normalised", "whole image's maximum"), ("silent", "band_margin")]
)
def test_an_executor_that_cannot_stream_is_refused(model, photo, mode, why):
    path, x = photo
    assert infer(model, x, mode=mode).mode == mode  # in memory it runs
    with pytest.raises(InputError, match=f"executor '{mode}' cannot stream: .*{why}"):
        route(model, open_lr(path), BandOptions(mode=mode, band_rows=1))
    with pytest.raises(InputError, match=f"executor '{mode}' cannot stream"):
        check_streaming(model, InferOptions(mode=mode))


def _upscale(*argv: str) -> int:
    return main(["upscale", *argv, "--model", FAST, "--no-progress"])


def test_command_line_passes_one_options_object(photo, tmp_path, capsys):
    path, _ = photo
    mem, streamed = tmp_path / "mem.png", tmp_path / "streamed.png"
    argv = ["--mode", "gain-patches", "--mode-option", "gain=0.5"]
    assert _upscale(str(path), "-o", str(mem), *argv) == 0
    assert _upscale(str(path), "-o", str(streamed), *argv, "--stream", "--band-rows", "1") == 0
    a, b = cv2.imread(str(mem)), cv2.imread(str(streamed))
    assert a.shape == b.shape and np.array_equal(a, b)
    plain = tmp_path / "plain.png"
    assert _upscale(str(path), "-o", str(plain), "--mode", "patches") == 0
    assert cv2.imread(str(plain)).mean() > a.mean() * 1.5  # the option reached the executor
    capsys.readouterr()
    # Refusals come once, before any image is written.
    out = tmp_path / "never.png"
    assert _upscale(str(path), "-o", str(out), *argv, "--mode-option", "gian=1") == 2
    assert "no option 'gian'; its options: blend, gain" in capsys.readouterr().err
    assert _upscale(str(path), "-o", str(out), "--mode", "patches", "--halo", "4") == 2
    assert "no option 'halo'" in capsys.readouterr().err
    assert _upscale(str(path), "-o", str(out), "--mode", "normalised", "--stream") == 2
    assert "executor 'normalised' cannot stream" in capsys.readouterr().err
    assert not out.exists()
