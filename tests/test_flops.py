"""FLOPs counting: both conventions on modules whose multiply-adds are computed by hand."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from nets import TinyNet
from torch import nn

from classsr_core.analysis import flops as F_
from classsr_core.analysis.flops import count_flops, count_params, flop_report, model_costs
from classsr_core.cli import main
from classsr_core.errors import InputError
from classsr_core.model.wrapper import ClassWrapper


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def tiny_macs(nf: int, scale: int, h: int, w: int) -> int:
    return h * w * (nf * 3 * 9) + h * w * (3 * scale * scale * nf * 9)


def test_conv_counts_output_pixels_times_kernel():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 10, 12)) == 10 * 12 * 8 * 3 * 9
    assert count_flops(conv, (1, 3, 10, 12), "paper") == 2 * 10 * 12 * 8 * 3 * 9


def test_grouped_strided_conv_and_batch():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    # output 8x8; each output value takes (4 / 2) x 3 x 3 multiply-adds; batch 2
    assert count_flops(conv, (2, 4, 16, 16)) == 2 * 8 * 8 * 8 * 2 * 9


def test_transposed_conv_input_size_vs_paper_output_size():
    deconv = nn.ConvTranspose2d(8, 3, 9, stride=4, padding=3, output_padding=1)
    # fvcore: every input pixel scatters a 9x9x3 kernel from each of its 8 channels
    assert count_flops(deconv, (1, 8, 10, 10)) == 10 * 10 * 8 * 3 * 81
    # paper: a 9x9 conv 8 -> 3 over the 40x40 output, times 2
    assert count_flops(deconv, (1, 8, 10, 10), "paper") == 2 * 40 * 40 * 8 * 3 * 81


def test_linear():
    assert count_flops(nn.Linear(48, 10), (2, 48)) == 2 * 48 * 10
    assert count_flops(nn.Linear(48, 10), (2, 48), "paper") == 2 * 2 * 48 * 10


def test_pixel_shuffle_is_free_and_known():
    net = TinyNet(nf=8, scale=2)
    rep = flop_report(net, (1, 3, 5, 7))
    assert rep.flops == tiny_macs(8, 2, 5, 7)
    assert rep.unsupported == {}
    assert set(rep.by_operator) == {"conv"}
    assert rep.elementwise == 5 * 7 * 8  # the relu


def test_elementwise_ops_are_reported_apart_not_as_multiply_adds():
    net = Lambda(lambda x: net.prelu(x) + x * 2 + torch.sigmoid(F.leaky_relu(x, 0.1)))
    net.prelu = nn.PReLU()
    rep = flop_report(net, (1, 3, 4, 4))
    assert rep.flops == 0
    assert rep.elementwise == 6 * 48  # prelu, mul, add, leaky_relu, sigmoid, add
    assert rep.unsupported == {}


def test_interpolation_and_mean_match_fvcore_rules():
    from fvcore.nn import FlopCountAnalysis

    up = Lambda(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    assert count_flops(up, (1, 3, 4, 4)) == 4 * 3 * 8 * 8  # fvcore: 4 per output value
    assert count_flops(up, (1, 3, 4, 4)) == FlopCountAnalysis(up, torch.zeros(1, 3, 4, 4)).total()
    bicubic = Lambda(lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"))
    assert count_flops(bicubic, (1, 3, 4, 4)) == 16 * 3 * 8 * 8
    mean = Lambda(lambda x: x.mean(dim=(2, 3)))
    assert count_flops(mean, (1, 3, 4, 4)) == 48  # one add per input value, as avg pooling


def test_average_pooling_counts_its_window():
    assert count_flops(nn.AvgPool2d(2), (1, 3, 8, 8)) == 3 * 4 * 4 * 4
    pool = Lambda(lambda x: F.avg_pool2d(x, [3, 3], stride=1))  # a traced list of constants
    assert count_flops(pool, (1, 3, 8, 8)) == 3 * 6 * 6 * 9


def test_unknown_op_is_listed_and_warned_never_silent():
    net = Lambda(lambda x: torch.cumsum(x, dim=1))
    with pytest.warns(UserWarning, match="aten::cumsum"):
        rep = flop_report(net, (1, 3, 4, 4))
    assert rep.unsupported == {"aten::cumsum": 1}


def test_counts_are_cached_per_module_shape_convention_and_architecture(monkeypatch):
    calls = []
    real = F_._trace_count

    def spy(module, shape, convention):
        calls.append((shape, convention))
        return real(module, shape, convention)

    monkeypatch.setattr(F_, "_trace_count", spy)
    net = TinyNet(4, 2)
    a = count_flops(net, (1, 3, 8, 8))
    assert count_flops(net, (1, 3, 8, 8)) == a
    assert len(calls) == 1
    count_flops(net, (1, 3, 8, 8), "paper")
    count_flops(net, (1, 3, 16, 8))
    assert len(calls) == 3
    net.c1 = nn.Conv2d(3, 4, 1)  # architecture changed in place: must be recounted
    assert count_flops(net, (1, 3, 8, 8)) < a
    assert len(calls) == 4


def test_counting_keeps_each_submodules_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a frozen BN a trainer keeps in eval
    count_flops(net, (1, 3, 8, 8))
    assert net.training and net[0].training and not net[1].training and net[2].training


def test_bad_arguments():
    with pytest.raises(InputError, match="convention"):
        count_flops(nn.Conv2d(3, 3, 1), (1, 3, 4, 4), "macs")
    with pytest.raises(InputError, match="shape"):
        count_flops(nn.Conv2d(3, 3, 1), (1, 3, 0, 4))


def test_a_module_that_fails_on_the_shape_gets_a_clear_error():
    with pytest.raises(InputError, match="cannot count FLOPs of Conv2d on input"):
        count_flops(nn.Conv2d(4, 4, 1), (1, 3, 4, 4))


def test_count_params():
    conv = nn.Conv2d(3, 8, 3)
    assert count_params(conv) == 8 * 27 + 8
    shared = nn.Sequential(conv, nn.ReLU(), conv)  # shared weights count once
    assert count_params(shared) == 8 * 27 + 8
    assert count_params(nn.BatchNorm2d(4)) == 8  # running stats are buffers
    assert count_params(None) == 0


def test_model_costs_of_a_wrapper_by_hand():
    model = ClassWrapper(TinyNet, widths=[4, 8], width_arg="nf", scale=2)
    costs = model_costs(model, 32)
    # Class-Module on 32x32: 4x4/4 conv (8x8 out), three 1x1 128->128, 1x1 128->32,
    # mean over 8x8 (one add per value), Linear 32 -> 2
    clf = 64 * 128 * 48 + 3 * 64 * 128 * 128 + 64 * 128 * 32 + 32 * 64 + 32 * 2
    assert costs["classifier"] == {"flops": clf, "params": count_params(model.classifier)}
    assert [b["width"] for b in costs["branches"]] == [4, 8]
    assert [b["flops"] for b in costs["branches"]] == [tiny_macs(w, 2, 32, 32) for w in (4, 8)]
    assert costs["branches"][0]["params"] == count_params(TinyNet(4, 2))
    assert costs["unsupported"] == {}
    paper = model_costs(model, 32, "paper")
    assert paper["branches"][1]["flops"] == 2 * costs["branches"][1]["flops"]


def test_model_costs_single_branch_has_no_classifier():
    model = ClassWrapper(TinyNet, widths=[8], width_arg="nf", scale=2)
    costs = model_costs(model, 16)
    assert costs["classifier"] == {"flops": 0.0, "params": 0}
    assert costs["branches"][0]["flops"] == tiny_macs(8, 2, 16, 16)


def test_cli_json_reproduces_the_papers_fsrcnn_table(capsys):
    assert main(["flops", "--backbone", "fsrcnn", "--widths", "16,36,56", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["convention"], out["patch"], out["scale"]) == ("fvcore", 32, 4)
    assert [b["width"] for b in out["branches"]] == [16, 36, 56]
    # true multiply-adds and the paper's numbers, per 32x32 patch
    assert [round(b["flops"] / 1e5) / 10 for b in out["branches"]] == [10.9, 17.9, 24.9]
    paper = [b["flops_by_convention"]["paper"] / 1e6 for b in out["branches"]]
    assert all(abs(p - ref) < 1 for p, ref in zip(paper, [141, 304, 468])), paper
    assert round(out["classifier"]["flops"] / 1e5) / 10 == 3.8
    assert out["classifier"]["params"] == 60035


def test_cli_text_prints_both_conventions(capsys):
    assert main(["flops", "--backbone", "fsrcnn", "--widths", "16,56", "--patch", "16"]) == 0
    text = capsys.readouterr().out
    assert "fvcore" in text and "paper" in text and "branch 2 (width 56)" in text
    assert main(["flops", "--backbone", "fsrcnn", "--widths", "16", "--convention", "paper"]) == 0
    text = capsys.readouterr().out
    assert "paper" in text and "fvcore:" not in text and "classifier" not in text


def test_cli_errors(capsys):
    assert main(["flops", "--backbone", "fsrcnn"]) == 2
    assert "--widths" in capsys.readouterr().err
    assert main(["flops", "--backbone", "fsrcnn", "--widths", "16,36", "--depths", "4"]) == 2
    assert "one (width, depth) per branch" in capsys.readouterr().err
    assert main(["flops", "--backbone", "fsrcnn", "--widths", "36,16"]) == 2
    assert "increasing" in capsys.readouterr().err
