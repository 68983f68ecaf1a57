"""What one patch costs: the router and every branch, in fvcore multiply-adds.

One typed table serves the engine (what a run spent), the routers and policies (a price per
multiply-add, a budget) and the FLOPs report, instead of a loose dict in each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from classsr_core.errors import InputError


@dataclass(frozen=True)
class PatchCosts:
    """Multiply-adds of routing one ``patch x patch`` LR patch and of each branch on it."""

    router: float
    branches: tuple[float, ...]
    patch: int

    @property
    def widest(self) -> float:
        return max(self.branches)

    @property
    def per_pixel(self) -> tuple[float, ...]:
        """Each branch's multiply-adds per LR pixel (a patch's cost spread over its area)."""
        return tuple(c / (self.patch * self.patch) for c in self.branches)

    @property
    def counted(self) -> bool:
        return not any(math.isnan(c) for c in self.branches)

    def with_router(self, router: float) -> PatchCosts:
        return replace(self, router=float(router))

    def spent_on_patches(self, n: int, counts: list[int]) -> tuple[float, float]:
        """Multiply-adds of routing ``n`` patches and running ``counts[i]`` of them through
        branch ``i``, and their fraction of the widest branch on all ``n``."""
        spent = n * self.router + sum(c * f for c, f in zip(counts, self.branches))
        widest = n * self.widest
        return float(spent), float(spent / widest) if widest > 0 else math.nan

    def spent_on_pixels(self, n: int, pixels: list[int], image_pixels: int) -> tuple[float, float]:
        """Multiply-adds of routing ``n`` patches and running ``pixels[i]`` LR pixels (halos
        included) through branch ``i``, and their fraction of the widest branch on the whole
        image (the '-O' network's own cost)."""
        rates = self.per_pixel
        spent = n * self.router + sum(r * px for r, px in zip(rates, pixels))
        widest = max(rates) * image_pixels
        return float(spent), float(spent / widest) if widest > 0 else math.nan

    def require_counted(self, what: str) -> None:
        if not self.counted:
            raise InputError(f"{what} needs the branches' FLOPs, which could not be counted")

    def to_dict(self) -> dict:
        """The JSON shape reports use: ``{"classifier", "branches"}`` per patch."""
        return {"classifier": self.router, "branches": list(self.branches)}

    # Older callers read the report as a dict; keep that working.
    def __getitem__(self, key: str):
        return self.to_dict()[key]
