"""The model spec: everything that rebuilds a ClassWrapper, in one pydantic model.

The wrapper records it (``model.spec``), checkpoints carry it and are validated against it
on load (an unknown key is refused, not passed on), and a training config's ``model``
section is the same model with the scale left to the task.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from classsr_core.config import StrictModel, validate
from classsr_core.errors import CheckpointError, ConfigError


class ModelSpec(StrictModel):
    """A ClassWrapper built from a backbone (explicit branch modules have no spec)."""

    backbone: str = Field(
        "fsrcnn",
        description="a registered backbone (see `classsr plugins`), or module:ClassName of "
        "your own class (needs trust_code / --trust-code: importing runs the module's code)",
    )
    widths: list[int] | None = Field(None, description="one width per branch, cheapest first")
    depths: list[int] | None = Field(None, description="one depth per branch, cheapest first")
    width_depths: list[list[int]] | None = Field(None, description="(width, depth) per branch")
    scale: int | None = Field(4, ge=1, description="upscaling factor (1: denoise, deblock)")
    classifier: str = Field("classsr", description="a registered classifier (or timm:<model>)")
    in_channels: int = Field(3, ge=1)
    patch_size: int = Field(32, ge=1, description="LR patch size of the tile engine")
    stride: int = Field(28, ge=1, description="LR patch stride of the tile engine")
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    classifier_kwargs: dict[str, Any] = Field(default_factory=dict)
    shared_weights: bool = Field(
        False,
        description="one supernet; branch i is a width slice of the widest (stage 1 samples "
        "a width per step)",
    )
    generator: str | None = Field(
        None,
        description="a registered branch generator to read the widths with (e.g. aligned_width)",
    )
    width_arg: str | None = Field(
        None, description="the backbone's width keyword (registered backbones declare it)"
    )
    depth_arg: str | None = Field(
        None, description="the backbone's depth keyword (registered backbones declare it)"
    )

    @model_validator(mode="after")
    def _one_generator(self) -> ModelSpec:
        given = [k for k in ("widths", "depths", "width_depths") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of widths, depths or width_depths "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def num_branches(self) -> int:
        return len(self.widths or self.depths or self.width_depths or [])

    def wrapper_kwargs(self) -> dict[str, Any]:
        """Keywords of ``ClassWrapper`` (the backbone included), unset branch lists left out."""
        out = self.model_dump()
        for key in ("widths", "depths", "width_depths"):
            if out[key] is None:
                del out[key]
        if out["scale"] is None:
            del out["scale"]
        return out

    def record(self) -> dict[str, Any]:
        """The dict a checkpoint stores: optional keys only when they are set."""
        out = self.wrapper_kwargs()
        for key in ("generator", "width_arg", "depth_arg"):
            if out[key] is None:
                del out[key]
        return out


def spec_from_checkpoint(data: Any, source: str) -> ModelSpec:
    """Validate a checkpoint's model config; a key this version does not know (or that a
    file may not set, such as ``trust_code``) is refused with its name."""
    if isinstance(data, dict) and "trust_code" in data:  # consent is the caller's to give
        raise CheckpointError(f"{source}: its model config sets trust_code; refused")
    try:
        return validate(ModelSpec, data, f"{source} (model config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
