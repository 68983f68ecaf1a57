"""The executor interface: run each branch on its own patches and stitch the HR image.

An executor is a plugin kind (``classsr_register_executors``); ``infer(mode=NAME)`` picks
one. The built-ins: ``patches`` (the paper: every patch on its own, overlaps averaged) and
``regions`` (same-class patches merged into tiles with a halo, every pixel written once).

An executor owns two things the engine never looks inside:

- **Its options** (``options_model``): a pydantic model of the keywords it takes (``blend``;
  ``halo``, ``max_cells``; a plugin's own), as a task has its ``config_model``. The engine
  hands every option it does not know itself (``infer(..., halo=4)``, ``--mode-option
  KEY=VALUE``) to :meth:`Executor.parse_options`; an unknown one is refused with the
  executor's name and the options it knows.
- **Its streaming** (:meth:`Executor.band_margin`, :meth:`Executor.band_classes`): how its
  output is rebuilt band by band (:mod:`classsr_core.engine.bands`). An executor that does
  not say is refused there, never streamed wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import ValidationError

from classsr_core.base.run import Run
from classsr_core.config import StrictModel
from classsr_core.errors import InputError


class ExecutorOptions(StrictModel):
    """Base of an executor's options model (:attr:`Executor.options_model`): unknown keys
    are errors. Subclass it (or a built-in's, ``PatchesExecutor.options_model``) and add
    fields; a ``ValueError`` raised in a validator reaches the caller as an
    :class:`~classsr_core.errors.InputError` with its message."""


def cell_bounds(starts, patch_size: int, length: int) -> np.ndarray:
    """Edges of the cells along one axis: patch ``i`` owns ``[b[i], b[i+1])``.

    Neighbouring patches overlap on ``[start[i], start[i-1] + p)``; the edge is its middle,
    so every cell lies inside its own patch. The regions executor merges these cells; the
    band engine cuts an image into bands at them."""
    starts = np.asarray(starts, dtype=np.int64)
    inner = (starts[1:] + starts[:-1] + patch_size) // 2
    return np.concatenate([[0], inner, [length]]).astype(np.int64)


class Executor:
    """Base class of executors. Subclasses set ``name`` and implement :meth:`execute`;
    ``options_model`` when they take options; :meth:`band_margin` when their output can be
    streamed band by band."""

    name: ClassVar[str] = ""
    # The options this executor takes (none by default); run.options holds them, validated.
    options_model: ClassVar[type[StrictModel]] = ExecutorOptions

    def parse_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``given`` validated by :attr:`options_model`, as the dict ``run.options`` holds
        (every field, defaults included). A value of ``None`` means "not given". Raises an
        :class:`~classsr_core.errors.InputError` naming the executor for an unknown option
        (with the options it knows) or a bad value; then :meth:`check` runs."""
        data = {k: v for k, v in (given or {}).items() if v is not None}
        model = self.options_model
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            raise InputError(_options_error(self.name, model, exc)) from None
        options = parsed.model_dump()
        self.check(options)
        return options

    def known_options(self) -> list[str]:
        """The names of the options this executor takes."""
        return list(self.options_model.model_fields)

    def check(self, options: dict[str, Any]) -> None:
        """Raise :class:`~classsr_core.errors.InputError` on a combination of options this
        executor cannot honour (after :attr:`options_model` has validated each); most
        executors need nothing here."""

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

    # -- streaming (classsr_core.engine.bands) ---------------------------------------------
    def band_margin(self, model, options: dict[str, Any], device: torch.device) -> int:
        """How the band engine splits an image for this executor: the LR rows of context a
        band needs either side of the rows it keeps.

        The band engine keeps, per band, the LR rows that a run of patch rows owns
        (:func:`cell_bounds`), runs this executor (with ``options``, the classes routed on
        the whole image) on every patch row whose patches reach within ``band_margin``
        rows of them, and writes the kept rows of the output. Return the margin for which
        those rows equal the whole image's output (``patches``: 0, the patch rows that
        overlap the kept rows; ``regions``: the widest halo).

        An executor whose output cannot be rebuilt so (it normalises over the whole image,
        reads pixels farther away than any margin, ...) raises
        ``InputError("executor NAME cannot stream: why")``: the default, so that an
        executor is never streamed on a guess."""
        raise InputError(
            f"executor {self.name!r} cannot stream: it does not say how its output is rebuilt "
            "band by band (Executor.band_margin); run it in memory (without --stream, or with "
            "a higher --stream-above)"
        )

    def band_classes(self, classes: np.ndarray, keep: slice) -> np.ndarray:
        """The classes a band runs with: ``classes`` are the routed classes ``(rows, cols)``
        of its patch rows, ``keep`` the rows whose output is kept (the others are context).
        Default: as routed. An executor whose context rows only lend their pixels (their
        output cropped off) may run them on the cheapest branch (``regions``)."""
        return classes


def _options_error(name: str, model: type[StrictModel], exc: ValidationError) -> str:
    """One line per problem, each naming the executor."""
    known = ", ".join(model.model_fields) or "none"
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(
                f"executor {name!r} (mode={name!r}) has no option {key!r}; its options: {known}"
            )
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            lines.append(str(err["ctx"]["error"]))
        else:
            where = f"option {key!r}" if key else "options"
            lines.append(f"executor {name!r}: {where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)
