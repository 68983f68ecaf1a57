"""Weight-sharing branches: one supernet's storage, every branch a leading slice of it."""

import pytest
import torch
from torch import nn

from classsr_core.checkpoint import load_model
from classsr_core.errors import InputError
from classsr_core.wrapper import ClassWrapper


def _params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone,widths", [("fsrcnn", [16, 36, 56]), ("srresnet", [16, 24, 32])])
def test_param_count_is_widest_plus_classifier(backbone, widths):
    kwargs = {"backbone_kwargs": {"nb": 2}} if backbone == "srresnet" else {}
    shared = ClassWrapper(backbone, widths=widths, scale=4, shared_weights=True, **kwargs)
    widest = ClassWrapper(backbone, widths=widths[-1:], scale=4, **kwargs)
    assert _params(shared) == _params(widest) + _params(shared.classifier)


def test_branches_share_storage_and_gradients():
    model = ClassWrapper("fsrcnn", widths=[16, 36, 56], scale=4, shared_weights=True)
    supernet = model.branches[-1]
    for branch in model.branches[:-1]:
        for name, t in branch.sliced_state().items():
            big = dict(supernet.named_parameters()).get(name)
            if big is not None and t.dim():
                assert t.untyped_storage().data_ptr() == big.untyped_storage().data_ptr()
    x = torch.rand(2, 3, 32, 32)
    model.branches[0](x).mean().backward()
    first = supernet.head_conv[0].weight.grad
    assert first[:16].abs().sum() > 0 and first[16:].abs().sum() == 0


def test_sliced_branch_equals_a_narrow_network_with_copied_weights():
    model = ClassWrapper("fsrcnn", widths=[16, 56], scale=4, shared_weights=True).eval()
    narrow = ClassWrapper("fsrcnn", widths=[16], scale=4).branches[0].eval()
    narrow.load_state_dict(model.branches[0].sliced_state())
    x = torch.rand(3, 3, 20, 20)
    with torch.no_grad():
        assert torch.allclose(model.branches[0](x), narrow(x), atol=1e-6)


def test_save_and_load_roundtrip(tmp_path):
    model = ClassWrapper("fsrcnn", widths=[16, 36, 56], scale=4, shared_weights=True).eval()
    model.save(tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors", device="cpu")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], again(x)[0])


def test_explicit_branches_cannot_share():
    with pytest.raises(InputError, match="shared_weights"):
        ClassWrapper(branches=[nn.Identity(), nn.Identity()], scale=1, shared_weights=True)


def test_flops_of_a_shared_branch_equal_the_separate_branch():
    from classsr_core.flops import count_flops

    shared = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, shared_weights=True)
    separate = ClassWrapper("fsrcnn", widths=[8, 16], scale=2)
    for a, b in zip(shared.branches, separate.branches):
        assert count_flops(a, (1, 3, 16, 16)) == count_flops(b, (1, 3, 16, 16)) > 0
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(shared.branches[0].as_module()(x), shared.branches[0](x))
