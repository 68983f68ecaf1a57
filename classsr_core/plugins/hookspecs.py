"""The extension points of classsr.

Every hook receives a ``register(name, factory, **metadata)`` callback, in the style of
simonw/llm: a plugin calls it once per thing it provides. The metadata each kind expects is
documented on its hook and in docs/plugins.md.
"""

from __future__ import annotations

import pluggy

PROJECT = "classsr"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def classsr_register_backbones(register):
    """Register networks: ``register(name, factory, width_arg=..., depth_arg=..., scales=...)``.

    ``factory(scale=..., in_channels=..., **kwargs)`` returns an ``nn.Module`` mapping
    ``(N, C, h, w)`` to ``(N, C, scale*h, scale*w)``. A name ending in ``:`` registers a
    family (``basicsr:``): its metadata carries ``resolve(full_name) -> (factory, metadata)``.
    """


@hookspec
def classsr_register_branch_generators(register):
    """Register branch generators: ``register(name, factory)``.

    ``factory(values, width_arg=..., depth_arg=...)`` returns one kwargs dict per branch,
    cheapest first.
    """


@hookspec
def classsr_register_tasks(register):
    """Register tasks: ``register(name, factory, config_model=...)``.

    ``factory(**options)`` returns a :class:`classsr_core.tasks.Task`.
    """


@hookspec
def classsr_register_classifiers(register):
    """Register classifiers: ``register(name, factory)``.

    ``factory(num_classes=..., in_channels=..., patch_size=...)`` returns an ``nn.Module``
    mapping ``(N, C, p, p)`` patches to ``(N, M)`` logits.
    """


@hookspec
def classsr_register_routers(register):
    """Register routers: ``register(name, factory, description=...)``.

    ``factory()`` returns a :class:`classsr_core.routing.base.Router`: it scores every LR
    patch for every branch (``score(run) -> Scores``), says what routing costs
    (``cost(model, patch_size)``) and checks a model (``check(model)``). A router with
    calibrated state sets ``state_type`` (a class with ``to_dict`` / ``from_dict``); the
    state lives in ``model.router_states[name]`` and checkpoints carry it.
    """


@hookspec
def classsr_register_executors(register):
    """Register execution modes: ``register(name, factory, description=...)``.

    ``factory()`` returns a :class:`classsr_core.execution.base.Executor`: it runs each
    branch on the patches routed to it and stitches the output (``execute(run, assign)``).
    ``infer(mode=name)`` and ``--mode name`` select it.
    """
