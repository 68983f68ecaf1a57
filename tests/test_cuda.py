"""The engine on CUDA: device choice, AMP output dtype, FLOPs counted on the GPU, the pinned
upload of the LR image. The CUDA tests skip cleanly where torch sees no GPU (as in CI);
benchmarks/gpu_check.sh runs them on a GPU machine. The CPU tests beside them check the
same code paths' CPU side, so the file is exercised everywhere."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from nets import TinyNet

from classsr_core import device as device_mod
from classsr_core.analysis.flops import clear_cache, count_flops, model_costs
from classsr_core.device import pick_device
from classsr_core.errors import InputError
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch sees none here)")


def record_pins(monkeypatch) -> list[tuple[tuple[int, ...], bool]]:
    """Wraps ``torch.Tensor.pin_memory`` (a function, so it binds as a method): each call's
    tensor shape and whether its result is pinned, recorded into the returned list."""
    calls = []
    original = torch.Tensor.pin_memory

    def pin_memory(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append((tuple(self.shape), bool(out.is_pinned())))
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    return calls


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture uint8 RGB image, so every branch has work to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None]
    img = base + rng.normal(0, 20, (h, w, 3)) * (x[..., None] > w // 2)
    return np.clip(img, 0, 255).astype(np.uint8)


def tiny_model() -> ClassWrapper:
    with warnings.catch_warnings():  # its classifier costs more than routing saves: no matter
        warnings.simplefilter("ignore")
        return ClassWrapper(
            branches=[TinyNet(2, 2), TinyNet(4, 2)], scale=2, patch_size=8, stride=6
        )


# -- CPU: run everywhere ---------------------------------------------------------------------


def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")  # a request is taken as it is


def test_cuda_request_without_a_gpu_names_what_there_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        pick_device("cuda")


def test_cpu_run_does_not_pin(monkeypatch):
    # Pinning needs a CUDA driver: a CPU run must never ask for it (nor pay for a copy).
    calls = record_pins(monkeypatch)
    res = tiny_model().infer(photo(20, 22), device="cpu")
    assert res.output.shape == (40, 44, 3) and res.output.dtype == np.uint8
    assert calls == []


def test_amp_on_cpu_returns_the_input_dtype():
    # What the CUDA test below checks on the GPU, with bf16 (the CPU's autocast dtype).
    model = tiny_model()
    x = torch.rand(1, 3, 20, 22, generator=torch.Generator().manual_seed(0))
    out = model.infer(x, amp="bf16").output
    assert out.dtype == torch.float32 and out.device.type == "cpu"


# -- CUDA: skipped without a GPU ---------------------------------------------------------------


@needs_cuda
def test_pick_device_picks_cuda_here():
    dev = pick_device()
    assert dev.type == "cuda"
    assert pick_device("cuda:0") == torch.device("cuda:0")
    model = load_model("fsrcnn-x4", device=dev)
    assert next(model.parameters()).device.type == "cuda"


@needs_cuda
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("mode", ["patches", "regions"])
def test_amp_output_is_float32_and_close_to_fp32(amp, mode):
    # The engine's promise (docs/performance.md, infer's docstring): autocast runs the
    # router and branches in low precision, the output canvas stays fp32, and a float
    # tensor comes back in its own dtype and on its own device.
    model = load_model("classsr-fsrcnn-x4", device="cuda")
    x = torch.from_numpy(photo(64, 72)).permute(2, 0, 1)[None].float().div(255).cuda()
    res = model.infer(x, mode=mode, router="classifier", amp=amp)
    assert res.output.dtype == torch.float32 and res.output.device.type == "cuda"
    # fp32 on the same routing: the comparison is about precision, not a flipped patch.
    ref = model.infer(x, mode=mode, router="classifier", classes=res.class_map).output
    torch.testing.assert_close(res.output, ref, atol=0.03, rtol=0)
    out = model.infer(x.cpu(), mode=mode, amp=amp).output  # input on the host: output too
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    u8 = model.infer(photo(64, 72), mode=mode, amp=amp).output
    assert u8.dtype == np.uint8 and u8.shape == (256, 288, 3)


@needs_cuda
def test_fvcore_counts_on_cuda_equal_cpu():
    for model in (
        load_model("classsr-fsrcnn-x4", device="cpu"),
        load_model("classsr-fsrcnn-x4-shared", device="cpu"),
        ClassWrapper("srresnet", widths=[8, 16], scale=4),
    ):
        clear_cache()
        cpu = model_costs(model)
        gpu_model = copy.deepcopy(model).cuda()
        clear_cache()  # counts are cached per module: count the CUDA copy afresh
        gpu = model_costs(gpu_model)
        assert gpu == cpu
        shape = (1, 3, 48, 40)
        assert count_flops(gpu_model.branches[-1], shape) == count_flops(model.branches[-1], shape)


@needs_cuda
@pytest.mark.parametrize("mode", ["patches", "regions"])
def test_upload_is_pinned_and_output_matches_cpu(monkeypatch, mode):
    calls = record_pins(monkeypatch)
    img = photo(64, 72)
    model = load_model("classsr-fsrcnn-x4", device="cuda")
    res = model.infer(img, mode=mode, router="classifier")
    # One upload of the whole LR image, from pinned memory; no per-patch copies.
    assert calls == [((1, 3, 64, 72), True)]
    assert res.device.startswith("cuda")
    cpu = load_model("classsr-fsrcnn-x4", device="cpu").infer(
        img, mode=mode, router="classifier", classes=res.class_map
    )
    # TF32 convolutions on the GPU may move a value across a rounding edge: one level.
    diff = np.abs(res.output.astype(int) - cpu.output.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
