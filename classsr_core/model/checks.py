"""Checks run when a :class:`~classsr_core.model.wrapper.ClassWrapper` is built.

:func:`check_routing_cost` warns (:class:`~classsr_core.errors.CostWarning`) when the
classifier eats what routing saves: with a small backbone the Class-Module's multiply-adds
per patch are no longer small against the branches'.
"""

from __future__ import annotations

import json
import warnings

from classsr_core.errors import CostWarning, InputError

# Tracing a branch with fvcore takes a fraction of a second for a small network and seconds
# for a deep one; a deep branch also dwarfs any classifier. Count only branches up to this
# many submodules (FSRCNN ~20, SRResNet-16 ~70, DnCNN-17 ~35; RCAN ~1,900).
MAX_MODULES = 200

# Counts by architecture: a model built again, as tests and training scripts do, is not
# traced again.
_VERDICTS: dict[str, tuple[float, tuple[float, ...]] | None] = {}


def routing_costs(model) -> tuple[float, tuple[float, ...]] | None:
    """fvcore multiply-adds of ``model``'s classifier and of each branch on one
    ``patch_size`` patch, or ``None`` where they are not counted: no classifier, a model on
    the meta device (training configs are validated so) or off the CPU, branches deeper than
    :data:`MAX_MODULES`, or a trace that fails or leaves ops uncounted. Counts go through
    :func:`~classsr_core.base.flops.count_flops`, whose cache the engine reads later."""
    if getattr(model, "classifier", None) is None or len(model.branches) < 2:
        return None
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta or t.device.type != "cpu" for t in tensors):
        return None
    key = _arch_key(model)
    if key in _VERDICTS:
        return _VERDICTS[key]
    costs = None
    if max(sum(1 for _ in b.modules()) for b in model.branches) <= MAX_MODULES:
        from classsr_core.base import flops

        shape = (1, model.in_channels, model.patch_size, model.patch_size)
        modules = [model.classifier, *model.branches]
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                counts = [float(flops.count_flops(m, shape)) for m in modules]
            costs = (counts[0], tuple(counts[1:]))
        except InputError:  # an untraceable plugin module: no verdict, no noise
            said, costs = [True], None
        if said:
            # count_flops warns once per module about ops it cannot count. Counts that leave
            # work out give no verdict; forget them so that the warning comes where the
            # costs are used (infer), as before.
            costs = None
            for m in modules:
                flops._CACHE.pop(m, None)
    _VERDICTS[key] = costs
    return costs


def check_routing_cost(model) -> None:
    """Warn with :class:`~classsr_core.errors.CostWarning` when routing ``model`` through its
    classifier cannot be expected to save compute.

    The rule: warn when the classifier's multiply-adds per patch are at least what routing
    saves per patch if the patches spread evenly over the branches, i.e. ``classifier >=
    widest - mean(branches)``. The real split depends on the images, so the even split
    stands for "no idea yet": below the line routing pays on typical photos (more so the
    more patches are smooth); above it, even an even split costs more than running the
    widest branch everywhere. A fixed share of the widest branch would flag the shipped
    ClassSR-FSRCNN models (the Class-Module is 15% of FSRCNN-56), which do save: the even
    split there saves 7.0M multiply-adds per 32x32 patch for a 3.8M classifier (54%); the
    ``-fast`` model (bicubic / 36 / 56) is at 36%. Small or close branches (an ESPCN or a
    10-layer DnCNN a few channels apart, branches of nearly one width) cross the line.

    Nothing is counted, and nothing said, where :func:`routing_costs` gives ``None``; a
    model costs each architecture one fvcore trace per process.
    """
    costs = routing_costs(model)
    if costs is None:
        return
    classifier, branches = costs
    if max(branches) <= 0:
        return
    saving = max(branches) - sum(branches) / len(branches)
    if classifier < saving:
        return
    share = f"{classifier / max(branches):.0%}"
    warnings.warn(
        f"the classifier costs {classifier / 1e6:.3g}M multiply-adds per "
        f"{model.patch_size}x{model.patch_size} patch ({share} of the widest branch), at least "
        f"what routing saves with an even split over the branches ({saving / 1e6:.3g}M): "
        "routing through it is likely slower than the widest branch alone. Route by the edge "
        "table instead (no classifier: `classsr calibrate`, router='edge'), use a cheaper "
        "classifier, or branches further apart (docs/plugins.md, 'When routing pays')",
        CostWarning,
        stacklevel=3,
    )


def _arch_key(model) -> str:
    """The architecture of ``model`` for :data:`_VERDICTS`: the spec that rebuilds it (when
    it has one) and every submodule's class and ``extra_repr`` (as the FLOPs cache keys its
    counts), at the patch size counted."""
    spec = getattr(model, "spec", None) or {}
    try:
        recipe = json.dumps({k: v for k, v in spec.items() if k != "stride"}, sort_keys=True)
    except TypeError:
        recipe = repr(sorted(spec.items(), key=str))
    parts = [recipe, str(model.patch_size), str(model.in_channels)]
    for module in (model.classifier, *model.branches):
        parts.append(
            "|".join(
                f"{name}:{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})"
                for name, m in module.named_modules()
            )
        )
    return "\n".join(parts)
