"""Moved to :mod:`classsr_core.base.run` (the base layer, #27); this path keeps working."""

from classsr_core.base.run import Run, as_input, weights_dtype

__all__ = ["Run", "as_input", "weights_dtype"]
