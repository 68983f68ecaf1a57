"""Validated configuration: every YAML a user writes is read through a pydantic model.

Models forbid unknown keys, so a typo fails loudly with the key's path and the keys allowed
there. A plugin's own section (for example a task's options) is validated by the model the
plugin registered as ``config_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from classsr_core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every user-facing config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (to list its allowed keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = ", ".join(owner.model_fields) if owner else "see the docs"
            lines.append(f"  unknown key '{path}'; allowed keys here: {allowed}")
        else:
            lines.append(f"  '{path}': {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str = "config") -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with a readable message."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def load_yaml(path: str | Path) -> Any:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(model: type[M], path: str | Path) -> M:
    return validate(model, load_yaml(path), source=str(path))
