"""ClassWrapper: a classifier and M branches of one backbone, cheapest first.

Training mode returns the soft mix ``sum_i p_i * branch_i(x)`` (the paper's eq. 1) and the
probabilities; eval mode routes each patch by argmax and runs every branch once, on the
batch of its own patches. Whole images go through :meth:`ClassWrapper.infer` (the tile
engine in :mod:`classsr_core.engine`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from classsr_core.checks import check_increasing, check_tiling
from classsr_core.engine import InferResult, infer
from classsr_core.errors import CheckpointError, InputError
from classsr_core.io.checkpoint import save_state
from classsr_core.io.official import load_official_into, official_kwargs
from classsr_core.model.sharing import share_weights
from classsr_core.model.spec import ModelSpec
from classsr_core.plugins.registry import import_code, is_code_reference, lookup, resolve

# Which branch generator a keyword of ClassWrapper selects.
_GENERATOR_KEYWORDS = {"widths": "width", "depths": "depth", "width_depths": "width_depth"}


class ClassWrapper(nn.Module):
    """Wrap a backbone into a ClassSR model.

    Args:
        backbone: a registered backbone name (see ``classsr plugins``), or any ``nn.Module``
            class / callable that takes the width as the keyword ``width_arg``.
        widths: one width per branch, increasing (the ``width`` generator).
        depths: one block count per branch (the ``depth`` generator).
        width_depths: ``(width, depth)`` pairs (the ``width_depth`` generator).
        scale: upscaling factor (1 for denoising / deblocking).
        classifier: a registered classifier name (``classsr`` or ``timm:<model>``).
        width_arg, depth_arg: the backbone's keyword names; registered backbones declare them.
        branches: explicit branch modules instead of a backbone.
        patch_size, stride: the tiling used by :meth:`infer` (32 / 28 as the paper).
        shared_weights: build one supernet; branch i uses the leading channels of the widest
            network's layers (see :mod:`classsr_core.model.sharing`).
        generator: a registered branch generator to read ``widths`` / ``depths`` /
            ``width_depths`` with instead of the plain one (e.g. ``"aligned_width"``, or a
            plugin's own).
        backbone_kwargs, classifier_kwargs: passed on to the factories.
        trust_code: allow ``backbone`` to be a ``"module:qualname"`` string, which imports
            that module and so runs its code. Without it only registered names (and
            classes you pass yourself) are accepted; see docs/safety.md.
    """

    def __init__(
        self,
        backbone: str | Callable[..., nn.Module] | None = None,
        widths: Sequence[int] | None = None,
        *,
        depths: Sequence[int] | None = None,
        width_depths: Sequence[Sequence[int]] | None = None,
        scale: int = 4,
        classifier: str = "classsr",
        width_arg: str | None = None,
        depth_arg: str | None = None,
        branches: Sequence[nn.Module] | None = None,
        in_channels: int = 3,
        patch_size: int = 32,
        stride: int = 28,
        backbone_kwargs: dict[str, Any] | None = None,
        classifier_kwargs: dict[str, Any] | None = None,
        shared_weights: bool = False,
        generator: str | None = None,
        trust_code: bool = False,
    ) -> None:
        super().__init__()
        check_tiling(patch_size, stride)
        if scale < 1 or int(scale) != scale:
            raise InputError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.stride = stride
        backbone_kwargs = dict(backbone_kwargs or {})
        classifier_kwargs = dict(classifier_kwargs or {})

        if branches is not None:
            if backbone is not None:
                raise InputError("give either a backbone or explicit branches, not both")
            if not branches:
                raise InputError("branches is empty: give at least one module")
            if shared_weights:
                raise InputError("shared_weights needs a backbone to slice, not explicit branches")
            self.branches = nn.ModuleList(branches)
            self.spec: dict[str, Any] | None = None  # explicit modules cannot be rebuilt
        else:
            if backbone is None:
                raise InputError("ClassWrapper needs a backbone name or class, or branches=[...]")
            factory, meta, backbone_name = _resolve_backbone(
                backbone, width_arg, depth_arg, trust_code
            )
            keyword_gen, values = _pick_generator(widths, depths, width_depths)
            gen_name = generator or keyword_gen
            scales = meta.get("scales")
            if scales is not None and self.scale not in scales:
                raise InputError(
                    f"backbone {backbone_name!r} cannot upscale by {self.scale}; "
                    f"it supports scales {sorted(scales)}"
                )
            gen = lookup("branch_generators", gen_name).factory
            branch_kwargs = gen(
                values, width_arg=meta.get("width_arg"), depth_arg=meta.get("depth_arg")
            )
            built = [
                _call_factory(factory, self.scale, in_channels, {**backbone_kwargs, **kw})
                for kw in branch_kwargs
            ]
            if scales is None:  # an unregistered class: check what it really does
                _probe_scale(built[0], self.scale, in_channels, backbone_name)
            if shared_weights:
                built = share_weights(built)
            self.branches = nn.ModuleList(built)
            code_ref = not isinstance(backbone, str) or is_code_reference(backbone)
            spec = ModelSpec(
                backbone=backbone_name,
                **{gen_name_to_keyword(keyword_gen): _plain(values)},
                scale=self.scale,
                classifier=classifier,
                in_channels=in_channels,
                patch_size=patch_size,
                stride=stride,
                backbone_kwargs=backbone_kwargs,
                classifier_kwargs=classifier_kwargs,
                shared_weights=shared_weights,
                generator=generator or None,
                # a rebuild of one's own class needs them; a registered one declares them
                width_arg=width_arg if code_ref or width_arg or depth_arg else None,
                depth_arg=depth_arg if code_ref or width_arg or depth_arg else None,
            )
            self.spec = spec.record()

        self.num_classes = len(self.branches)
        if self.num_classes > 1:
            factory, _ = resolve("classifiers", classifier)
            self.classifier: nn.Module | None = factory(
                num_classes=self.num_classes,
                in_channels=in_channels,
                patch_size=patch_size,
                **classifier_kwargs,
            )
        else:  # one branch is the plain "-O" network: nothing to route
            self.classifier = None
        # Calibrated router state by router name (the edge table under "edge"), saved with
        # the model; and the router infer(router=None) uses, recorded in the checkpoint.
        self.router_states: dict[str, Any] = {}
        self.default_router: str | None = None
        __import__("classsr_core.model.checks", fromlist=["_"]).check_routing_cost(self)

    # -- patches -----------------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, M)`` for patches ``(N, C, p, p)``."""
        if self.classifier is None:
            return x.new_zeros(x.shape[0], 1)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: ``(soft mix, probs)``. Eval: ``(hard-routed output, classes)``."""
        logits = self.classify(x)
        if self.training:
            probs = logits.softmax(dim=1)
            out = sum(probs[:, i, None, None, None] * b(x) for i, b in enumerate(self.branches))
            return out, probs
        classes = logits.argmax(dim=1)
        return self.run_routed(x, classes), classes

    def run_routed(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Run each branch once, on the batch of patches routed to it."""
        n, c, h, w = x.shape
        out = x.new_empty(n, c, h * self.scale, w * self.scale)
        for i, branch in enumerate(self.branches):
            idx = (classes == i).nonzero(as_tuple=True)[0]
            if idx.numel():
                out[idx] = branch(x[idx])
        return out

    # -- images ------------------------------------------------------------------------
    def infer(self, image, **options) -> InferResult:
        """Run a whole image through the tile engine (:func:`classsr_core.engine.infer`).

        A uint8 numpy image in gives a uint8 image out (rounded, clipped); a float tensor in
        [0, 1] gives a float tensor out, raw (not clipped)."""
        return infer(self, image, **options)

    @property
    def edge_table(self):
        """The edge router's calibrated table (``router_states["edge"]``), or ``None``."""
        return self.router_states.get("edge")

    @edge_table.setter
    def edge_table(self, table) -> None:
        if table is None:
            self.router_states.pop("edge", None)
        else:
            self.router_states["edge"] = table

    def compile_branches(self, **options) -> ClassWrapper:
        """``torch.compile`` the classifier and every branch in place (state dict keys
        unchanged); ``options`` go to ``torch.compile`` (default ``dynamic=True``: patch
        batches and region tiles vary in size). Pays off on GPUs; on this project's CPU it
        compiled for a minute and ran no faster (docs/performance.md)."""
        options.setdefault("dynamic", True)
        for module in [*self.branches, *([self.classifier] if self.classifier else [])]:
            module.compile(**options)
        return self

    def upscale(self, image, **options):
        """``(output, result)``: the output image and the full :class:`InferResult`."""
        result = self.infer(image, **options)
        return result.output, result

    # -- persistence -------------------------------------------------------------------
    def save(self, path, extra: dict[str, Any] | None = None) -> None:
        """Write weights, the config that rebuilds the model, each router's state and the
        default router, atomically (safetensors; ``extra`` adds metadata)."""
        if self.spec is None:
            raise CheckpointError(
                "this model was built from explicit branch modules and cannot be rebuilt from "
                "a config; save its state_dict with safetensors instead"
            )
        backbone = str(self.spec["backbone"])
        if backbone.startswith("__main__:") or "<locals>" in backbone:
            raise CheckpointError(
                f"the backbone {backbone} is defined in a script or a function, so no later "
                "process could rebuild it from the file. Define it in an importable module "
                "(and load with trust_code=True) or, better, register it as a plugin "
                "(docs/plugins.md)"
            )
        meta = {"model": self.spec, **(extra or {})}
        if self.router_states:
            meta["routers"] = {name: st.to_dict() for name, st in self.router_states.items()}
        if self.default_router:
            meta["default_router"] = self.default_router
        save_state(self.state_dict(), path, meta)

    @classmethod
    def from_official(cls, path, arch: str, **kwargs) -> ClassWrapper:
        """Load an official ClassSR checkpoint (``.pth``, read with ``weights_only=True``);
        ``arch``: fsrcnn, carn, srresnet or rcan; ``kwargs`` go to the constructor (e.g.
        ``patch_size``, ``stride``)."""
        model = cls(**official_kwargs(arch, **kwargs))
        load_official_into(model, path, arch)
        return model.eval()

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, branches={self.num_classes}, "
            f"patch={self.patch_size}/{self.stride}"
        )


def gen_name_to_keyword(gen_name: str) -> str:
    return {v: k for k, v in _GENERATOR_KEYWORDS.items()}[gen_name]


def _pick_generator(widths, depths, width_depths) -> tuple[str, list]:
    given = {
        k: v
        for k, v in {"widths": widths, "depths": depths, "width_depths": width_depths}.items()
        if v is not None
    }
    if len(given) != 1:
        raise InputError(
            "give exactly one of widths=[...], depths=[...] or width_depths=[(w, d), ...] "
            f"(got {', '.join(given) or 'none'})"
        )
    keyword, values = next(iter(given.items()))
    values = list(values)
    if keyword == "width_depths":
        if not values:
            raise InputError("width_depths is empty: give at least one (width, depth) pair")
        costs = [tuple(v) for v in values]
        if any(len(v) != 2 for v in costs):
            raise InputError(f"width_depths must be (width, depth) pairs, got {values}")
    else:
        check_increasing(values, keyword)
    return _GENERATOR_KEYWORDS[keyword], values


def _resolve_backbone(backbone, width_arg, depth_arg, trust_code: bool):
    if isinstance(backbone, str) and is_code_reference(backbone):
        factory = import_code(backbone, "backbone", trust_code)
        return factory, {"width_arg": width_arg, "depth_arg": depth_arg, "scales": None}, backbone
    if isinstance(backbone, str):
        factory, meta = resolve("backbones", backbone)
        if width_arg:
            meta["width_arg"] = width_arg
        if depth_arg:
            meta["depth_arg"] = depth_arg
        return factory, meta, backbone
    if not callable(backbone):
        raise InputError(f"backbone must be a registered name or a callable, got {backbone!r}")
    meta = {"width_arg": width_arg, "depth_arg": depth_arg, "scales": None}
    module = getattr(backbone, "__module__", "?")
    name = f"{module}:{getattr(backbone, '__qualname__', repr(backbone))}"
    return backbone, meta, name


def _call_factory(factory, scale: int, in_channels: int, kwargs: dict) -> nn.Module:
    """Call a backbone factory, passing scale / in_channels only where it takes them."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {}
    for key, value in (("scale", scale), ("in_channels", in_channels)):
        if key in params or takes_any:
            extra[key] = value
    if None in kwargs:
        raise InputError(
            "this backbone declares no width/depth argument; pass width_arg=... (or depth_arg=...)"
        )
    return factory(**extra, **kwargs)


@torch.no_grad()
def _probe_scale(module: nn.Module, scale: int, in_channels: int, name: str) -> None:
    x = torch.zeros(1, in_channels, 8, 8)
    was_training = module.training
    module.eval()
    try:
        y = module(x)
    finally:
        module.train(was_training)
    if y.shape[-2:] != (8 * scale, 8 * scale):
        raise InputError(
            f"backbone {name} maps 8x8 to {tuple(y.shape[-2:])}, not {8 * scale}x{8 * scale}: "
            f"it cannot upscale by {scale}; pass the scale argument it needs"
        )


def _plain(values):
    return [list(v) if isinstance(v, (tuple, list)) else v for v in values]
