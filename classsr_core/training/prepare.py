"""Preparation: HR images -> (optional multi-scale copies) -> task inputs -> sub-images.

``prepare`` writes a compact store: for every (image, scale) one uint8 ``.npy`` array of HR
sub-images ``(N, crop, crop, 3)`` and one of input sub-images ``(N, crop/s, crop/s, 3)``,
plus whole validation images, and ``manifest.json`` describing them. Arrays are memory-mapped
while training (:mod:`classsr_core.training.dataset`), so a store larger than memory works.
Every file is written to a temporary name and renamed, and the manifest is rewritten after
each image, so an interrupted ``prepare`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from classsr_core._basicsr import imresize  # cheap: basicsr itself loads on first call
from classsr_core.errors import ClassSRError, ConfigError, InputError
from classsr_core.io.atomic import atomic_path, atomic_write_text
from classsr_core.training.sources import Source, list_sources

FORMAT = "classsr-store/1"
MANIFEST = "manifest.json"


# -- geometry ------------------------------------------------------------------------------
def crop_starts(size: int, crop: int, step: int) -> list[int]:
    """Top-left corners along one side; the last sub-image is moved in to cover the border."""
    if size < crop:
        return []
    starts = list(range(0, size - crop + 1, step))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _safe_name(key: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return f"{stem}-{zlib.crc32(key.encode()):08x}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))


def _settings(cfg) -> dict[str, Any]:
    """What the stored arrays depend on; a store made with other settings is not reused."""
    return {
        "task": cfg.task.model_dump(mode="json"),
        "crop": cfg.data.crop,
        "step": cfg.data.step,
        "seed": cfg.seed,
    }


def items_signature(items: list[dict]) -> str:
    text = json.dumps([[it["key"], it["stamp"], it["count"]] for it in items])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# -- manifest ------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ClassSRError(
            f"no prepared data at {root} (no {MANIFEST}); run `classsr prepare CONFIG` first"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ClassSRError(f"{path} is not a classsr sub-image store ({FORMAT})")
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1))


def _open_store(cfg) -> tuple[Path, dict[str, Any]]:
    root = cfg.store_dir
    settings = _settings(cfg)
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root)
        if manifest["settings"] != settings:
            raise ConfigError(
                f"the sub-image store {root} was prepared with other settings "
                f"({manifest['settings']}, now {settings}); delete {root} or set data.store "
                "to another folder"
            )
        return root, manifest
    root.mkdir(parents=True, exist_ok=True)
    return root, {"format": FORMAT, "settings": settings}


# -- prepare -------------------------------------------------------------------------------
def prepare(cfg, progress: bool = True) -> dict[str, Any]:
    """Build (or complete) the sub-image store of a training config; returns a summary."""
    from tqdm import tqdm

    task = cfg.make_task()
    s = task.scale
    crop, step = cfg.data.crop, cfg.data.step
    if crop % s or step % s:
        raise ConfigError(
            f"data.crop ({crop}) and data.step ({step}) must be multiples of the task's "
            f"scale {s}, so that input sub-images align with HR ones"
        )
    train_sources = list_sources(cfg.data.train, "train")
    val_sources = list_sources(cfg.data.val, "val") if cfg.data.val else []
    root, manifest = _open_store(cfg)
    min_val = cfg.model.patch_size * s  # the tile engine needs at least one whole patch

    summary: dict[str, Any] = {"store": str(root)}
    jobs = [("train", src, scale) for src in train_sources for scale in cfg.data.scales]
    jobs += [("val", src, 1.0) for src in val_sources]
    old = {
        split: {it["key"]: it for it in manifest.get(split, {}).get("items", [])}
        for split in ("train", "val")
    }
    old_skipped = {
        split: {sk["key"]: sk for sk in manifest.get(split, {}).get("skipped", [])}
        for split in ("train", "val")
    }
    new: dict[str, dict[str, Any]] = {
        split: {"source": getattr(cfg.data, split), "items": [], "skipped": []}
        for split in ("train", "val")
    }
    made = reused = 0
    cache: tuple[str, np.ndarray | Exception] | None = None  # one source, all its scales
    bar = tqdm(jobs, desc="prepare", unit="img", disable=not progress, dynamic_ncols=True)
    for split, src, scale in bar:
        key = f"{src.name}@{scale:g}"
        prev = old[split].get(key)
        if prev and prev["stamp"] == src.stamp and _files_exist(root, prev):
            new[split]["items"].append(prev)
            reused += 1
            continue
        prev_skip = old_skipped[split].get(key)
        if prev_skip and prev_skip["stamp"] == src.stamp:
            new[split]["skipped"].append(prev_skip)
            continue
        if cache is None or cache[0] != f"{split}/{src.name}":
            try:
                cache = (f"{split}/{src.name}", src.load())
            except Exception as exc:  # unreadable: skip and say so, the rest still go in
                cache = (f"{split}/{src.name}", exc)
        image = cache[1]
        if isinstance(image, Exception):
            _skip(new[split], key, src, f"unreadable ({image})")
            continue
        item = _make_item(task, image, key, src, scale, split, crop, step, min_val, cfg.seed, root)
        if isinstance(item, str):
            _skip(new[split], key, src, item)
            continue
        new[split]["items"].append(item)
        made += 1
        # Keep entries not visited yet, so an interrupted run loses none of them.
        done = {it["key"] for it in new[split]["items"]}
        pending = [it for k, it in old[split].items() if k not in done]
        manifest[split] = {**new[split], "items": new[split]["items"] + pending, "complete": False}
        write_manifest(root, manifest)
        bar.set_postfix(made=made, reused=reused, skipped=len(new["train"]["skipped"]))
    bar.close()

    for split in ("train", "val"):
        manifest[split] = {**new[split], "complete": True}
    if not manifest["train"]["items"]:
        raise InputError(
            f"no training sub-images: every image in {cfg.data.train} was skipped "
            f"({len(manifest['train']['skipped'])} skipped; first: "
            f"{(manifest['train']['skipped'] or [{'reason': '-'}])[0]['reason']})"
        )
    if cfg.data.val and not manifest["val"]["items"]:
        raise InputError(f"no usable validation image in {cfg.data.val}: all were skipped")
    manifest["train"]["signature"] = items_signature(manifest["train"]["items"])
    div = manifest.get("divide")
    if div and div.get("signature") != manifest["train"]["signature"]:
        manifest.pop("divide")  # the labels no longer match the sub-images
    write_manifest(root, manifest)

    for split in ("train", "val"):
        skipped = manifest[split]["skipped"]
        if skipped:
            warnings.warn(
                f"prepare skipped {len(skipped)} {split} image(s): "
                + "; ".join(f"{sk['key']}: {sk['reason']}" for sk in skipped[:5])
                + (" ..." if len(skipped) > 5 else ""),
                RuntimeWarning,
                stacklevel=2,
            )
    summary.update(
        {
            "train_images": len(train_sources),
            "sub_images": int(sum(it["count"] for it in manifest["train"]["items"])),
            "val_images": len(manifest["val"]["items"]),
            "made": made,
            "reused": reused,
            "skipped": {k: len(manifest[k]["skipped"]) for k in ("train", "val")},
        }
    )
    return summary


def _skip(section: dict, key: str, src: Source, reason: str) -> None:
    section["skipped"].append({"key": key, "stamp": src.stamp, "reason": reason})


def _files_exist(root: Path, item: dict) -> bool:
    return (root / item["hr"]).is_file() and (root / item["lr"]).is_file()


def _make_item(task, image, key, src, scale, split, crop, step, min_val, seed, root):
    """Write one (image, scale) entry; return its manifest item, or why it was skipped."""
    hr = image
    if scale != 1.0:
        hr = imresize(hr, scale)  # MATLAB bicubic, antialiased when shrinking
    # Quantise first: the input is made from exactly the HR pixels that are stored.
    hr8 = task.modcrop(to_uint8(hr))
    h, w = hr8.shape[:2]
    need = crop if split == "train" else min_val
    if min(h, w) < need:
        what = "the crop" if split == "train" else "one tile-engine patch"
        return f"too small ({h}x{w} at scale {scale:g}; {what} needs {need}x{need})"
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])  # noise tasks: reproducible
    lr8 = to_uint8(task.make_input(hr8.astype(np.float32) / 255.0, rng))
    s = task.scale
    if lr8.shape[0] * s != h or lr8.shape[1] * s != w:
        raise ClassSRError(
            f"task {task.name!r} made an input of {lr8.shape[:2]} from {h}x{w}; expected "
            f"the HR size divided by its scale {s}"
        )
    name = _safe_name(key)
    if split == "train":
        ys, xs = crop_starts(h, crop, step), crop_starts(w, crop, step)
        hr_subs = np.stack([hr8[y : y + crop, x : x + crop] for y in ys for x in xs])
        c = crop // s
        lr_subs = np.stack([lr8[y // s : y // s + c, x // s : x // s + c] for y in ys for x in xs])
    else:
        hr_subs, lr_subs = hr8, lr8
    rel = Path(split)
    _save_npy(root / rel / f"{name}.hr.npy", hr_subs)
    _save_npy(root / rel / f"{name}.lr.npy", lr_subs)
    return {
        "key": key,
        "stamp": src.stamp,
        "scale": scale,
        "count": int(hr_subs.shape[0]) if split == "train" else 1,
        "hr": str(rel / f"{name}.hr.npy"),
        "lr": str(rel / f"{name}.lr.npy"),
    }
