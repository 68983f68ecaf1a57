"""An example router plugin: route each patch by its colour gradients, with no calibration.

Score of an LR patch: per pixel and channel, central differences ``dx = (right - left) / 2``
and ``dy = (below - above) / 2`` (the patch's border replicated), magnitude
``sqrt(dx^2 + dy^2)``; the largest over the channels; the 90th percentile over the patch.
A flat patch scores 0; images in [0, 1] score at most 0.71.

Why the 90th percentile and not the maximum: the thresholds are fixed, not calibrated, and
on downscaled photos nearly every LR patch holds one strong edge somewhere (on
``astronaut`` at x4 the smallest patch maximum is 0.37), so a maximum sends almost every
patch to the widest branch. The 90th percentile asks whether a tenth of the patch is edge,
which is what a wider branch can improve on average (PSNR averages over pixels), and one
noisy pixel does not move it. (classsr's ``edge`` router uses the maximum: its calibrated
table learns what each score is worth.)

Thresholds, the constructor's defaults (images in [0, 1]):

* ``low=0.05``: below it, the cheapest branch (flat sky, out-of-focus background);
* ``high=0.15``: at or above it, the widest branch (dense texture, text);
* in between, the middle branches in order: ``M`` branches move up at ``M - 1`` thresholds
  evenly spaced from ``low`` to ``high`` (two branches: one, at ``low``).

Budgets: ``utility[k, j] = -sum(relu(score[k] - t[i]) for i >= j)``, minus how far patch
``k`` lies above the thresholds branch ``j`` does not reach. It grows with ``j``, each step
up is worth more on a patch with more edges, and without a budget its argmax is the
routing above.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from classsr_core.api import Router, Run, Scores, hookimpl

__version__ = "0.1.0"

QUANTILE = 0.9
BATCH = 256  # patches scored at once


def gradient_scores(patches: torch.Tensor) -> torch.Tensor:
    """``(B, C, p, p)`` -> ``(B,)``: the 90th percentile of each patch's colour gradient."""
    g = F.pad(patches.float(), (1, 1, 1, 1), mode="replicate")
    dx = g[..., 1:-1, 2:] - g[..., 1:-1, :-2]
    dy = g[..., 2:, 1:-1] - g[..., :-2, 1:-1]
    squared = (dx.square() + dy.square()).amax(dim=1).flatten(1)  # (B, p*p)
    k = math.ceil(QUANTILE * squared.shape[1])  # nearest rank
    return squared.kthvalue(k, dim=1).values.sqrt() / 2  # sqrt and halving once a patch


class GradientRouter(Router):
    name = "gradient"

    def __init__(self, low: float = 0.05, high: float = 0.15) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def thresholds(self, branches: int) -> np.ndarray:
        """The ``branches - 1`` scores at which a patch moves up one branch."""
        return np.linspace(self.low, self.high, branches - 1)

    def cost(self, model, patch_size: int) -> float:
        # Per pixel and channel: 2 differences, 2 squares, 1 add; per pixel: the max over
        # channels (C - 1 comparisons) and the selection of the percentile (quickselect:
        # about 3 comparisons); per patch: a square root and a halving.
        per_pixel = 5 * model.in_channels + (model.in_channels - 1) + 3
        return float(per_pixel * patch_size * patch_size + 2)

    def score(self, run: Run) -> Scores | None:
        m = len(run.model.branches)
        if m < 2:
            return None  # nothing to choose
        n = run.num_patches
        chunks = [
            gradient_scores(run.patches(torch.arange(i, min(i + BATCH, n), device=run.device)))
            for i in range(0, n, BATCH)
        ]
        score = torch.cat(chunks).cpu().double().numpy()
        t = self.thresholds(m)
        default = np.searchsorted(t, score, side="right")  # thresholds reached
        above = np.maximum(score[:, None] - t[None, :], 0.0)  # (N, M - 1)
        shortfall = np.cumsum(above[:, ::-1], axis=1)[:, ::-1]  # sum over i >= j
        utility = -np.concatenate([shortfall, np.zeros((n, 1))], axis=1)
        return Scores(torch.from_numpy(default).long(), utility)


@hookimpl
def classsr_register_routers(register):
    register(
        "gradient",
        GradientRouter,
        description="the 90th percentile of each patch's colour gradient against fixed "
        "thresholds; no calibration, no classifier",
    )
