"""FLOPs and parameters, measured with fvcore on the real modules, in two conventions.

``fvcore``
    One multiply-add counts as one flop (fvcore's own rule). A transposed convolution is
    counted at its *input* size, which is what it really computes.
``paper``
    ClassSR's table: 2 x multiply-adds, and a transposed convolution counted as if it were
    a convolution with the same kernel at its *output* (HR) size. For FSRCNN this inflates
    the last layer about 16-fold (x4) and the whole network about 19-fold.

Every operator a traced module runs falls in one of four groups:

* multiply-add ops (convolutions, linear layers, matrix products, norms, interpolation,
  pooling, ``mean``): counted in ``flops``;
* element-wise ops (``add``, ``mul``, activations such as ``prelu`` / ``leaky_relu`` /
  ``sigmoid``, ...): no multiply-adds; one op per output element, reported apart as
  ``elementwise`` so that the reference numbers (conv + linear cost) stay comparable;
* data movement (``pixel_shuffle``, padding, copies): zero, on purpose;
* anything else: listed in ``unsupported`` with its call count, and warned about, so that
  an unknown op carrying real work is never silently counted as zero.

fvcore is imported inside the functions: ``import classsr_core`` stays light.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from classsr_core.errors import InputError

CONVENTIONS = ("fvcore", "paper")

# fvcore handles these in its defaults; we keep its rules (so numbers match plain fvcore)
# and only replace the convolution handler to implement the paper convention.
_ELEMENTWISE_OPS = (
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "neg",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "pow",
    "reciprocal",
    "prelu",
    "leaky_relu",
    "relu",
    "relu6",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardsigmoid",
    "hardswish",
    "softplus",
    "softmax",
    "log_softmax",
    "clamp",
    "clamp_min",
    "clamp_max",
    "maximum",
    "minimum",
    "where",
    "max_pool2d",
    "addcmul",
    "lerp",
    # comparisons: one op per element (a transformer's attention mask: SwinIR's `!= 0`)
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
)
# Pure data movement: zero arithmetic. Listed explicitly so they are not "unsupported".
_MOVEMENT_OPS = (
    "pixel_shuffle",
    "pixel_unshuffle",
    "reflection_pad2d",
    "replication_pad2d",
    "pad",
    "repeat",
    "flip",
    "clone",
    "expand_as",
    "view_as",
    "unfold",
    "im2col",
    "col2im",
    "channel_shuffle",
    "flatten",
    "dropout",
    "feature_dropout",
    "alias",
    "lift_fresh",
    "ones_like",
    "rand_like",
    "randn_like",
    "empty_like",
    "detach_",
    "fill_",
    "zero_",
    "tensor",
)

# (module weakref) -> {(fingerprint, shape, convention): FlopReport}
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, FlopReport]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FlopReport:
    """The cost of one forward call of a module on a tensor of ``input_shape``."""

    convention: str
    input_shape: tuple[int, ...]
    flops: float  # in the convention: multiply-adds (fvcore) or 2 x multiply-adds (paper)
    multiply_adds: float  # before the paper's factor 2 (transposed convs per convention)
    by_operator: dict[str, float] = field(default_factory=dict)  # multiply-adds per op
    elementwise: float = 0.0  # element-wise ops (not multiply-adds), one per output element
    unsupported: dict[str, int] = field(default_factory=dict)  # op name -> calls


def clear_cache() -> None:
    """Forget every cached count (e.g. after editing a module's layers in place)."""
    _CACHE.clear()


def count_params(module: nn.Module | None) -> int:
    """Number of parameters (shared ones once; buffers such as BN statistics excluded)."""
    if module is None:
        return 0
    return int(sum(p.numel() for p in module.parameters()))


def count_flops(
    module: nn.Module, input_shape: tuple[int, ...], convention: str = "fvcore"
) -> float:
    """FLOPs of one forward call on a tensor of ``input_shape`` in ``convention``.

    ``input_shape`` is the full shape, batch included (``(1, C, H, W)`` for one patch).
    Counts are cached per module, architecture, shape and convention. Unsupported ops
    are warned about once; :func:`flop_report` names them.
    """
    return flop_report(module, input_shape, convention).flops


def flop_report(
    module: nn.Module, input_shape: tuple[int, ...], convention: str = "fvcore"
) -> FlopReport:
    """Full :class:`FlopReport` (flops, per-op split, element-wise ops, unsupported ops)."""
    if convention not in CONVENTIONS:
        raise InputError(f"unknown FLOPs convention {convention!r}; use one of {CONVENTIONS}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise InputError(
            f"input_shape must be a full tensor shape such as (1, C, H, W), got {input_shape}"
        )
    key = (_fingerprint(module), shape, convention)
    per_module = _CACHE.setdefault(module, {})
    if key not in per_module:
        # A weight-sharing branch runs a meta-device template that tracing cannot copy:
        # count a standalone copy of it instead (same layers, same shapes).
        standalone = module.as_module() if hasattr(module, "as_module") else module
        report = _trace_count(standalone, shape, convention)
        if report.unsupported:
            names = ", ".join(f"{k} (x{v})" for k, v in sorted(report.unsupported.items()))
            warnings.warn(
                f"FLOPs of {type(module).__name__} leave out ops fvcore cannot count: {names}; "
                "register a handler in classsr_core.base.flops if they carry real work",
                stacklevel=3,
            )
        per_module[key] = report
    return per_module[key]


def model_costs(
    model: nn.Module, patch_size: int | None = None, convention: str = "fvcore"
) -> dict[str, Any]:
    """Per-patch cost of a :class:`~classsr_core.wrapper.ClassWrapper`'s parts.

    Returns ``{"convention", "patch", "scale", "classifier": {"flops", "params"},
    "branches": [{"width", "depth", "flops", "params"}, ...], "unsupported": {...}}``.
    A single-branch model has no classifier: its entry is ``{"flops": 0.0, "params": 0}``.
    """
    patch = int(patch_size or model.patch_size)
    shape = (1, model.in_channels, patch, patch)
    unsupported: Counter[str] = Counter()
    classifier = {"flops": 0.0, "params": 0}
    if model.classifier is not None:
        rep = flop_report(model.classifier, shape, convention)
        unsupported.update(rep.unsupported)
        classifier = {"flops": rep.flops, "params": count_params(model.classifier)}
    widths, depths = _branch_labels(model)
    branches = []
    for i, branch in enumerate(model.branches):
        rep = flop_report(branch, shape, convention)
        unsupported.update(rep.unsupported)
        branches.append(
            {
                "width": widths[i],
                "depth": depths[i],
                "flops": rep.flops,
                "params": count_params(branch),
            }
        )
    return {
        "convention": convention,
        "patch": patch,
        "scale": model.scale,
        "classifier": classifier,
        "branches": branches,
        "unsupported": dict(unsupported),
    }


# -- internals -----------------------------------------------------------------------------


def _branch_labels(model) -> tuple[list, list]:
    n = len(model.branches)
    spec = getattr(model, "spec", None) or {}
    if "widths" in spec:
        return list(spec["widths"]), [None] * n
    if "depths" in spec:
        return [None] * n, list(spec["depths"])
    if "width_depths" in spec:
        return [w for w, _ in spec["width_depths"]], [d for _, d in spec["width_depths"]]
    return [None] * n, [None] * n


def _fingerprint(module: nn.Module) -> tuple:
    # Architecture, not weights: a layer replaced in place changes the key.
    return tuple((name, type(m).__qualname__, m.extra_repr()) for name, m in module.named_modules())


def _shape(value) -> list[int] | None:
    return value.type().sizes() if value.isCompleteTensor() else None


def _conv_handler(convention: str):
    def handle(inputs, outputs) -> Counter:
        x_shape, w_shape = _shape(inputs[0]), _shape(inputs[1])
        out_shape = _shape(outputs[0])
        transposed = bool(inputs[6].toIValue())
        # fvcore: a transposed conv costs prod(kernel) per *input* pixel. The paper counted
        # FSRCNN's as a same-kernel conv over the *output* pixels.
        spatial = x_shape[2:] if transposed and convention == "fvcore" else out_shape[2:]
        flops = x_shape[0] * math.prod(w_shape) * math.prod(spatial)
        return Counter({"conv_transpose" if transposed else "conv": flops})

    return handle


def _per_input_element(inputs, outputs) -> float:
    return float(math.prod(_shape(inputs[0])))


def _per_output_element(scale: float):
    def handle(inputs, outputs) -> float:
        return scale * math.prod(_shape(outputs[0]))

    return handle


def _avg_pool_handler(inputs, outputs) -> float:
    # kernel x kernel adds per output value; the kernel may only be known at trace time as
    # a list of constants, and if not at all, count one add per input value instead.
    kernel = _int_list(inputs[1])
    if not kernel or any(k is None for k in kernel):
        return _per_input_element(inputs, outputs)
    if len(kernel) == 1:
        kernel = kernel * 2
    return float(math.prod(_shape(outputs[0])) * math.prod(kernel))


def _int_list(value) -> list | None:
    v = value.toIValue()
    if v is None and value.node().kind() == "prim::ListConstruct":
        v = [i.toIValue() for i in value.node().inputs()]
    if isinstance(v, int):
        v = [v]
    return list(v) if isinstance(v, (list, tuple)) else None


def _elementwise_handler(name: str):
    def handle(inputs, outputs) -> Counter:
        shape = _shape(outputs[0])
        return Counter({f"elementwise:{name}": math.prod(shape) if shape else 0})

    return handle


def _zero_handler(inputs, outputs) -> Counter:
    return Counter()


def _handlers(convention: str) -> dict[str, Any]:
    handlers: dict[str, Any] = {
        "aten::_convolution": _conv_handler(convention),
        # Reductions and resampling that fvcore does not know, with its own rules for the
        # ones it does: adaptive_avg_pool2d is one op per input element, so is mean.
        "aten::mean": _per_input_element,
        "aten::sum": _per_input_element,
        "aten::avg_pool2d": _avg_pool_handler,
        "aten::upsample_bicubic2d": _per_output_element(16),  # 4x4 taps per output
        "aten::upsample_nearest2d": _per_output_element(0),
        "aten::upsample_bilinear2d": _per_output_element(4),  # 2x2 taps, as fvcore
    }
    for op in _ELEMENTWISE_OPS:
        handlers[f"aten::{op}"] = _elementwise_handler(op)
        handlers[f"aten::{op}_"] = _elementwise_handler(op)
    for op in _MOVEMENT_OPS:
        handlers[f"aten::{op}"] = _zero_handler
        handlers[f"aten::{op}_"] = _zero_handler
    return handlers


def _param_like(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _trace_count(module: nn.Module, shape: tuple[int, ...], convention: str) -> FlopReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation, on import
        from fvcore.nn import FlopCountAnalysis

    device, dtype = _param_like(module)
    x = torch.zeros(shape, device=device, dtype=dtype)
    # Inference cost: BatchNorm in eval, dropout off. Each submodule's flag is restored
    # (module.train(flag) would also flip frozen submodules that a caller keeps in eval).
    was_training = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        # Tracing fails under inference_mode; a caller inside one still gets its count.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation / tracer chatter
            analysis = FlopCountAnalysis(module, (x,))
            analysis.set_op_handle(**_handlers(convention))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            by_op = dict(analysis.by_operator())
            unsupported = dict(analysis.unsupported_ops())
    except Exception as exc:
        raise InputError(
            f"cannot count FLOPs of {type(module).__name__} on input {shape}: fvcore's trace "
            f"failed ({type(exc).__name__}: {exc}). Check the shape (channels, size) the "
            "module takes; it must also be traceable with torch.jit.trace (tensors in and out)"
        ) from exc
    finally:
        for m, flag in was_training:
            m.training = flag
    elementwise = float(sum(v for k, v in by_op.items() if k.startswith("elementwise:")))
    macs = {k: float(v) for k, v in by_op.items() if not k.startswith("elementwise:")}
    multiply_adds = float(sum(macs.values()))
    factor = 2.0 if convention == "paper" else 1.0
    return FlopReport(
        convention=convention,
        input_shape=shape,
        flops=factor * multiply_adds,
        multiply_adds=multiply_adds,
        by_operator=macs,
        elementwise=elementwise,
        unsupported=unsupported,
    )
