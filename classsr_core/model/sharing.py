"""Weight-sharing branches: every branch is a width slice of one supernet.

Three separate networks cost two to three times the storage of one (the seed's second
weakness; ARM's answer). Here a branch of width w runs its own architecture (built on the
``meta`` device, so it holds no memory) with parameters that are views of the first w
channels of the widest network's: storage is the widest network's alone, and gradients of
every branch land in the one supernet.
"""

from __future__ import annotations

import torch
from torch import nn

from classsr_core.errors import InputError


class SlicedBranch(nn.Module):
    """A branch whose parameters and buffers are leading slices of ``supernet``'s."""

    def __init__(self, template: nn.Module, supernet: nn.Module) -> None:
        super().__init__()
        # Not registered as sub-modules: the wrapper owns the supernet, and the template
        # only describes shapes. Lists hide them from nn.Module's attribute registration.
        self._template = [template.to("meta")]
        self._supernet = [supernet]
        full = dict(supernet.named_parameters())
        full.update(supernet.named_buffers())
        for name, t in list(template.named_parameters()) + list(template.named_buffers()):
            if name not in full:
                raise InputError(f"shared weights: the supernet has no tensor {name!r}")
            big = full[name]
            if t.dim() != big.dim() or any(s > b for s, b in zip(t.shape, big.shape)):
                raise InputError(
                    f"shared weights: {name} of shape {tuple(t.shape)} is no leading slice of "
                    f"the widest network's {tuple(big.shape)}; this backbone cannot share weights"
                )

    @property
    def has_weights(self) -> bool:
        """Whether this slice holds any weights (width 0, the skip alone, holds none). Its
        ``parameters()`` are always empty: the weights belong to the supernet."""
        return any(True for _ in self._template[0].parameters())

    @property
    def supernet(self) -> nn.Module:
        """The widest network, whose leading slices this branch's weights are."""
        return self._supernet[0]

    def sliced_state(self) -> dict[str, torch.Tensor]:
        supernet = self._supernet[0]
        full = dict(supernet.named_parameters())
        full.update(supernet.named_buffers())
        template = self._template[0]
        out = {}
        for name, t in list(template.named_parameters()) + list(template.named_buffers()):
            big = full[name]
            out[name] = big[tuple(slice(0, s) for s in t.shape)] if t.dim() else big
        return out

    def as_module(self) -> nn.Module:
        """A standalone copy of this branch: the template's layers holding copies of the
        sliced weights (for tools that trace, such as the FLOPs counter)."""
        import copy

        supernet = self._supernet[0]
        device = next((t.device for t in supernet.parameters()), torch.device("cpu"))
        module = copy.deepcopy(self._template[0]).to_empty(device=device)
        module.load_state_dict({k: v.detach().clone() for k, v in self.sliced_state().items()})
        return module.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self._template[0]
        template.train(self.training)
        return torch.func.functional_call(template, self.sliced_state(), (x,))


def share_weights(branches: list[nn.Module]) -> list[nn.Module]:
    """Replace all but the widest branch by slices of it (cheapest first, widest last)."""
    supernet = branches[-1]
    return [SlicedBranch(b, supernet) for b in branches[:-1]] + [supernet]
