"""Checks on a model file before a model is built from it (:func:`load_model`).

A model file is data: building a model from it must run no code and open no other file.
Registered components are safe to call, but their keyword arguments come from the file, and
some of them name a file that the component then ``torch.load``s (basicsr's
``spynet_path``, timm's ``checkpoint_path``) or a download (timm's ``pretrained``). On an
older torch, or with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, that unpickles whatever the
file points at. So, unless the caller trusts the file:

- :func:`check_file_kwargs` refuses keyword arguments that name a file, a folder or a URL;
- :func:`weights_only_loads` is the belt: while the model is built, every ``torch.load``
  runs with ``weights_only=True``, whatever the caller or the environment asks.

The other checks refuse what would otherwise fail deep inside torch, or not at all: widths
no stored tensor can hold (a 340 KB file that asks for a 30 GB layer) and weights that are
NaN or Inf (a black image and exit 0).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from classsr_core.errors import CheckpointError, UntrustedCodeError
from classsr_core.model.spec import ModelSpec

TRUST_FILE_HINT = (
    "a model file may not make the loader open other files or download; only for a file "
    "you trust, pass trust_code=True (CLI: --trust-code) (docs/safety.md)"
)

# Words of a keyword argument that names a file, a folder or a download.
_FILE_WORDS = {
    "path",
    "paths",
    "file",
    "files",
    "filename",
    "filepath",
    "dir",
    "dirs",
    "dirname",
    "directory",
    "folder",
    "root",
    "checkpoint",
    "ckpt",
    "pretrained",
    "pretrain",
    "url",
    "uri",
    "download",
    "hub",
    "weights",
    "load",
    "resume",
    "cache",
}
# Of those, the words of a switch that loads or downloads when on (timm's pretrained=True).
_SWITCH_WORDS = {"pretrained", "pretrain", "download", "hub", "load", "resume"}
# Suffixes of files a component could read weights (or pickles) from.
_FILE_SUFFIXES = {
    ".pt",
    ".pth",
    ".pkl",
    ".pickle",
    ".ckpt",
    ".bin",
    ".npy",
    ".npz",
    ".safetensors",
    ".h5",
    ".hdf5",
    ".onnx",
    ".tar",
    ".zip",
    ".gz",
    ".mat",
    ".t7",
    ".pb",
    ".msgpack",
    ".json",
    ".yaml",
    ".yml",
}


def _key_words(key: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)  # camelCase -> camel Case
    return {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w}


def _names_a_file(value: str) -> bool:
    """A path, a URL or a weights file's name. A bare word ("bicubic", "relu") is not
    looked up on disk: whether a file of that name happens to be in the current folder
    must not change what a model file means; a component that loads it anyway meets
    :func:`weights_only_loads`."""
    if "://" in value or "/" in value or "\\" in value or value.startswith("~"):
        return True
    return Path(value).suffix.lower() in _FILE_SUFFIXES


def _refusals(value: Any, where: str) -> Iterator[str]:
    """What in ``value`` (a kwargs dict, nested values included) names a file or download."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            reference = _key_words(str(key)) & _FILE_WORDS
            # A number (timm's drop_path_rate, use_cache=True) or a switch left off names
            # nothing; a switch that loads or downloads (pretrained=True) is refused on.
            if (
                reference
                and item
                and (not isinstance(item, (int, float)) or reference & _SWITCH_WORDS)
            ):
                yield f"{here} = {_short(item)} (the key names a file, a folder or a download)"
            else:
                yield from _refusals(item, here)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _refusals(item, f"{where}[{i}]")
    elif isinstance(value, str) and _names_a_file(value):
        yield f"{where} = {_short(value)} (the value is a path, a file or a URL)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_file_kwargs(spec: ModelSpec, source: str) -> None:
    """Refuse keyword arguments of the file's components (``backbone_kwargs``,
    ``classifier_kwargs``, any ``*_kwargs``) that name a file, a folder or a download:
    the component would open what the file names (:class:`UntrustedCodeError`). A backbone
    given as ``module:qualname`` is refused first, with the message that names it."""
    from classsr_core.plugins import import_code, is_code_reference

    if is_code_reference(spec.backbone):
        try:
            import_code(spec.backbone, "backbone", trust_code=False)  # raises, imports nothing
        except UntrustedCodeError as exc:
            raise UntrustedCodeError(f"{source}: {exc}") from None
    for field in type(spec).model_fields:
        if field.endswith("_kwargs"):
            found = next(_refusals(getattr(spec, field), field), None)
            if found:
                raise UntrustedCodeError(f"{source}: {found}; refused: {TRUST_FILE_HINT}")


# -- the belt: weights-only torch.load while a model is built from a file ---------------------

_lock = threading.Lock()
_depth = 0
_originals: tuple[Any, Any] | None = None


@contextlib.contextmanager
def weights_only_loads(source: str) -> Iterator[None]:
    """Within this block every ``torch.load`` (and ``torch.serialization.load``) reads with
    ``weights_only=True``, whatever its caller passes and whatever
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says: no pickle runs code. A load that this refuses
    (a pickle of objects, an explicit ``pickle_module``) or that fails is an
    :class:`UntrustedCodeError` naming ``source`` and the file the component tried to read."""
    global _depth, _originals
    with _lock:
        if _depth == 0:
            _originals = (torch.load, torch.serialization.load)
            original = _originals[0]

            def load(f, *args, **kwargs):
                kwargs["weights_only"] = True
                try:
                    return original(f, *args, **kwargs)
                except Exception as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise UntrustedCodeError(
                        f"{source}: building the model tried to torch.load {str(f)!r}, which "
                        f"is refused or fails as a weights-only load ({type(exc).__name__}: "
                        f"{first[:200]}); {TRUST_FILE_HINT}"
                    ) from None

            torch.load = torch.serialization.load = load
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.load, torch.serialization.load = _originals
                _originals = None


# -- sizes and values --------------------------------------------------------------------------


def check_branch_sizes(model_config: dict[str, Any], state: dict[str, torch.Tensor], source: str):
    """The file's widths / depths are whole numbers >= 0 and none is absurd against the
    tensors it stores (at most 4x the largest tensor dimension or the tensor count, and at
    least 64): a crafted config cannot make the loader allocate a huge layer before the
    shapes are compared."""
    largest = max((max(t.shape, default=1) for t in state.values()), default=0)
    limit = 4 * max(64, largest, len(state))
    for key in ("widths", "depths", "width_depths"):
        values = model_config.get(key)
        if values is None:
            continue
        flat = values if key != "width_depths" else [v for pair in values for v in pair]
        for v in flat:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CheckpointError(
                    f"{source}: its model config's {key} {values} must be whole numbers >= 0, "
                    f"got {v!r}; the file is damaged or crafted"
                )
            if v > limit:
                raise CheckpointError(
                    f"{source}: its model config's {key} {values} cannot match the weights it "
                    f"stores ({len(state)} tensors, the largest dimension {largest}); the file "
                    "is damaged or crafted"
                )


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights with NaN or Inf values: such a model writes black (or garbage) images."""
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
            torch.isfinite(tensor).all()
        ):
            raise CheckpointError(
                f"{source}: tensor {key!r} holds NaN or Inf values (a diverged or damaged "
                "model); refused, as it would write black or garbage images. Use an earlier "
                "checkpoint of the run"
            )
