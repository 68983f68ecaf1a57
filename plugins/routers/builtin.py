"""The built-in routers, registered like any third-party router."""

from __future__ import annotations

from classsr_core import hookimpl


@hookimpl
def classsr_register_routers(register):
    from classsr_core.routing.classifier import ClassifierRouter
    from classsr_core.routing.edge import EdgeRouter

    register(
        "classifier",
        ClassifierRouter,
        description="the model's Class-Module (the paper); argmax, or a budget",
    )
    register(
        "edge",
        EdgeRouter,
        description="a calibrated table from each patch's edge score to every branch's "
        "expected error (after ARM); no classifier runs",
    )
