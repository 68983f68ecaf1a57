"""The options of a ClassWrapper, grouped: how its branches are derived from a backbone, its
classifier, and the tiling of its tile engine.

``ClassWrapper("fsrcnn", widths=[16, 36, 56], scale=4)`` still takes them as keywords (the
public call); they are gathered into one :class:`WrapperOptions`, which the builder reads,
and which can also be passed whole: ``ClassWrapper("fsrcnn", options=WrapperOptions(...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class WrapperOptions:
    """Every ClassWrapper keyword besides ``backbone``, explicit ``branches`` and
    ``trust_code`` (those say *what* to build and whether its code may be imported; these,
    *how*). Field meanings: :class:`~classsr_core.model.wrapper.ClassWrapper`."""

    # The branches: exactly one of the three lists, read by a branch generator.
    widths: Sequence[int] | None = None
    depths: Sequence[int] | None = None
    width_depths: Sequence[Sequence[int]] | None = None
    generator: str | None = None
    width_arg: str | None = None
    depth_arg: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    shared_weights: bool = False
    # The network as a whole.
    scale: int = 4
    in_channels: int = 3
    classifier: str = "classsr"
    classifier_kwargs: dict[str, Any] = field(default_factory=dict)
    # The tile engine's tiling (LR pixels).
    patch_size: int = 32
    stride: int = 28

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def merge(cls, options: WrapperOptions | None, keywords: dict[str, Any]) -> WrapperOptions:
        """``options`` (default: all defaults) with ``keywords`` set on top; an unknown
        keyword is a ``TypeError``, as Python's own for a misspelt argument."""
        unknown = sorted(set(keywords) - set(cls.names()))
        if unknown:
            raise TypeError(f"ClassWrapper() got an unexpected keyword argument {unknown[0]!r}")
        base = options if options is not None else cls()
        out = replace(base, **keywords)
        # Private copies: the builder records them, and a caller's dict may change later.
        return replace(
            out,
            backbone_kwargs=dict(out.backbone_kwargs or {}),
            classifier_kwargs=dict(out.classifier_kwargs or {}),
        )

    def tiling_and_classifier(self) -> dict[str, Any]:
        """The fields a model spec records as given (beside the branch fields)."""
        return {
            "classifier": self.classifier,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "classifier_kwargs": self.classifier_kwargs,
        }
