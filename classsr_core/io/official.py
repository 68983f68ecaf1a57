"""Load the official ClassSR checkpoints (XPixelGroup/ClassSR, x4, three classes).

The official file holds ``classifier.CondNet.N`` / ``classifier.lastOut`` and
``net1.`` / ``net2.`` / ``net3.`` with the backbone's own keys. Our backbones use the
official attribute names, so the conversion is a prefix rename:
``netK.`` -> ``branches.{K-1}.``, ``classifier.CondNet.`` -> ``classifier.body.``,
``classifier.lastOut.`` -> ``classifier.fc.``. Files are read with
``torch.load(weights_only=True)``: no pickled code runs.

The official RCAN ran on 0..255 input: its branches are built with ``rgb_range=255`` (input
times 255 before, output over 255 after), and its classifier, which saw ``x / 255`` of that
0..255 input, sees our 0..1 input unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from classsr_core.errors import CheckpointError, InputError
from classsr_core.io.checkpoint import describe_mismatch, load_into


@dataclass(frozen=True)
class OfficialArch:
    backbone: str
    widths: tuple[int, ...]
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


ARCHS: dict[str, OfficialArch] = {
    "fsrcnn": OfficialArch("fsrcnn", (16, 36, 56)),
    "carn": OfficialArch("carn_m", (36, 52, 64)),
    "srresnet": OfficialArch("srresnet", (36, 52, 64)),
    "rcan": OfficialArch("rcan", (36, 50, 64), {"rgb_range": 255.0}),
}
ALIASES = {"carn_m": "carn", "msrresnet": "srresnet"}
OFFICIAL_SCALE = 4

# Where training scripts put the weights inside a saved dict, in the order we look.
_WRAPPERS = ("params_ema", "params", "state_dict", "model", "net")
_CLASSIFIER_RENAMES = (
    ("classifier.CondNet.", "classifier.body."),
    ("classifier.lastOut.", "classifier.fc."),
)
_BRANCH = re.compile(r"^net(\d+)\.")


def arch_key(arch: str) -> str:
    key = ALIASES.get(arch.lower(), arch.lower())
    if key not in ARCHS:
        raise InputError(f"unknown official arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return key


def arch_info(arch: str) -> OfficialArch:
    return ARCHS[arch_key(arch)]


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The official state dict in a file, unwrapped (``params`` etc.) and without ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled code, a safetensors file, or garbage
        raise CheckpointError(
            f"{path} cannot be read as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Official ClassSR .pth files are "
            "plain state dicts; a classsr .safetensors file loads with load_model"
        ) from None
    for _ in range(3):  # e.g. {"params": {...}} or {"state_dict": {"params": ...}}
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. an iteration counter saved beside the weights
        while key.startswith("module."):  # saved from DataParallel / DDP
            key = key[len("module.") :]
        state[key] = value
    return state


def to_ours(key: str) -> str:
    """An official key -> ours (keys we do not know are returned unchanged)."""
    for old, new in _CLASSIFIER_RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    m = _BRANCH.match(key)
    if m:
        return f"branches.{int(m.group(1)) - 1}.{key[m.end() :]}"
    return key


def to_official(key: str) -> str:
    """Our key -> the official one (for messages that name keys as the file does)."""
    for old, new in _CLASSIFIER_RENAMES:
        if key.startswith(new):
            return old + key[len(new) :]
    m = re.match(r"^branches\.(\d+)\.", key)
    if m:
        return f"net{int(m.group(1)) + 1}.{key[m.end() :]}"
    return key


def official_kwargs(arch: str, **kwargs) -> dict[str, Any]:
    """The ClassWrapper keywords an official checkpoint of ``arch`` loads into."""
    info = arch_info(arch)
    kwargs.setdefault("scale", OFFICIAL_SCALE)
    if kwargs["scale"] != OFFICIAL_SCALE:
        raise InputError(f"the official ClassSR checkpoints are x{OFFICIAL_SCALE} only")
    backbone_kwargs = {**info.backbone_kwargs, **kwargs.pop("backbone_kwargs", {})}
    return {
        "backbone": info.backbone,
        "widths": list(info.widths),
        "backbone_kwargs": backbone_kwargs,
        **kwargs,
    }


def load_official_into(model, path: str | Path, arch: str) -> None:
    """Load an official ClassSR ``.pth`` (read with ``weights_only=True``) into ``model``,
    built with :func:`official_kwargs`. A file that does not match is refused, naming the
    first missing and unexpected keys as the official file spells them."""
    official = read_official(path)
    _check_keys(model, official, f"{path} (read as an official {arch!r} checkpoint)", arch)
    state = {to_ours(k): v for k, v in official.items()}
    own = model.state_dict()
    # BatchNorm's counter is int64 in the model; older files may carry another dtype.
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    load_into(model, state, str(path))
    model.checkpoint_meta = {"official": {"path": str(path), "arch": arch}}


def _check_keys(model, official: dict[str, torch.Tensor], source: str, arch: str) -> None:
    expected = {to_official(k): v.shape for k, v in model.state_dict().items()}
    problem = describe_mismatch(expected, official)
    if problem is None:
        return
    guess = guess_arch(official)
    hint = (
        f" It looks like an official {guess!r} checkpoint: pass arch={guess!r}."
        if guess and guess != arch_key(arch)
        else ""
    )
    raise CheckpointError(f"{source} does not match: {problem}.{hint}")


def guess_arch(official: dict[str, torch.Tensor]) -> str | None:
    """Which official arch a state dict is, from its net1 keys (None if none fits)."""
    markers = {
        "fsrcnn": "net1.tail_conv.weight",
        "carn": "net1.upsample.up.body.0.weight",
        "srresnet": "net1.recon_trunk.0.conv1.weight",
        "rcan": "net1.body.0.body.0.body.3.conv_du.0.weight",
    }
    return next((arch for arch, key in markers.items() if key in official), None)
