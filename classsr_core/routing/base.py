"""The router interface: score every LR patch for every branch; a policy then picks.

A router is a plugin kind (``classsr_register_routers``): the built-ins (``classifier``,
``edge``) register through the same entry points as a third-party router. A router with
calibrated state (the edge table) keeps it in ``model.router_states[name]``; checkpoints
save and load it under the router's name (``state_type`` with ``to_dict`` /
``from_dict``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from classsr_core.base.run import Run


class Scores:
    """A router's view of one image's ``N`` patches.

    ``default``: ``(N,)`` classes, the router's own routing when no budget is set.
    ``utility``: ``(N, M)``, higher is better: what each branch is expected to be worth on
    each patch, for the budget policy (given as an array, or a function computed on first
    use). ``probs``: classifier probabilities ``(N, M)``, reported in the result.
    ``tolerance_price``: for routers whose utility is minus an expected squared error
    calibrated against the widest branch: the price (utility per multiply-add per pixel)
    that keeps a ``tolerance`` in dB; ``None``: the router cannot honour ``tolerance=``.
    ``whole``: for routers whose choice on one patch depends on the whole image (a loss
    budget per image): builds the whole image's Scores from its ``(N, M)`` utility and its
    ``cells``, so a caller that scored the image in parts (the band engine) routes as on the
    whole image. ``cells``: per-patch numbers ``{name: (N,)}`` that ``whole`` needs beside
    the utility (the edge router: each patch's share of flat pixels); parts are joined
    patch by patch.
    """

    def __init__(
        self,
        default: torch.Tensor,
        utility: np.ndarray | Callable[[], np.ndarray],
        probs: torch.Tensor | None = None,
        tolerance_price: Callable[[float], float] | None = None,
        whole: Callable[[np.ndarray, dict[str, np.ndarray]], Scores] | None = None,
        cells: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.default = default
        self._utility = utility
        self.probs = probs
        self.tolerance_price = tolerance_price
        self.whole = whole
        self.cells = cells or {}

    @property
    def utility(self) -> np.ndarray:
        if callable(self._utility):
            self._utility = self._utility()
        return self._utility


class Router:
    """Base class of routers. Subclasses set ``name`` and implement :meth:`score`."""

    name: ClassVar[str] = ""
    # The class of the state this router keeps on the model (``None``: stateless).
    state_type: ClassVar[Any] = None

    def check(self, model) -> None:
        """Raise :class:`~classsr_core.errors.InputError` when ``model`` cannot be routed
        this way (a missing table, the wrong number of branches)."""

    def cost(self, model, patch_size: int) -> float:
        """Multiply-adds spent routing one ``patch_size`` patch (counted in the FLOPs)."""
        return 0.0

    def score(self, run: Run) -> Scores | None:
        """Scores for every patch of ``run.grid``; ``None`` when there is nothing to choose
        (a single-branch model)."""
        raise NotImplementedError

    def state(self, model) -> Any:
        """This router's state on ``model`` (``None`` if it has none)."""
        return getattr(model, "router_states", {}).get(self.name)
