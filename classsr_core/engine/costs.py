"""Moved to :mod:`classsr_core.base.costs` (the base layer, #27); this path keeps working."""

from classsr_core.base.costs import PatchCosts

__all__ = ["PatchCosts"]
