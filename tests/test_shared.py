"""Weight-sharing branches: one supernet's storage, every branch a leading slice of it."""

import pytest
import torch
from torch import nn

from classsr_core.errors import InputError
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper


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
    from classsr_core.analysis.flops import count_flops

    shared = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, shared_weights=True)
    separate = ClassWrapper("fsrcnn", widths=[8, 16], scale=2)
    for a, b in zip(shared.branches, separate.branches):
        assert count_flops(a, (1, 3, 16, 16)) == count_flops(b, (1, 3, 16, 16)) > 0
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(shared.branches[0].as_module()(x), shared.branches[0](x))


@pytest.mark.parametrize("backbone", ["fsrcnn", "srresnet"])
def test_cut_widths_keeps_every_width_it_shares(backbone):
    from classsr_core.model.loading import cut_widths

    kwargs = {"backbone_kwargs": {"nb": 2}} if backbone == "srresnet" else {}
    torch.manual_seed(0)
    model = ClassWrapper(backbone, widths=[8, 12, 16, 24], scale=2, shared_weights=True, **kwargs)
    model.eval()
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        full = [b(x) for b in model.branches]
        cut = cut_widths(model, [8, 16])  # a narrower supernet: the leading 16 channels
        assert cut.spec["widths"] == [8, 16] and cut.spec["shared_weights"]
        assert torch.allclose(cut.branches[0](x), full[0], atol=1e-6)
        assert torch.allclose(cut.branches[1](x), full[2], atol=1e-6)
        same = cut_widths(model, [12, 24])
        assert torch.allclose(same.branches[0](x), full[1], atol=1e-6)
        assert torch.allclose(same.branches[1](x), full[3], atol=1e-6)
    assert _params(cut) < _params(model)


def test_cut_widths_needs_a_supernet_and_widths_inside_it():
    from classsr_core.model.loading import cut_widths

    separate = ClassWrapper("fsrcnn", widths=[8, 16], scale=2)
    with pytest.raises(InputError, match="shared-weight"):
        cut_widths(separate, [8])
    shared = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, shared_weights=True)
    with pytest.raises(InputError, match="0..16"):
        cut_widths(shared, [8, 32])
