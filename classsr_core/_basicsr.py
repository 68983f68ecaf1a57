"""The one place that imports basicsr.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17
removed, and its package ``__init__`` imports everything, so every ``import basicsr.*`` fails
on current torchvision. We provide that module name once, here, and import basicsr lazily:
it costs about 5 s, and ``import classsr_core`` must stay fast.
"""

from __future__ import annotations

import sys
import types
from functools import cache


def _provide_functional_tensor() -> None:
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision)

        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale  # the only name basicsr uses
    sys.modules[name] = shim


@cache
def basicsr():
    """Import and return the ``basicsr`` package (after installing the shim)."""
    _provide_functional_tensor()
    import basicsr as _basicsr

    return _basicsr


def arch_registry():
    basicsr()
    from basicsr.utils.registry import ARCH_REGISTRY

    return ARCH_REGISTRY


def imresize(img, scale: float):
    """MATLAB-exact bicubic resize (antialiased when shrinking); ``img`` HWC float in [0, 1]."""
    basicsr()
    from basicsr.utils.matlab_functions import imresize as _imresize

    return _imresize(img, scale)


def metrics():
    """basicsr's ``calculate_psnr`` and ``calculate_ssim`` (HWC, 0..255, crop_border)."""
    basicsr()
    from basicsr.metrics import calculate_psnr, calculate_ssim

    return calculate_psnr, calculate_ssim
