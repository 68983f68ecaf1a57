"""Branch widths chosen for the hardware, not only for FLOPs.

Convolution kernels run in channel blocks (16 on this project's CPU with oneDNN, 8 to 32
on GPUs): a width just past a block boundary costs nearly a whole extra block. The
paper's widths 36 and 52 fall off the 16-steps: on a 2-core CPU SRResNet-52 takes 0.84
of the width-64 time for 0.66 of its FLOPs (issue 9's measurement). Two ways out:

* :func:`snap_widths`: round to a multiple of the block (no measurement, e.g. 16);
* :func:`measure_widths` + :func:`efficient_widths`: time the backbone at every candidate
  width on the device at hand and, near each requested width, take the one that does the
  most multiply-adds per second.

``classsr widths`` runs both for a backbone and prints the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from classsr_core.base.flops import count_flops
from classsr_core.device import pick_device, synchronize
from classsr_core.engine import default_batch_size
from classsr_core.errors import InputError
from classsr_core.plugins.registry import resolve


def snap_widths(widths: Sequence[int], step: int = 16) -> list[int]:
    """Each width rounded to the nearest multiple of ``step`` (at least ``step``); branches
    that would collide keep distinct widths by moving the narrower ones down a step."""
    if step < 1:
        raise InputError(f"step must be positive, got {step}")
    out = [max(step, int(round(w / step)) * step) for w in widths]
    for i in range(len(out) - 2, -1, -1):  # keep them strictly increasing
        if out[i] >= out[i + 1]:
            out[i] = out[i + 1] - step
    if out and out[0] < 1:
        raise InputError(f"{len(widths)} widths do not fit below {out[-1]} in steps of {step}")
    return out


def measure_widths(
    backbone: str,
    widths: Sequence[int],
    *,
    scale: int = 4,
    device: str | torch.device | None = None,
    patch: int = 32,
    batch: int | None = None,
    reps: int = 5,
    in_channels: int = 3,
    backbone_kwargs: dict[str, Any] | None = None,
) -> dict[int, dict[str, float]]:
    """Seconds and multiply-adds per ``patch x patch`` LR patch of ``backbone`` at each
    width, on ``device`` (channels-last on CPU, as the tile engine runs). Timed in
    interleaved rounds, every width once a round after a warm-up of each, the minimum over
    ``reps`` rounds: a machine that slows down for a while (another process, a clock
    change) then slows every width alike instead of whichever ran at that moment."""
    dev = pick_device(device)
    factory, meta = resolve("backbones", backbone)
    key = meta.get("width_arg")
    if key is None:
        raise InputError(f"backbone {backbone!r} declares no width argument to vary")
    layout = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    runs = {}
    for w in widths:
        net = factory(
            scale=scale, in_channels=in_channels, **{key: int(w)}, **(backbone_kwargs or {})
        )
        net = net.to(dev).eval()
        flops = count_flops(net, (1, in_channels, patch, patch))
        b = batch or default_batch_size(dev, flops)
        x = torch.rand(b, in_channels, patch, patch, device=dev).contiguous(memory_format=layout)
        runs[int(w)] = (net, x, float(flops))
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for net, x, _ in runs.values():
            net(x)  # warm-up: allocator, kernel selection
        for _ in range(reps):
            for w, (net, x, _) in runs.items():
                synchronize(dev)
                t0 = time.perf_counter()
                net(x)
                synchronize(dev)
                best[w] = min(best[w], time.perf_counter() - t0)
    return {w: {"seconds": best[w] / len(x), "flops": flops} for w, (_, x, flops) in runs.items()}


def efficient_widths(
    widths: Sequence[int], measured: dict[int, dict[str, float]], window: float = 0.2
) -> list[int]:
    """For each requested width, the measured candidate within ``window`` (relative) of it
    with the most multiply-adds per second; the widest width is kept (it is the '-O'
    network the others are compared with)."""
    chosen = []
    for i, w in enumerate(widths):
        if i == len(widths) - 1:
            chosen.append(int(w))
            continue
        near = [c for c in measured if abs(c - w) <= window * w and c < widths[-1]]
        if not near:
            raise InputError(f"no measured width within {window:.0%} of {w}")
        chosen.append(max(near, key=lambda c: measured[c]["flops"] / measured[c]["seconds"]))
    for a, b in zip(chosen, chosen[1:]):
        if b <= a:
            raise InputError(
                f"the efficient widths {chosen} collide; widen the gaps between {list(widths)} "
                "or narrow the window"
            )
    return chosen
