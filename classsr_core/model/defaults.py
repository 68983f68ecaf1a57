"""The infer() options a model records for itself (``model.defaults``, saved in its file).

A model knows things about its own best path that a caller should not have to: the
executor that runs it fastest at no loss of quality (``"mode"``: ``"regions"`` for a model
calibrated with ``classsr calibrate --make-default``), and the halo around each region
tile that costs no visible quality (measured by ``classsr calibrate``,
:func:`classsr_core.routing.calibration.measure_halo`). An option the caller sets wins.
"""

from __future__ import annotations

from typing import Any

from classsr_core.base.defaults import FALLBACK_MODE, default_mode, recorded_mode
from classsr_core.errors import InputError

__all__ = ["FALLBACK_MODE", "KNOWN", "check_defaults", "default_mode", "recorded_mode"]


def _is_executor(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    from classsr_core.plugins import get_registry

    return value in get_registry().names("executors")


# key -> (check, what a value must be)
KNOWN = {
    "mode": (
        _is_executor,
        "the name of a registered executor (`classsr plugins`), e.g. 'regions'",
    ),
    "halo": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64,
        "a whole number of LR pixels, 0..64",
    ),
}


def check_defaults(data: Any) -> dict[str, Any]:
    """``data`` as a defaults dict, or an InputError naming the bad key."""
    if not isinstance(data, dict):
        raise InputError(f"model defaults must be a JSON object, got {type(data).__name__}")
    for key, value in data.items():
        if key not in KNOWN:
            raise InputError(
                f"unknown model default {key!r} (known: {', '.join(KNOWN)}); this file needs "
                "a newer classsr"
            )
        ok, what = KNOWN[key]
        if not ok(value):
            raise InputError(f"model default {key}={value!r}: must be {what}")
    return dict(data)
