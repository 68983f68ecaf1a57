"""Images in and out of the engine: uint8 numpy arrays and float tensors in [0, 1].

A grey uint8 array (``(H, W)`` or ``(H, W, 1)``) given to a model of more channels is
replicated to them and the output averaged back to one channel, as ``classsr upscale``
treats a grey file (``classsr_core.io.images``): the output has the input's layout.
"""

from __future__ import annotations

import numpy as np
import torch

from classsr_core.checks import check_image_tensor
from classsr_core.errors import InputError


def model_device(model) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def model_dtype(model) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def to_tensor(image, channels: int) -> tuple[torch.Tensor, str]:
    """``(1, C, H, W)`` float tensor and the input's kind: ``numpy``, ``grey`` (a one-channel
    uint8 array replicated to the model's ``channels``), ``tensor3`` or ``tensor4``."""
    if isinstance(image, np.ndarray):
        return _numpy_to_tensor(image, channels)
    if isinstance(image, torch.Tensor):
        kind = "tensor3" if image.dim() == 3 else "tensor4"
        t = check_image_tensor(image, channels)
        if t.shape[0] != 1:
            raise InputError(
                f"infer takes one image at a time, got a batch of {t.shape[0]}; loop over it "
                "(the engine batches patches, not images)"
            )
        return t, kind
    raise InputError(
        f"image must be a torch.Tensor or a uint8 numpy array, got {type(image).__name__}"
    )


def _numpy_to_tensor(image: np.ndarray, channels: int) -> tuple[torch.Tensor, str]:
    if image.dtype != np.uint8:
        raise InputError(
            f"numpy images must be uint8 (H, W, C) or (H, W), got dtype {image.dtype}; "
            "pass a float torch tensor (1, C, H, W) in [0, 1] for other ranges"
        )
    check_numpy_layout(image, channels)
    arr = image[:, :, None] if image.ndim == 2 else image
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        # A read-only array (np.asarray of a PIL image): torch.from_numpy would warn that
        # it is not writable. We never write to it, but a copy of a uint8 image is cheap.
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1)[None].float().div_(255)
    kind = "numpy"
    if t.shape[1] == 1 and channels > 1:
        t, kind = t.repeat(1, channels, 1, 1), "grey"
    return check_image_tensor(t, channels), kind


def check_numpy_layout(image: np.ndarray, channels: int) -> None:
    """Refuse a uint8 array that is not one ``(H, W, C)`` / ``(H, W)`` image, naming the
    likely mix-up (CHW order, a batch axis, an alpha channel) and the call that fixes it."""
    shape = tuple(int(n) for n in image.shape)
    got = f"got a uint8 array of shape {shape}"
    want = f"(H, W, {channels})" + (" or (H, W)" if channels > 1 else "")
    if image.ndim == 4:
        if shape[0] == 1:
            fix = "drop the batch axis with arr[0]"
            if shape[1] in (1, channels) and shape[3] not in (1, channels):
                fix = "drop the batch axis and transpose with arr[0].transpose(1, 2, 0)"
            raise InputError(f"{got}: uint8 arrays are one image {want}; {fix}")
        raise InputError(
            f"{got}: infer takes one image at a time, {want}; loop over the first axis"
        )
    if image.ndim not in (2, 3):
        raise InputError(f"{got}: numpy images must be {want}")
    if image.ndim == 2 or shape[2] in (1, channels):
        if min(shape[:2]) < 1:
            raise InputError(f"{got}: the image is empty")
        return
    if shape[0] in (1, channels):
        raise InputError(
            f"{got}: uint8 arrays are HWC {want}; transpose with arr.transpose(1, 2, 0)"
        )
    if shape[2] == channels + 1:
        raise InputError(
            f"{got}: {shape[2]} channels, but the model takes {channels}; drop the alpha "
            f"channel with arr[:, :, :{channels}]"
        )
    raise InputError(f"{got}: {shape[2]} channels, but the model takes {channels}; pass {want}")


def from_tensor(hr: torch.Tensor, kind: str, image):
    """The output in the input's kind; ``hr`` is the (1, C, H, W) float canvas (a view),
    or for numpy output already the (H, W, C) uint8 canvas of regions mode."""
    if kind == "grey":  # replicated on the way in: the channels' mean, then rounded once
        grey = hr[0].mean(0, keepdim=True).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        arr = np.ascontiguousarray(grey.permute(1, 2, 0).cpu().numpy())
        return arr[:, :, 0] if image.ndim == 2 else arr
    if kind == "numpy":
        if hr.dtype == torch.uint8:  # regions mode's canvas, rounded tile by tile
            arr = hr.cpu().numpy()
        else:
            arr = hr[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)
            arr = np.ascontiguousarray(arr.cpu().numpy())
        return arr[:, :, 0] if image.ndim == 2 and arr.shape[2] == 1 else arr
    out = hr.to(image.device, image.dtype).contiguous()  # copies only if cropped or moved
    return out[0] if kind == "tensor3" else out
