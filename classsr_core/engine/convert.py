"""Images in and out of the engine: uint8 numpy arrays and float tensors in [0, 1]."""

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
    """``(1, C, H, W)`` float tensor and the input's kind (numpy / tensor3 / tensor4)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(
                f"numpy images must be uint8 (H, W, C) or (H, W), got dtype {image.dtype}; "
                "pass a float torch tensor (1, C, H, W) in [0, 1] for other ranges"
            )
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise InputError(f"numpy images must be (H, W, C) or (H, W), got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        return check_image_tensor(t, channels), "numpy"
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


def from_tensor(hr: torch.Tensor, kind: str, image):
    """The output in the input's kind; ``hr`` is the (1, C, H, W) float canvas (a view),
    or for numpy output already the (H, W, C) uint8 canvas of regions mode."""
    if kind == "numpy":
        if hr.dtype == torch.uint8:  # regions mode's canvas, rounded tile by tile
            arr = hr.cpu().numpy()
        else:
            arr = hr[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0)
            arr = np.ascontiguousarray(arr.cpu().numpy())
        return arr[:, :, 0] if image.ndim == 2 and arr.shape[2] == 1 else arr
    out = hr.to(image.device, image.dtype).contiguous()  # copies only if cropped or moved
    return out[0] if kind == "tensor3" else out
