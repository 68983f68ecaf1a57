"""Device choice: never hard-code CPU or CUDA."""

from __future__ import annotations

import torch

from classsr_core.errors import InputError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps"


def available_devices() -> list[str]:
    """The devices this machine can run on, as ``--device`` spells them."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_device(requested: str | torch.device) -> torch.device:
    """``requested`` as a device this machine has, or an :class:`InputError` that lists the
    ones it has: checked here, once, so that a typo or a missing GPU is one clear message
    and not a traceback from the first tensor moved there."""
    here = ", ".join(available_devices())
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"{requested!r} is not a device; choose {DEVICE_CHOICES} (this machine: {here})"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{requested!r}: this machine has no CUDA GPU (available: {here})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{requested!r}: no such GPU (available: {here})")
    elif device.type == "mps":
        if not _mps_available():
            raise InputError(f"{requested!r}: Apple MPS is not available here (available: {here})")
    elif device.type != "cpu":
        raise InputError(f"{requested!r}: unsupported device; choose {DEVICE_CHOICES}")
    return device


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """``requested`` if given (checked: :func:`check_device`), else CUDA when available,
    else Apple MPS, else CPU."""
    if requested is not None:
        return check_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on an asynchronous device (a no-op on CPU): a clock read
    before it would time the queueing, not the compute."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
