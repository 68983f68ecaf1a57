"""Bring your own network: a pretrained SR model file (``.pth`` / ``.safetensors`` of an
ESRGAN, SwinIR, HAT, SPAN, Real-ESRGAN compact, ...) made cheaper without training.

:func:`from_pretrained` reads the file safely (safetensors directly; ``.pth`` with
``torch.load(weights_only=True)``: no pickle can run code), lets spandrel detect the
architecture from the state dict, and builds a ClassSR model whose branches are bicubic
and the network (the registered ``spandrel`` backbone). Uncalibrated, every patch goes to
the network. :func:`calibration_pairs` and :func:`choose_halos` are what
``classsr calibrate`` adds for such a model: an edge table measured against HR photos or,
without HR, against the network's own whole-image output, and the region halo each
network needs so that tiling costs at most 0.01 dB (docs/bring-your-own.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classsr_core.device import pick_device
from classsr_core.errors import CheckpointError, CostWarning, InputError, UntrustedCodeError
from classsr_core.io.checkpoint import FORMAT
from classsr_core.model.file_state import providing
from classsr_core.model.wrapper import ClassWrapper

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# The most a halo may be (model.defaults' bound); a network that needs more is documented.
MAX_HALO = 64
HALO_LADDER = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TILING_LOSS_DB = 0.01


def is_pretrained_file(path: str | Path) -> bool:
    """Whether ``path`` is a network file for :func:`from_pretrained` rather than a classsr
    model: a pickle-format weights file, or a safetensors file without classsr's config."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return True
    if suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable: load_model says why
        return False
    return meta.get("format") != FORMAT


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a network file, read without running anything it holds: safetensors
    as is; a pickle-format file (``.pth``, ...) with ``torch.load(weights_only=True)``, which
    refuses any object but tensors and plain containers. Unwrapped as spandrel does
    (``params_ema``, ``state_dict``, a ``module.`` prefix, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise UntrustedCodeError(
                    f"{path}: the file pickles objects other than tensors ({first}); refused, "
                    "as unpickling them could run code. Convert it to .safetensors where it "
                    "came from, or re-save only its state dict"
                ) from None
            raise CheckpointError(
                f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: {first})"
            ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    from classsr_plugins.backbones.spandrel_bridge import import_spandrel

    state = import_spandrel().canonicalize_state_dict(state)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: the file holds no tensors spandrel could read a network from")
    return tensors


def from_pretrained(
    path: str | Path,
    *,
    cheaper: Sequence[str | Path] = (),
    scale: int | None = None,
    patch_size: int = 32,
    stride: int = 28,
    device: str | torch.device | None = None,
) -> ClassWrapper:
    """A ClassSR model of a pretrained network file: branches bicubic, ``cheaper`` networks
    (files of the same scale, cheapest first) and the network of ``path``. Uncalibrated,
    every patch goes to the network; ``classsr calibrate`` measures the routing
    (docs/bring-your-own.md). ``scale``: refuse a file of another scale."""
    from classsr_plugins.backbones.spandrel_bridge import (
        build_from_state,
        default_halo,
        describe,
    )

    files = [*cheaper, path]
    state: dict[str, torch.Tensor] = {}
    archs, halos = [], []
    found_scale = channels = None
    for k, file in enumerate(files, start=1):
        weights = read_weights(file)
        descriptor = build_from_state(weights, str(file))
        describe(descriptor, str(file), scale if scale is not None else found_scale)
        found_scale = int(descriptor.scale)
        if channels is not None and descriptor.input_channels != channels:
            raise InputError(
                f"{file}: takes {descriptor.input_channels} channels, {files[0]} {channels}"
            )
        channels = int(descriptor.input_channels)
        archs.append(str(descriptor.architecture.id))
        halos.append(default_halo(descriptor))
        state.update({f"branches.{k}.net.{key}": v for key, v in weights.items()})
    with providing(state, str(path)), warnings.catch_warnings():
        # The classifier is a placeholder (it sends every patch to the network until
        # `classsr calibrate` makes the edge router the default): its cost is never paid.
        warnings.simplefilter("ignore", CostWarning)
        model = ClassWrapper(
            "spandrel",
            widths=list(range(len(files) + 1)),
            scale=found_scale,
            in_channels=channels,
            patch_size=patch_size,
            stride=stride,
            backbone_kwargs={"archs": archs, "halos": halos},
        )
    send_all_to_network(model)
    model.checkpoint_meta = {
        "model": model.spec,
        "card": {
            "task": "sr" if found_scale > 1 else None,
            "pretrained": [Path(f).name for f in files],
            "archs": archs,
        },
    }
    return model.to(pick_device(device)).eval()


def send_all_to_network(model: ClassWrapper) -> None:
    """Make the (untrained) classifier send every patch to the widest branch: an
    uncalibrated model is the network, tiled."""
    fc = getattr(model.classifier, "fc", None)
    if fc is None:
        return
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.zero_()
        fc.bias[-1] = 1.0


def is_pretrained_model(model) -> bool:
    return bool(getattr(model, "spec", None)) and model.spec.get("backbone") == "spandrel"


# -- calibration ---------------------------------------------------------------------------


@torch.no_grad()
def whole_image(model, lr: torch.Tensor, branch: int = -1) -> torch.Tensor:
    """Branch ``branch`` (default the widest: the network) on the whole LR image, clamped
    to [0, 1] as spandrel returns it."""
    net = model.branches[branch]
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return net(lr.to(dev, torch.float32)).float().clamp(0, 1).cpu()


def own_error(model, task, photo: np.ndarray) -> float:
    """The network's mean squared error on ``photo`` used as ground truth for its own
    degradation (``task.make_input``, ``1/scale`` the size): what it is estimated to lose
    against the unknown HR at full size, where no HR exists."""
    clean = task.modcrop(photo)
    x = task.make_input(clean, np.random.default_rng(0))
    x = np.clip(np.rint(x * 255.0), 0, 255) / 255.0
    lr = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()
    hr = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None].float()
    return max(float((whole_image(model, lr) - hr).square().mean()), 1e-6)


def calibration_pairs(model, task, photos: list[np.ndarray], *, hr: bool = True):
    """``(lr, target)`` pairs and the error floor of each: with ``hr``, the photos are
    ground truth and the task degrades them (floor: ``None``); without, the photos are the
    inputs and the target is the network's own whole-image output plus seeded Gaussian noise
    of the network's estimated own error (:func:`own_error`), so that a branch's loss in dB
    is measured against what the network itself is estimated to lose (a target equal to the
    network's output would make every other branch infinitely worse)."""
    from classsr_core.tasks import degraded_pairs

    if hr:
        pairs = [
            (x, torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None])
            for clean, x in degraded_pairs(task, photos, uint8=True)
        ]
        return pairs, [None] * len(pairs)
    pairs, floors = [], []
    gen = torch.Generator().manual_seed(0)
    for photo in photos:
        lr = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float()
        lr = lr.mul(255).round().div(255)
        ref = whole_image(model, lr)
        floor = own_error(model, task, photo)
        noise = torch.randn(ref.shape, generator=gen) * math.sqrt(floor)
        pairs.append((lr, ref + noise))
        floors.append(floor)
    return pairs, floors


def _checkerboard(lr: torch.Tensor, p: int, branch: int):
    from classsr_core.base.grid import patch_grid

    h, w = lr.shape[-2:]
    grid = patch_grid(h, w, p, p)
    rows, cols = len(grid.ys), len(grid.xs)
    board = (np.add.outer(np.arange(rows), np.arange(cols)) % 2).reshape(-1) * branch
    return board, grid


def _exact(model, lr: torch.Tensor, board, grid, branch: int) -> torch.Tensor:
    """The output every tile would give with an unbounded halo: each cell from its branch
    run on the whole image."""
    from classsr_core.execution.regions import cell_bounds

    h, w = lr.shape[-2:]
    s, p = model.scale, grid.patch_size
    net, cheap = whole_image(model, lr, branch), whole_image(model, lr, 0)
    by, bx = cell_bounds(grid.ys, p, h), cell_bounds(grid.xs, p, w)
    out = cheap.clone()
    cells = board.reshape(len(grid.ys), len(grid.xs))
    for r in range(cells.shape[0]):
        for c in range(cells.shape[1]):
            if cells[r, c]:
                ys, xs = slice(by[r] * s, by[r + 1] * s), slice(bx[c] * s, bx[c + 1] * s)
                out[..., ys, xs] = net[..., ys, xs]
    return out


def tiling_losses(model, pairs, floors, branch: int) -> list[float]:
    """dB each image loses when the network of ``branch`` runs on isolated region tiles
    (a checkerboard with bicubic: the most seams a routing can have) with its halo instead
    of on the whole image: against HR where the pair has it (floor ``None``), else against
    the network's estimated own error (``floor``)."""
    losses = []
    for (lr, target), floor in zip(pairs, floors):
        lr = lr.float()
        board, grid = _checkerboard(lr, int(model.patch_size), branch)
        exact = _exact(model, lr, board, grid, branch)
        tiled = model.infer(lr, mode="regions", classes=board, router="classifier", halo=None)
        out = tiled.output.float().clamp(0, 1).cpu()
        if floor is None:
            hr = target.float()[..., : out.shape[-2], : out.shape[-1]]
            ratio = (out - hr).square().mean() / (exact - hr).square().mean().clamp_min(1e-12)
        else:
            ratio = 1 + (out - exact).square().mean() / floor
        losses.append(10 * math.log10(max(float(ratio), 1e-12)))
    return losses


def choose_halos(model, pairs, floors, max_loss_db: float = TILING_LOSS_DB) -> list[dict]:
    """For each network branch, the narrowest halo of :data:`HALO_LADDER` whose tiles lose
    at most ``max_loss_db`` on average (no image more than twice that) against the network
    on the whole image; recorded on the branch and in the model's spec. Returns what was
    measured per branch (``halo``, ``loss_db``, ``ok``: False where even
    :data:`MAX_HALO` costs more, which then stays)."""
    from classsr_plugins.backbones.spandrel_bridge import SpandrelNet

    report = []
    for k, branch in enumerate(model.branches):
        if not isinstance(branch, SpandrelNet):
            continue
        chosen, loss, ok = MAX_HALO, math.nan, False
        for halo in HALO_LADDER:
            branch._classsr_receptive_radius = halo
            losses = tiling_losses(model, pairs, floors, k)
            loss = float(np.mean(losses))
            if loss <= max_loss_db and max(losses) <= 2 * max_loss_db:
                chosen, ok = halo, True
                break
        set_halo(model, k, chosen)
        report.append({"branch": k, "arch": branch.arch, "halo": chosen, "loss_db": loss, "ok": ok})
    return report


def set_halo(model, branch: int, halo: int) -> None:
    net = model.branches[branch]
    net.halo = net._classsr_receptive_radius = int(halo)
    halos = list(model.spec["backbone_kwargs"].get("halos") or [])
    halos[branch - 1] = int(halo)
    model.spec["backbone_kwargs"]["halos"] = halos
