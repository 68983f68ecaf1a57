"""The base layer: the types every stage of a run shares and nothing above it defines.

- :mod:`~classsr_core.base.grid`: :class:`PatchGrid`, the LR patches covering an image;
- :mod:`~classsr_core.base.costs`: :class:`PatchCosts`, what routing and each branch cost;
- :mod:`~classsr_core.base.run`: :class:`Run`, one image's run (the LR image on its
  device, its grid and costs, the clocks).

It imports only the top-level helpers (``errors``, ``checks``, ``device``), never
``engine``, ``routing``, ``execution`` or ``model``: routers and executors import it, and
the engine, which orchestrates them, sits above all three (docs/architecture.md). The old
paths (``classsr_core.engine.run``, ``.grid``, ``.costs``) re-export these names.
"""
