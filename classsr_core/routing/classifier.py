"""The paper's router: the Class-Module's probabilities, argmax or within a budget."""

from __future__ import annotations

import torch

from classsr_core.base.flops import count_flops
from classsr_core.base.run import Run
from classsr_core.plugins.hookspecs import hookimpl
from classsr_core.routing.base import Router, Scores
from classsr_core.routing.budget import shortfall_utility

# The Class-Module is cheap and per-call overhead dominates: classify in larger batches
# (an LR batch of 256 patches of 32x32 is 3 MB).
MIN_CLASSIFY_BATCH = 128


class ClassifierRouter(Router):
    """Every patch through the model's classifier; no budget: argmax (the paper); a budget
    values each branch by minus the expected number of classes it falls short
    (:func:`~classsr_core.routing.budget.shortfall_utility`)."""

    name = "classifier"

    def cost(self, model, patch_size: int) -> float:
        if model.classifier is None:
            return 0.0
        return count_flops(model.classifier, (1, model.in_channels, patch_size, patch_size))

    def score(self, run: Run) -> Scores | None:
        model = run.model
        if model.classifier is None:
            return None
        n = run.num_patches
        chunks = []
        batch = max(*run.batch_sizes, MIN_CLASSIFY_BATCH)
        for start in range(0, n, batch):
            idx = torch.arange(start, min(start + batch, n), device=run.device)
            patches = run.patches(idx, model.classifier)  # in the classifier's dtype
            chunks.append(model.classify(patches).float().softmax(dim=1))
        probs = torch.cat(chunks)
        return Scores(
            probs.argmax(dim=1),
            lambda: shortfall_utility(probs.float().cpu().numpy()),
            probs=probs,
        )


@hookimpl
def classsr_register_routers(register):
    """Registered by the ``builtin_routers`` entry point (``classsr_plugins.routers.builtin``)."""
    register(
        "classifier",
        ClassifierRouter,
        description="the model's Class-Module (the paper); argmax, or a budget",
    )
