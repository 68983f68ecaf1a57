"""Every option of a run but the image, in one object, from the caller to the executor.

:class:`InferOptions` is built once, by :func:`~classsr_core.engine.pipeline.infer` from its
keywords or by ``classsr upscale`` from its flags, and handed down whole: to
:func:`~classsr_core.engine.pipeline.plan_routes`, to the band engine
(:class:`~classsr_core.engine.bands.BandOptions` adds the band sizes) and, as
``executor_options``, to the executor, whose ``options_model`` validates them
(:meth:`~classsr_core.execution.base.Executor.parse_options`). The engine's own fields are
listed here once; what an executor takes is the executor's business, so a plugin's option
needs no edit in the engine or the command line (``infer(..., NAME=VALUE)``,
``--mode-option NAME=VALUE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

T = TypeVar("T", bound="InferOptions")


@dataclass
class InferOptions:
    """What :func:`~classsr_core.engine.pipeline.infer` takes besides the image, the forced
    classes and the device (its docstring says what each does). ``None``: the default (the
    model's own, where it records one). ``executor_options``: the executor's own keywords
    (``blend``; ``halo``, ``max_cells``; a plugin's), validated by the executor."""

    mode: str | None = None  # the executor; None: the model's default (model.defaults["mode"])
    router: str | None = None
    patch_size: int | None = None
    stride: int | None = None
    batch_size: int | None = None
    amp: str | None = None
    budget: float | None = None
    tolerance: float | None = None
    price: float | None = None
    executor_options: dict[str, Any] = field(default_factory=dict)

    def engine_fields(self) -> tuple[str, ...]:
        """The options the engine reads itself (everything but ``executor_options``)."""
        return tuple(f.name for f in fields(self) if f.name != "executor_options")

    @classmethod
    def build(cls: type[T], options: InferOptions | None = None, /, **keywords: Any) -> T:
        """``options`` (default: none set) with ``keywords`` on top: an engine field by its
        name, any other keyword an executor option. A keyword of ``None`` is not given and
        leaves ``options``' value. ``build(mode="regions", halo=8)``."""
        base = options if options is not None else cls()
        engine = set(base.engine_fields())
        extra = dict(keywords.pop("executor_options", None) or {})
        top = {k: v for k, v in keywords.items() if k in engine and v is not None}
        extra.update({k: v for k, v in keywords.items() if k not in engine and v is not None})
        return replace(base, **top, executor_options={**base.executor_options, **extra})

    @property
    def routing_knobs(self) -> dict[str, Any]:
        """``budget``, ``tolerance`` and ``price``: what only the policy reads."""
        return {"budget": self.budget, "tolerance": self.tolerance, "price": self.price}
