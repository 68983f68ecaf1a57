"""Split training sub-images into classes by how hard they are.

A reference model (any checkpoint ``load_model`` reads, e.g. a single-branch "-O" network;
bicubic upscaling when none is given) restores every input sub-image; its RGB PSNR
(0..255, the task's border cropped, as basicsr's ``calculate_psnr``) measures difficulty.
Quantiles of that PSNR split the sub-images: class 0 (the cheapest branch) gets the
highest-PSNR share, the last class the lowest. The shares default to equal thirds; the
paper also used 25:25:50 (``ratios: [1, 1, 2]``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from classsr_core.device import pick_device
from classsr_core.errors import ConfigError, InputError
from classsr_core.io.atomic import atomic_path
from classsr_core.model.loading import load_model
from classsr_core.training.dataset import Store
from classsr_core.training.prepare import write_manifest

PSNR_CAP = 100.0  # a perfect reconstruction (flat sub-image) has infinite PSNR


def psnr_batch(out: torch.Tensor, ref: torch.Tensor, border: int) -> torch.Tensor:
    """Per-sample PSNR of ``(N, C, H, W)`` tensors in [0, 1], on rounded 0..255 values."""
    a = (out.clamp(0, 1) * 255).round().double()
    b = (ref * 255).round().double()
    if border:
        a = a[..., border:-border, border:-border]
        b = b[..., border:-border, border:-border]
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return psnr.clamp(max=PSNR_CAP)


def thresholds_for(psnr: np.ndarray, ratios: list[float]) -> list[float]:
    """PSNR thresholds, descending: class ``k`` holds PSNR in ``[t_k, t_{k-1})``."""
    shares = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    cum = np.cumsum(shares)[:-1]
    return [float(np.quantile(psnr, 1.0 - c)) for c in cum]


def labels_for(psnr: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Class of each sub-image: the number of thresholds above its PSNR (0 = easiest)."""
    labels = np.zeros(len(psnr), dtype=np.int8)
    for t in thresholds:
        labels += (psnr < t).astype(np.int8)
    return labels


@torch.no_grad()
def divide(
    cfg,
    reference: str | None = None,
    device: str | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Label every training sub-image of ``cfg``'s store; write labels and thresholds."""
    from tqdm import tqdm

    store = Store(cfg.store_dir)
    task = cfg.make_task()
    m = cfg.model.num_branches
    ratios = list(cfg.divide.ratios or [1.0] * m)
    if len(ratios) != m:
        raise ConfigError(
            f"divide.ratios has {len(ratios)} values but the model has {m} branches; "
            "give one share per branch, cheapest first"
        )
    ref = reference or cfg.divide.reference
    dev = pick_device(device or cfg.device)
    model = None
    if ref:
        model = load_model(ref, device=dev, trust_code=cfg.trust_code)
        if model.scale != task.scale:
            raise InputError(
                f"the reference model {ref} upscales by {model.scale} but the task's scale "
                f"is {task.scale}"
            )
    border = task.crop_border()
    psnr = np.empty(len(store), dtype=np.float64)
    bs = cfg.divide.batch_size
    total = len(store)
    bar = tqdm(total=total, desc="divide", unit="sub", disable=not progress, dynamic_ncols=True)
    for i in range(len(store.items)):
        lr_all, hr_all = store.item_arrays(i)
        off = int(store.offsets[i])
        for j in range(0, len(lr_all), bs):
            lr = _to_tensor(lr_all[j : j + bs], dev)
            hr = _to_tensor(hr_all[j : j + bs], dev)
            if model is not None:
                out = model(lr)[0]
            elif task.scale > 1:
                out = torch.nn.functional.interpolate(
                    lr, scale_factor=task.scale, mode="bicubic", align_corners=False
                )
            else:
                out = lr
            psnr[off + j : off + j + len(lr)] = psnr_batch(out, hr, border).cpu().numpy()
            bar.update(len(lr))
    bar.close()

    thresholds = thresholds_for(psnr, ratios)
    labels = labels_for(psnr, thresholds)
    counts = np.bincount(labels, minlength=m).tolist()
    means = [float(psnr[labels == k].mean()) if counts[k] else math.nan for k in range(m)]
    root = store.root
    for name, arr in (("labels.npy", labels), ("psnr.npy", psnr.astype(np.float32))):
        with atomic_path(root / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    info = {
        "reference": ref or "bicubic",
        "ratios": ratios,
        "thresholds": thresholds,
        "counts": counts,
        "mean_psnr": means,
        "signature": store.signature,
    }
    manifest = store.manifest
    manifest["divide"] = info
    write_manifest(root, manifest)
    if not quiet:
        print(format_divide(info))
    return info


def format_divide(info: dict[str, Any]) -> str:
    n = sum(info["counts"])
    lines = [f"divided {n} sub-images by {info['reference']} PSNR (ratios {info['ratios']})"]
    if info["thresholds"]:
        lines.append("  thresholds (dB): " + ", ".join(f"{t:.2f}" for t in info["thresholds"]))
    for k, (c, mean) in enumerate(zip(info["counts"], info["mean_psnr"])):
        lines.append(
            f"  class {k}: {c:7d} sub-images ({100 * c / max(n, 1):5.1f}%), mean {mean:.2f} dB"
        )
    return "\n".join(lines)


def _to_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.array(arr)).to(device)  # a writable copy of the mmap slice
    return t.permute(0, 3, 1, 2).float().div_(255.0)
