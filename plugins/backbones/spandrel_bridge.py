"""``spandrel``: a pretrained SR network file (ESRGAN, Real-ESRGAN compact, SwinIR, HAT, SPAN,
...) as the branches of a ClassSR model, its architecture detected by spandrel.

The backbone's "width" is the branch's index: width 0 is bicubic (no parameters), width
``k >= 1`` the ``k``-th network of the file, rebuilt by spandrel from the weights stored
under ``branches.<k>.net.``. Those weights come from the file being loaded
(:func:`classsr_core.model.file_state.file_state`): spandrel reads the hyper-parameters off
the tensors' names and shapes, so the model file records no code and no class, only
``archs`` (what spandrel detected, checked again on load) and the halo each network needs.

spandrel is imported only here, when such a branch is built (``pip install spandrel``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from classsr_core import hookimpl
from classsr_core.errors import CheckpointError, InputError
from classsr_core.model.file_state import file_state

NAME = "spandrel"
# LR pixels of real image around each region tile when nothing was measured: a deep
# network sees further than the engine's 8-pixel gradient probe, and a window transformer
# further still (docs/bring-your-own.md lists what each costs; `classsr calibrate`
# measures the narrowest halo that keeps tiling under 0.01 dB and records it).
DEFAULT_HALO = 16
DEFAULT_HALO_WINDOWED = 24


def import_spandrel():
    try:
        import spandrel
    except ImportError:  # pragma: no cover - a dependency; a broken install says so
        raise InputError(
            "loading a pretrained network file needs spandrel: pip install spandrel"
        ) from None
    return spandrel


class Bicubic(nn.Module):
    """Bicubic upscaling: the parameter-free cheapest branch."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)
        self._classsr_receptive_radius = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(
            x.contiguous(), scale_factor=self.scale, mode="bicubic", align_corners=False
        )


def pad_to(x: torch.Tensor, minimum: int, multiple_of: int, square: bool) -> torch.Tensor:
    """``x`` padded at the bottom and right (reflected, then replicated where the tile is
    too small to reflect) to a size the network accepts."""
    h, w = x.shape[-2:]
    th, tw = max(h, minimum), max(w, minimum)
    th, tw = math.ceil(th / multiple_of) * multiple_of, math.ceil(tw / multiple_of) * multiple_of
    if square:
        th = tw = max(th, tw)
    ph, pw = th - h, tw - w
    if not (ph or pw):
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = nn.functional.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = nn.functional.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


class SpandrelNet(nn.Module):
    """One network spandrel loaded, as a branch: ``(N, C, h, w)`` in [0, 1] ->
    ``(N, C, s h, s w)``, raw (not clamped: the engine clamps where it writes uint8).

    Tiles of any size are padded (bottom / right) to what the network needs (its
    ``size_requirements``: minimum, multiple of a window, square) and the output cropped
    back. ``halo`` is the region halo the engine gives it (its declared receptive radius)."""

    def __init__(self, descriptor, halo: int) -> None:
        super().__init__()
        self.net = descriptor.model
        self.arch = str(descriptor.architecture.id)
        self.scale = int(descriptor.scale)
        req = descriptor.size_requirements
        self.minimum, self.multiple_of, self.square = (
            int(req.minimum),
            int(req.multiple_of),
            bool(req.square),
        )
        self.supports_half = bool(descriptor.supports_half)
        self.supports_bfloat16 = bool(descriptor.supports_bfloat16)
        self.tiling = str(descriptor.tiling.name).lower()
        self._call = getattr(descriptor, "_call_fn", None) or (lambda model, image: model(image))
        self.halo = int(halo)
        self._classsr_receptive_radius = self.halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16 and not self.supports_half:
            raise InputError(
                f"{self.arch} does not run in float16 (spandrel: supports_half=False); run "
                "it in float32" + (" or bfloat16" if self.supports_bfloat16 else "")
            )
        if x.dtype == torch.bfloat16 and not self.supports_bfloat16:
            raise InputError(
                f"{self.arch} does not run in bfloat16 (spandrel: supports_bfloat16=False); "
                "run it in float32" + (" or float16" if self.supports_half else "")
            )
        h, w = x.shape[-2:]
        out = self._call(self.net, pad_to(x, self.minimum, self.multiple_of, self.square))
        return out[..., : h * self.scale, : w * self.scale]

    def extra_repr(self) -> str:
        return f"arch={self.arch}, scale={self.scale}, halo={self.halo}"


def default_halo(descriptor) -> int:
    """The halo a network gets before calibration measured one (module constants)."""
    req = descriptor.size_requirements
    windowed = req.multiple_of > 1 or descriptor.tiling.name != "SUPPORTED"
    return DEFAULT_HALO_WINDOWED if windowed else DEFAULT_HALO


def describe(descriptor, source: str, scale: int | None = None) -> None:
    """Refuse what cannot be a branch: another task, another scale, a model that tiles
    internally or changes the channel count; each message names ``source``."""
    spandrel = import_spandrel()
    arch = descriptor.architecture.id
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InputError(
            f"{source}: spandrel detected {arch}, an inpainting model (it takes a mask); "
            "classsr routes single-image super-resolution and restoration networks only"
        )
    if descriptor.purpose == "FaceSR":
        raise InputError(
            f"{source}: spandrel detected {arch}, a face restoration model: it works on "
            "whole aligned faces, not on patches of a photo; use a general SR network"
        )
    if scale is not None and int(descriptor.scale) != int(scale):
        raise InputError(
            f"{source}: the network ({arch}) upscales x{descriptor.scale}, not x{scale} as "
            f"asked; pass scale={descriptor.scale} (or leave it out), or use a x{scale} model"
        )
    if descriptor.input_channels != descriptor.output_channels:
        raise InputError(
            f"{source}: the network ({arch}) maps {descriptor.input_channels} channels to "
            f"{descriptor.output_channels}; classsr needs the same channels in and out"
        )
    if descriptor.tiling.name == "INTERNAL":
        raise InputError(
            f"{source}: the network ({arch}) tiles its input itself (spandrel: "
            "tiling=INTERNAL), so its output on a tile is not its output on the image; it "
            "cannot be routed by patch. Run it on whole images with spandrel"
        )


def build_from_state(state: dict[str, torch.Tensor], source: str):
    """spandrel's descriptor for a state dict, or a clear error naming ``source``."""
    spandrel = import_spandrel()
    try:
        with warnings.catch_warnings():  # load_model's shape check builds on "meta" first
            warnings.filterwarnings("ignore", message=".*non-meta parameter.*")
            return spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise InputError(
            f"{source}: spandrel cannot identify the network in this file ({len(state)} "
            "tensors; first keys "
            f"{list(state)[:3]}). It may be a model of another kind (a classifier, a "
            "diffusion model), a training checkpoint that holds no weights under a known key, "
            "or an architecture this spandrel does not know (pip install -U spandrel). An "
            "official ClassSR checkpoint converts with `classsr convert-official`"
        ) from None


def spandrel_backbone(
    scale: int = 4,
    in_channels: int = 3,
    width: int = 1,
    archs: list[str] | None = None,
    halos: list[int] | None = None,
) -> nn.Module:
    """Branch ``width`` of a pretrained model: 0 is bicubic, ``k`` the ``k``-th network,
    built by spandrel from the weights of the file being loaded."""
    if width == 0:
        return Bicubic(scale)
    archs, halos = list(archs or []), list(halos or [])
    if not 1 <= width <= len(archs):
        raise InputError(
            f"spandrel branch {width}: the model records {len(archs)} network(s) (archs)"
        )
    source, state = file_state()
    if state is None:
        raise InputError(
            "the 'spandrel' backbone builds its networks from the weights of a model file: "
            "use ClassWrapper.from_pretrained('model.pth') or load_model('routed.safetensors')"
        )
    prefix = f"branches.{width}.net."
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise CheckpointError(f"{source}: it holds no weights for network {width} ({prefix}*)")
    descriptor = build_from_state(own, source)
    describe(descriptor, source, scale)
    if descriptor.architecture.id != archs[width - 1]:
        raise CheckpointError(
            f"{source}: network {width} was recorded as {archs[width - 1]} but spandrel now "
            f"detects {descriptor.architecture.id} from its weights; the file is damaged or "
            "this spandrel version reads it differently"
        )
    if descriptor.input_channels != in_channels:
        raise CheckpointError(
            f"{source}: network {width} takes {descriptor.input_channels} channels, the model "
            f"{in_channels}"
        )
    halo = halos[width - 1] if width - 1 < len(halos) else default_halo(descriptor)
    return SpandrelNet(descriptor, halo)


def describe_branches(model) -> list[dict[str, Any]]:
    """Per network branch of ``model``: arch, scale, size requirements, precision, halo."""
    return [
        {
            "branch": i,
            "arch": b.arch,
            "scale": b.scale,
            "minimum": b.minimum,
            "multiple_of": b.multiple_of,
            "square": b.square,
            "supports_half": b.supports_half,
            "supports_bfloat16": b.supports_bfloat16,
            "tiling": b.tiling,
            "halo": b.halo,
        }
        for i, b in enumerate(model.branches)
        if isinstance(b, SpandrelNet)
    ]


@hookimpl
def classsr_register_backbones(register):
    register(
        NAME,
        spandrel_backbone,
        width_arg="width",
        depth_arg=None,
        scales=None,
        description="a pretrained network file (ESRGAN, SwinIR, HAT, SPAN, ...) loaded by "
        "spandrel; width 0 is bicubic, width k the k-th network "
        "(ClassWrapper.from_pretrained)",
    )
