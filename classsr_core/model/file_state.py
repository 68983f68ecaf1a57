"""The weights of the model file being built, for a backbone that derives its architecture
from them (the ``spandrel`` backbone: a pretrained network's hyper-parameters are read off
its tensors' names and shapes, so the file records no class and no code).

:func:`load_model` and :func:`~classsr_core.model.pretrained.from_pretrained` build the
model inside :func:`providing`; a factory reads :func:`file_state`. Outside such a block it
is ``(None, None)``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_STATE: contextvars.ContextVar[tuple[str | None, dict[str, torch.Tensor] | None]] = (
    contextvars.ContextVar("classsr_file_state", default=(None, None))
)


@contextlib.contextmanager
def providing(state: dict[str, torch.Tensor], source: str) -> Iterator[None]:
    """Within this block, :func:`file_state` is ``(source, state)``."""
    token = _STATE.set((str(source), state))
    try:
        yield
    finally:
        _STATE.reset(token)


def file_state() -> tuple[str | None, dict[str, torch.Tensor] | None]:
    """``(source, state dict)`` of the model file being built, or ``(None, None)``."""
    return _STATE.get()
