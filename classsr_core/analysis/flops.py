"""Moved to :mod:`classsr_core.base.flops` (the engine, the routers and the model count
FLOPs, so the counting lives in the base layer that imports nothing above it). This name
keeps working: it *is* that module, so code that patches or reads its cache through either
name sees the same state."""

import sys

from classsr_core.base import flops as _flops

sys.modules[__name__] = _flops
