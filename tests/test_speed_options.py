"""Engine options for speed: autocast and torch.compile."""

from __future__ import annotations

import pytest
import torch
from nets import TinyNet
from torch import nn

from classsr_core.errors import InputError
from classsr_core.model.wrapper import ClassWrapper


class DtypeRecorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seen: set[torch.dtype] = set()

    def forward(self, x):
        out = self.inner(x)
        if not torch.jit.is_tracing():
            self.seen.add(out.dtype)
        return out


@pytest.mark.parametrize("mode", ["patches", "regions"])
def test_amp_runs_branches_in_low_precision_and_returns_fp32(mode):
    torch.manual_seed(0)
    rec = DtypeRecorder(TinyNet(4, 2))
    model = ClassWrapper(branches=[TinyNet(2, 2), rec], scale=2, patch_size=8, stride=6).eval()
    x = torch.rand(1, 3, 20, 22, generator=torch.Generator().manual_seed(1))
    ref = model.infer(x, classes=torch.ones(12, dtype=torch.long), mode=mode, stride=6)
    rec.seen.clear()
    low = model.infer(x, classes=torch.ones(12, dtype=torch.long), mode=mode, stride=6, amp="bf16")
    assert rec.seen == {torch.bfloat16}
    assert low.output.dtype == torch.float32
    torch.testing.assert_close(low.output, ref.output, atol=0.05, rtol=0.05)
    with pytest.raises(InputError, match="amp must be"):
        model.infer(x, amp="fp8")


def test_compile_branches_keeps_the_checkpoint_layout():
    model = ClassWrapper("fsrcnn", widths=[4, 8], scale=2)
    keys = list(model.state_dict())
    assert model.compile_branches() is model
    assert list(model.state_dict()) == keys  # saved checkpoints stay loadable
    assert all(b._compiled_call_impl is not None for b in model.branches)
