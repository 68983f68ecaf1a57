"""Input validation shared by every entry point, with messages that name the fix."""

from __future__ import annotations

import torch

from classsr_core.errors import InputError

# Float images are [0, 1]; a little over- or undershoot (a resampled or sharpened input) is
# accepted, an image in 0..255 or -1..1 is refused rather than silently scaled wrong.
VALUE_SLACK = 0.05


def check_image_tensor(x: torch.Tensor, channels: int, name: str = "image") -> torch.Tensor:
    """Return ``x`` as (N, C, H, W); raise :class:`InputError` on anything we cannot process."""
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor or a uint8 numpy array, got {type(x).__name__}"
        )
    if x.device.type == "meta":
        raise InputError(
            f"{name} is on the meta device (no data): a meta tensor has a shape but no "
            "values; pass a tensor with data (created on, or loaded to, 'cpu' or 'cuda')"
        )
    given = tuple(x.shape)  # as passed, for the messages
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise InputError(
            f"{name} must be 3D (C, H, W) or 4D (N, C, H, W), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise InputError(_channels_message(x, given, channels, name))
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise InputError(f"{name} is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        hint = " (t.float() / 255), or pass it as a uint8 numpy array (H, W, C)"
        raise InputError(
            f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}"
            + (f"; convert it{hint}" if x.dtype == torch.uint8 else "")
        )
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or Inf values; clean the input first")
    low, high = float(x.min()), float(x.max())
    if low < -VALUE_SLACK or high > 1 + VALUE_SLACK:
        hint = " (it looks like 0..255: divide by 255)" if high > 2 else ""
        raise InputError(
            f"{name} values range from {low:.3g} to {high:.3g}, but float images must be in "
            f"[0, 1]{hint}; or pass a uint8 numpy array (H, W, C)"
        )
    return x


def _channels_message(x: torch.Tensor, given: tuple, channels: int, name: str) -> str:
    """The channel-count error for ``x`` (N, C, H, W), passed as shape ``given``; a
    channels-last tensor (H, W, C) / (N, H, W, C), the numpy / PIL layout, is named as such
    with the permute that fixes it."""
    shape = tuple(x.shape)
    if shape[-1] == channels:
        layout = f"(1, {channels}, H, W) or ({channels}, H, W)"
        fix = "t.permute(2, 0, 1)" if len(given) == 3 else "t.permute(0, 3, 1, 2)"
        kind = "float tensors" if x.is_floating_point() else "tensors"
        last = f"(H, W, {channels})" if len(given) == 3 else f"(N, H, W, {channels})"
        return (
            f"{name} of shape {given} looks channels-last {last}, the numpy layout: {kind} "
            f"are {layout}; permute with {fix}"
        )
    return (
        f"{name} has {shape[1]} channels but the model expects {channels}; "
        "convert it (e.g. grey -> RGB, drop alpha) or build the model with "
        f"in_channels={shape[1]}"
    )


def check_increasing(values: list, what: str) -> None:
    if not values:
        raise InputError(f"{what} is empty: give at least one value, cheapest branch first")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise InputError(
            f"{what} must be strictly increasing (cheapest branch first), got {list(values)}"
        )


def check_tiling(patch_size: int, stride: int) -> None:
    if patch_size < 1:
        raise InputError(f"patch size must be positive, got {patch_size}")
    if stride < 1 or stride > patch_size:
        raise InputError(
            f"stride {stride} must be between 1 and the patch size {patch_size}; a larger "
            "stride would leave gaps between patches"
        )
