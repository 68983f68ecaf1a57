"""``timm:<model>``: any timm image model as the patch classifier.

Built with ``timm.create_model(name, pretrained=False, num_classes=M, in_chans=C)``, trained
from scratch like the paper's Class-Module. Models with global pooling work on 32x32
patches (``timm:resnet10t``, ``timm:mobilenetv3_small_050``); ones with a fixed input size
(most ViTs) need ``classifier_kwargs={"img_size": 32}``. timm is imported only here, when
such a name is resolved. Note the cost: resnet10t has 4.9M parameters, the Class-Module 60K.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from classsr_core import hookimpl
from classsr_core.errors import InputError, PluginError

PREFIX = "timm:"


def resolve(full_name: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``timm:resnet10t`` -> (factory, metadata). Imports timm."""
    import timm

    model_name = full_name[len(PREFIX) :]
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise PluginError(f"timm has no model {model_name!r}.{hint} See timm.list_models().")

    def factory(num_classes: int, in_channels: int = 3, patch_size: int = 32, **kw):
        try:
            return timm.create_model(
                model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw
            )
        except TypeError as exc:
            raise InputError(
                f"timm:{model_name} cannot be built with {sorted(kw)} ({exc}); check "
                "classifier_kwargs"
            ) from None

    factory.__name__ = f"timm_{model_name}"
    return factory, {"timm_model": model_name}


def _family(*args, **kwargs):
    raise InputError("name a timm model after the prefix, e.g. 'timm:resnet10t'")


@hookimpl
def classsr_register_classifiers(register):
    register(PREFIX, _family, resolve=resolve)
