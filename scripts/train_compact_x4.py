"""Train a small Real-ESRGAN compact x4 network (spandrel's ``Compact``) on CPU, seeded.

A stand-in for "a network trained elsewhere" in docs/bring-your-own.md: spandrel cannot
read this project's MSRResNet (``srresnet-x4``), so the measurement of a user's file made
cheaper uses this network instead, trained here from the repository's photos.

    .venv/bin/python scripts/train_compact_x4.py [--steps 3000] [--threads 1] [--out out/byo]

Data: each photo of ``data/photos/train`` (RGB, float 0..1) is cropped to a multiple of 4
and downscaled once by the SR task's MATLAB bicubic (``classsr_core._basicsr.imresize``,
clipped, not rounded); training pairs are aligned 128x128 HR / 32x32 LR crops of those
(positions on the 4-pixel grid, drawn by a seeded generator, with a random flip/rotation).
Model: ``Compact(num_feat=32, num_conv=10, upscale=4, act_type="prelu")``. L1 loss, Adam
(lr 1e-3, cosine decay to 1e-5), batch 16, ``--steps`` steps, ``torch.manual_seed(0)``.

Writes ``compact-x4.pth`` (``torch.save`` of the plain state dict) and
``compact-x4.safetensors`` under ``--out``, checks that spandrel identifies the file and
that ``classsr_core.load_model`` loads it, and prints PSNR on ``data/photos/val`` (RGB,
0..255 after rounding, 4 px border out, as ``classsr sweep`` scores) against bicubic.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact

from classsr_core import load_model
from classsr_core._basicsr import imresize
from classsr_core.io.images import list_images, read_image

SCALE = 4


def pair(path) -> tuple[np.ndarray, np.ndarray]:
    """``(HR float HWC cropped to a multiple of 4, LR float HWC)`` as ``classsr sweep``."""
    hr = read_image(path).rgb.astype(np.float32)
    h, w = hr.shape[:2]
    hr = hr[: h - h % SCALE, : w - w % SCALE]
    lr = np.clip(imresize(hr, 1.0 / SCALE), 0.0, 1.0).astype(np.float32)
    return hr, lr


def psnr(hr: np.ndarray, out: np.ndarray) -> float:
    a = np.rint(np.clip(hr, 0, 1) * 255.0)[SCALE:-SCALE, SCALE:-SCALE]
    b = np.rint(np.clip(out, 0, 1) * 255.0)[SCALE:-SCALE, SCALE:-SCALE]
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def to_t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def batch(pairs, rng: np.random.Generator, n: int, lr_size: int = 32):
    his, los = [], []
    for _ in range(n):
        hr, lr = pairs[rng.integers(len(pairs))]
        y = int(rng.integers(lr.shape[0] - lr_size + 1))
        x = int(rng.integers(lr.shape[1] - lr_size + 1))
        lo = lr[y : y + lr_size, x : x + lr_size]
        hi = hr[SCALE * y : SCALE * (y + lr_size), SCALE * x : SCALE * (x + lr_size)]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        lo, hi = np.rot90(lo, k), np.rot90(hi, k)
        if flip:
            lo, hi = lo[:, ::-1], hi[:, ::-1]
        los.append(to_t(lo))
        his.append(to_t(hi))
    return torch.stack(los), torch.stack(his)


def evaluate(net, pairs) -> list[tuple[float, float]]:
    net.eval()
    rows = []
    with torch.no_grad():
        for hr, lr in pairs:
            out = net(to_t(lr)[None])[0].numpy().transpose(1, 2, 0)
            bic = imresize(lr, SCALE)
            rows.append((psnr(hr, out), psnr(hr, bic)))
    net.train()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="data/photos/train")
    ap.add_argument("--val", default="data/photos/val")
    ap.add_argument("--out", default="out/byo")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--feat", type=int, default=32)
    ap.add_argument("--conv", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = [pair(p) for p in list_images([args.train])]
    val = [pair(p) for p in list_images([args.val])]
    print(f"{len(train)} training photos, {len(val)} validation photos")

    net = Compact(num_feat=args.feat, num_conv=args.conv, upscale=SCALE, act_type="prelu")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=1e-5)
    t0 = time.perf_counter()
    running = 0.0
    for step in range(1, args.steps + 1):
        lo, hi = batch(train, rng, args.batch)
        loss = F.l1_loss(net(lo), hi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % 100 == 0 or step == args.steps:
            el = time.perf_counter() - t0
            print(
                f"step {step}: L1 {running / (100 if step % 100 == 0 else step % 100):.4f}"
                f"  {el:.0f} s ({el / step:.3f} s/step)",
                flush=True,
            )
            running = 0.0

    rows = evaluate(net, val)
    for p, (net_db, bic_db) in zip(list_images([args.val]), rows):
        print(
            f"val {p.name}: network {net_db:.2f} dB, bicubic {bic_db:.2f} dB "
            f"({net_db - bic_db:+.2f})"
        )
    gain = float(np.mean([a - b for a, b in rows]))
    print(f"val mean gain over bicubic: {gain:+.2f} dB")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    torch.save(sd, out / "compact-x4.pth")
    save_file(sd, str(out / "compact-x4.safetensors"))
    desc = ModelLoader().load_from_state_dict(sd)
    print(
        f"spandrel: {type(desc.architecture).__name__}, x{desc.scale}, "
        f"{sum(v.numel() for v in sd.values())} parameters"
    )
    for name in ("compact-x4.pth", "compact-x4.safetensors"):
        m = load_model(str(out / name))
        print(f"load_model({out / name}): {type(m).__name__}, x{m.scale}")
    print(f"wrote {out / 'compact-x4.pth'} and {out / 'compact-x4.safetensors'}")
    return 0 if gain > 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
