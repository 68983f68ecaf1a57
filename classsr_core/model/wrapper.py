"""ClassWrapper: a classifier and M branches of one backbone, cheapest first.

Training mode returns the soft mix ``sum_i p_i * branch_i(x)`` (the paper's eq. 1) and the
probabilities; eval mode routes each patch by argmax and runs every branch once, on the
batch of its own patches. Whole images go through :meth:`ClassWrapper.infer` (the tile
engine in :mod:`classsr_core.engine`, imported when first used: the model needs no engine,
and names no router, to be built, trained or saved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from classsr_core.checks import check_tiling
from classsr_core.errors import CheckpointError, InputError
from classsr_core.io.checkpoint import save_state
from classsr_core.io.official import load_official_into, official_kwargs
from classsr_core.model.builder import build_branches, build_classifier
from classsr_core.model.checks import check_routing_cost
from classsr_core.model.options import WrapperOptions

if TYPE_CHECKING:
    from classsr_core.engine import InferResult


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
        in_channels: image channels (3: RGB).
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
        options: all of the keywords above but ``backbone``, ``branches`` and
            ``trust_code`` as one :class:`~classsr_core.model.options.WrapperOptions`;
            keywords given beside it override its fields.
    """

    def __init__(
        self,
        backbone: str | Callable[..., nn.Module] | None = None,
        widths: Sequence[int] | None = None,
        *,
        branches: Sequence[nn.Module] | None = None,
        trust_code: bool = False,
        options: WrapperOptions | None = None,
        **keywords: Any,
    ) -> None:
        super().__init__()
        if widths is not None:
            keywords["widths"] = widths
        opts = WrapperOptions.merge(options, keywords)
        check_tiling(opts.patch_size, opts.stride)
        if opts.scale < 1 or int(opts.scale) != opts.scale:
            raise InputError(f"scale must be a positive integer, got {opts.scale}")
        opts = replace(opts, scale=int(opts.scale))
        self.scale = opts.scale
        self.in_channels = opts.in_channels
        self.patch_size = opts.patch_size
        self.stride = opts.stride

        if branches is not None:
            if backbone is not None:
                raise InputError("give either a backbone or explicit branches, not both")
            if not branches:
                raise InputError("branches is empty: give at least one module")
            if opts.shared_weights:
                raise InputError("shared_weights needs a backbone to slice, not explicit branches")
            self.branches = nn.ModuleList(branches)
            self.spec: dict[str, Any] | None = None  # explicit modules cannot be rebuilt
        else:
            built, self.spec = build_branches(backbone, opts, trust_code)
            self.branches = nn.ModuleList(built)

        self.num_classes = len(self.branches)
        self.classifier = build_classifier(
            opts.classifier,
            self.num_classes,
            opts.in_channels,
            opts.patch_size,
            opts.classifier_kwargs,
        )
        # Calibrated router state by router name (the edge table under "edge"), saved with
        # the model; and the router infer(router=None) uses, recorded in the checkpoint.
        self.router_states: dict[str, Any] = {}
        self.default_router: str | None = None
        # Options infer() takes from the model when the caller leaves them unset (a halo
        # measured to cost nothing visible, ...; model.defaults.KNOWN), saved with it.
        self.defaults: dict[str, Any] = {}
        check_routing_cost(self)

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
    def infer(self, image: np.ndarray | torch.Tensor, **options: Any) -> InferResult:
        """Run a whole image through the tile engine (:func:`classsr_core.engine.infer`,
        which lists the options).

        ``result.output`` is of the input's kind and layout, ``scale`` x larger: a uint8
        numpy array ``(H, W, C)`` / ``(H, W)`` in 0..255 gives a uint8 array out, rounded
        and clipped to 0..255; a float tensor ``(1, C, H, W)`` / ``(C, H, W)`` in [0, 1]
        gives a float tensor (same dtype and device) out, raw: not clipped, so values may
        overshoot [0, 1] a little; clamp before saving or comparing."""
        from classsr_core.engine import infer  # here: the model imports no engine module

        return infer(self, image, **options)

    @property
    def edge_table(self):
        """Deprecated alias of ``router_states["edge"]`` (the edge router's calibrated table,
        or ``None``), kept for code written before routers were plugins; a router's state
        lives in :attr:`router_states` under the router's name."""
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

    def upscale(
        self, image: np.ndarray | torch.Tensor, **options: Any
    ) -> tuple[np.ndarray | torch.Tensor, InferResult]:
        """``(output, result)``: the output image and the full :class:`InferResult`."""
        result = self.infer(image, **options)
        return result.output, result

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
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
        if self.defaults:
            meta["defaults"] = dict(self.defaults)
        save_state(self.state_dict(), path, meta)

    @classmethod
    def from_official(cls, path, arch: str, **kwargs) -> ClassWrapper:
        """Load an official ClassSR checkpoint (``.pth``, read with ``weights_only=True``);
        ``arch``: fsrcnn, carn, srresnet or rcan; ``kwargs`` go to the constructor (e.g.
        ``patch_size``, ``stride``)."""
        model = cls(**official_kwargs(arch, **kwargs))
        load_official_into(model, path, arch)
        return model.eval()

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> ClassWrapper:
        """A pretrained SR network file (``.pth`` / ``.safetensors`` that spandrel can read:
        ESRGAN, SwinIR, HAT, SPAN, ...) as a model of two branches, bicubic and the network,
        uncalibrated (every patch to the network); ``kwargs``: ``cheaper=[files]``,
        ``scale``, ``patch_size``, ``stride``, ``device``
        (:func:`classsr_core.model.pretrained.from_pretrained`, docs/bring-your-own.md)."""
        from classsr_core.model.pretrained import from_pretrained

        return from_pretrained(path, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, branches={self.num_classes}, "
            f"patch={self.patch_size}/{self.stride}"
        )
