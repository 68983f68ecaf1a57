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
from classsr_core.training.sources import Source, check_pair_size, describe, list_sources

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


# -- prepare ------------------------------------------------------------------------------
SPLITS = ("train", "val")


def prepare(cfg, progress: bool = True) -> dict[str, Any]:
    """Build (or complete) the sub-image store of a training config; returns a summary.

    The steps: check the crop against the task's scale, list the images (or pairs), open the
    store, make every (image, scale) entry not already there, close the manifest, warn about
    what was skipped."""
    task = cfg.make_task()
    _check_crop(cfg, task.scale)
    sources = _list_splits(cfg, task.scale)
    root, manifest = _open_store(cfg)
    run = _Run(cfg, task, root, manifest)
    run.make_all(_jobs(cfg, sources), progress)
    _close_manifest(cfg, root, manifest, run.new)
    _warn_skipped(manifest)
    return _summary(root, sources, manifest, run)


def _check_crop(cfg, scale: int) -> None:
    crop, step = cfg.data.crop, cfg.data.step
    if crop % scale or step % scale:
        raise ConfigError(
            f"data.crop ({crop}) and data.step ({step}) must be multiples of the task's "
            f"scale {scale}, so that input sub-images align with HR ones"
        )


def _list_splits(cfg, scale: int) -> dict[str, list[Source]]:
    """The sources of each split (paired folders checked for partners and sizes here)."""
    return {
        "train": list_sources(cfg.data.train, "train", scale),
        "val": list_sources(cfg.data.val, "val", scale) if cfg.data.val else [],
    }


def _jobs(cfg, sources: dict[str, list[Source]]) -> list[tuple[str, Source, float]]:
    """``(split, source, scale)`` in the order they are made: every training image at each
    of ``data.scales`` (one source's scales together, so it is read once), then validation."""
    jobs = [("train", src, scale) for src in sources["train"] for scale in cfg.data.scales]
    return jobs + [("val", src, 1.0) for src in sources["val"]]


class _Run:
    """One pass over the jobs: what the manifest held before, and what this run keeps."""

    def __init__(self, cfg, task, root: Path, manifest: dict[str, Any]) -> None:
        self.cfg, self.task, self.root, self.manifest = cfg, task, root, manifest
        self.old = {split: _by_key(manifest, split, "items") for split in SPLITS}
        self.old_skipped = {split: _by_key(manifest, split, "skipped") for split in SPLITS}
        sources = cfg.data.model_dump(mode="json")  # paired folders as a plain mapping
        self.new: dict[str, dict[str, Any]] = {
            split: {"source": sources[split], "items": [], "skipped": []} for split in SPLITS
        }
        self.made = self.reused = 0
        self._cache: tuple[str, Any] | None = None  # one source, all its scales

    def make_all(self, jobs, progress: bool) -> None:
        from tqdm import tqdm

        bar = tqdm(jobs, desc="prepare", unit="img", disable=not progress, dynamic_ncols=True)
        for split, src, scale in bar:
            if self._make(split, src, scale):
                self._save_progress(split)
                bar.set_postfix(
                    made=self.made, reused=self.reused, skipped=len(self.new["train"]["skipped"])
                )
        bar.close()

    def _make(self, split: str, src: Source, scale: float) -> bool:
        """Keep, skip or make one entry; ``True`` when one was made."""
        key = f"{src.name}@{scale:g}"
        section = self.new[split]
        prev = self.old[split].get(key)
        if prev and prev["stamp"] == src.stamp and _files_exist(self.root, prev):
            section["items"].append(prev)
            self.reused += 1
            return False
        prev_skip = self.old_skipped[split].get(key)
        if prev_skip and prev_skip["stamp"] == src.stamp:
            section["skipped"].append(prev_skip)
            return False
        loaded = self._load(split, src)
        if isinstance(loaded, Exception):  # unreadable: skip and say so, the rest still go in
            _skip(section, key, src, f"unreadable ({loaded})")
            return False
        image, given = loaded
        data, min_val = self.cfg.data, self.cfg.model.patch_size * self.task.scale
        args = (scale, split, data.crop, data.step, min_val, self.cfg.seed, self.root)
        item = _make_item(self.task, image, key, src, *args, given=given)
        if isinstance(item, str):
            _skip(section, key, src, item)
            return False
        section["items"].append(item)
        self.made += 1
        return True

    def _load(self, split: str, src: Source):
        """``(target, given input or None)``, or the exception that reading raised; cached
        for the source's other scales."""
        name = f"{split}/{src.name}"
        if self._cache is None or self._cache[0] != name:
            try:
                given = src.load_input() if src.paired else None
                self._cache = (name, (src.load(), given))
            except Exception as exc:
                self._cache = (name, exc)
        return self._cache[1]

    def _save_progress(self, split: str) -> None:
        """Rewrite the manifest, keeping entries not visited yet, so an interrupted run
        loses none of them."""
        section = self.new[split]
        done = {it["key"] for it in section["items"]}
        pending = [it for k, it in self.old[split].items() if k not in done]
        self.manifest[split] = {**section, "items": section["items"] + pending, "complete": False}
        write_manifest(self.root, self.manifest)


def _by_key(manifest: dict[str, Any], split: str, part: str) -> dict[str, dict]:
    return {entry["key"]: entry for entry in manifest.get(split, {}).get(part, [])}


def _close_manifest(cfg, root: Path, manifest: dict[str, Any], new: dict) -> None:
    """Mark both splits complete, refuse a store with nothing to train on, sign the
    training items, and drop class labels that no longer match them."""
    for split in SPLITS:
        manifest[split] = {**new[split], "complete": True}
    if not manifest["train"]["items"]:
        raise InputError(
            f"no training sub-images: every image in {describe(cfg.data.train)} was skipped "
            f"({len(manifest['train']['skipped'])} skipped; first: "
            f"{(manifest['train']['skipped'] or [{'reason': '-'}])[0]['reason']})"
        )
    if cfg.data.val and not manifest["val"]["items"]:
        raise InputError(
            f"no usable validation image in {describe(cfg.data.val)}: all were skipped"
        )
    manifest["train"]["signature"] = items_signature(manifest["train"]["items"])
    div = manifest.get("divide")
    if div and div.get("signature") != manifest["train"]["signature"]:
        manifest.pop("divide")  # the labels no longer match the sub-images
    write_manifest(root, manifest)


def _warn_skipped(manifest: dict[str, Any]) -> None:
    for split in SPLITS:
        skipped = manifest[split]["skipped"]
        if skipped:
            warnings.warn(
                f"prepare skipped {len(skipped)} {split} image(s): "
                + "; ".join(f"{sk['key']}: {sk['reason']}" for sk in skipped[:5])
                + (" ..." if len(skipped) > 5 else ""),
                RuntimeWarning,
                stacklevel=3,
            )


def _summary(root: Path, sources, manifest: dict[str, Any], run: _Run) -> dict[str, Any]:
    return {
        "store": str(root),
        "train_images": len(sources["train"]),
        "sub_images": int(sum(it["count"] for it in manifest["train"]["items"])),
        "val_images": len(manifest["val"]["items"]),
        "made": run.made,
        "reused": run.reused,
        "skipped": {k: len(manifest[k]["skipped"]) for k in SPLITS},
    }


def _skip(section: dict, key: str, src: Source, reason: str) -> None:
    section["skipped"].append({"key": key, "stamp": src.stamp, "reason": reason})


def _files_exist(root: Path, item: dict) -> bool:
    return (root / item["hr"]).is_file() and (root / item["lr"]).is_file()


def _make_item(task, image, key, src, scale, split, crop, step, min_val, seed, root, given=None):
    """Write one (image, scale) entry; return its manifest item, or why it was skipped.
    ``given``: paired data's input (float HWC), used instead of the task's."""
    hr = image
    if given is not None:
        check_pair_size(src.name, hr, given, task.scale)
    if scale != 1.0:
        hr = imresize(hr, scale)  # MATLAB bicubic, antialiased when shrinking
    # Quantise first: the input is made from exactly the HR pixels that are stored.
    hr8 = task.modcrop(to_uint8(hr))
    h, w = hr8.shape[:2]
    need = crop if split == "train" else min_val
    if min(h, w) < need:
        what = "the crop" if split == "train" else "one tile-engine patch"
        return f"too small ({h}x{w} at scale {scale:g}; {what} needs {need}x{need})"
    lr8 = to_uint8(given) if given is not None else _task_input(task, hr8, key, seed)
    name = _safe_name(key)
    hr_subs, lr_subs = _sub_images(hr8, lr8, task.scale, crop, step, split)
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


def _task_input(task, hr8: np.ndarray, key: str, seed: int) -> np.ndarray:
    """The task's input for an 8-bit HR image, 8-bit too; its size checked."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])  # noise tasks: reproducible
    lr8 = to_uint8(task.make_input(hr8.astype(np.float32) / 255.0, rng))
    s, (h, w) = task.scale, hr8.shape[:2]
    if lr8.shape[0] * s != h or lr8.shape[1] * s != w:
        raise ClassSRError(
            f"task {task.name!r} made an input of {lr8.shape[:2]} from {h}x{w}; expected "
            f"the HR size divided by its scale {s}"
        )
    return lr8


def _sub_images(hr8, lr8, s: int, crop: int, step: int, split: str):
    """Aligned ``(HR, input)`` sub-images of a training image; the whole pair for ``val``."""
    if split != "train":
        return hr8, lr8
    h, w = hr8.shape[:2]
    ys, xs = crop_starts(h, crop, step), crop_starts(w, crop, step)
    hr_subs = np.stack([hr8[y : y + crop, x : x + crop] for y in ys for x in xs])
    c = crop // s
    lr_subs = np.stack([lr8[y // s : y // s + c, x // s : x // s + c] for y in ys for x in xs])
    return hr_subs, lr_subs
