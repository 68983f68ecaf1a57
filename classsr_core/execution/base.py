"""The executor interface: run each branch on its own patches and stitch the HR image.

An executor is a plugin kind (``classsr_register_executors``); ``infer(mode=NAME)`` picks
one. The built-ins: ``patches`` (the paper: every patch on its own, overlaps averaged) and
``regions`` (same-class patches merged into tiles with a halo, every pixel written once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from classsr_core.base.run import Run


class Executor:
    """Base class of executors. Subclasses set ``name`` and implement :meth:`execute`."""

    name: ClassVar[str] = ""

    def check(self, options: dict[str, Any]) -> None:
        """Raise :class:`~classsr_core.errors.InputError` on options this executor cannot
        honour (``blend``, ``halo``, ``max_cells``, ...)."""

    def default_stride(self, model, patch_size: int) -> int:
        """The routing grid's stride when the caller gives none."""
        return int(model.stride)

    def prepare(self, run: Run) -> None:
        """Per-image set-up before routing (e.g. halos); may fill ``run.info``."""

    def fraction_of(self, run: Run) -> Callable[[np.ndarray], float] | None:
        """The real FLOPs fraction of an assignment, when it is not the plain per-patch sum
        (the budget policy then searches on it); ``None``: the per-patch sum is exact."""
        return None

    def execute(self, run: Run, assign: torch.Tensor) -> tuple[Any, float, float, int]:
        """Run ``assign`` (``(N,)`` classes on the CPU); return the HR image (``(1, C, H, W)``
        float, or with ``run.to_uint8`` optionally an ``(H, W, C)`` uint8 canvas), the
        multiply-adds spent (routing included), their fraction of the widest branch, and
        the number of branch inputs run."""
        raise NotImplementedError
