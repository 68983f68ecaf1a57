"""Moved to :mod:`classsr_core.base.grid` (the base layer, #27); this path keeps working."""

from classsr_core.base.grid import PatchGrid, check_classes, pad_to, patch_grid

__all__ = ["PatchGrid", "check_classes", "pad_to", "patch_grid"]
