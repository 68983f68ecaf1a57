"""Which executor runs a model: the one the caller names, else the one the model records
(``model.defaults["mode"]``), else the paper's patches. In the base layer because the
engine, the band streamer and the sweeps ask it of a model they did not build; checking a
file's recorded defaults is :mod:`classsr_core.model.defaults`'s."""

from __future__ import annotations

from typing import Any

# The executor infer(mode=None) runs when the model records none: the paper's overlapping
# patches, so that a model without a recorded default behaves as it always did.
FALLBACK_MODE = "patches"


def default_mode(model: Any, mode: str | None = None) -> str:
    """The executor to run: ``mode`` when given, else the one ``model`` records
    (``model.defaults["mode"]``), else the paper's ``"patches"``."""
    if mode is not None:
        return mode
    recorded = (getattr(model, "defaults", None) or {}).get("mode")
    return recorded or FALLBACK_MODE


def recorded_mode(meta: dict[str, Any] | None) -> str:
    """What :func:`default_mode` gives for a checkpoint's metadata (its header, before the
    model is loaded)."""
    defaults = (meta or {}).get("defaults") or {}
    mode = defaults.get("mode") if isinstance(defaults, dict) else None
    return mode if isinstance(mode, str) and mode else FALLBACK_MODE
