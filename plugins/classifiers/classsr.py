"""The paper's Class-Module as a classifier plugin."""

from __future__ import annotations

from classsr_core import hookimpl


def make_classsr_classifier(num_classes: int, in_channels: int = 3, patch_size: int = 32, **kw):
    from classsr_core.model.classifier import ClassModule

    if patch_size < 4:
        raise ValueError(f"the Class-Module needs patches of at least 4x4, got {patch_size}")
    return ClassModule(num_classes=num_classes, in_channels=in_channels, **kw)


@hookimpl
def classsr_register_classifiers(register):
    register("classsr", make_classsr_classifier)
