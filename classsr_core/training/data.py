"""Training data: HR images -> (optional multi-scale copies) -> task inputs -> sub-images.

``prepare`` writes a compact store: for every (image, scale) one uint8 ``.npy`` array of HR
sub-images ``(N, crop, crop, 3)`` and one of input sub-images ``(N, crop/s, crop/s, 3)``,
plus whole validation images, and ``manifest.json`` describing them. Arrays are memory-mapped
while training, so a store larger than memory works. Every file is written to a temporary
name and renamed, and the manifest is rewritten after each image, so an interrupted
``prepare`` resumes where it stopped.

The sampler (:class:`ShardedBatchSampler`) makes each iteration's batch a pure function of
``(seed, iteration, rank)``; that is what lets ``--resume`` continue exactly, mid-epoch.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classsr_core.errors import ClassSRError, ConfigError, InputError
from classsr_core.io.atomic import atomic_path, atomic_write_text

FORMAT = "classsr-store/1"
MANIFEST = "manifest.json"
SKIMAGE_PREFIX = "skimage:"


# -- image sources -----------------------------------------------------------------------
@dataclass
class Source:
    """One HR image: a name, a stamp that changes when the file does, and a loader."""

    name: str
    stamp: str
    load: Callable[[], np.ndarray]  # -> RGB float32 HWC in [0, 1]


def _read_file(path: Path) -> np.ndarray:
    from classsr_core.io.images import read_image

    return read_image(path).rgb  # grey -> RGB, alpha dropped, 8/16-bit -> [0, 1]


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3]
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        return (img.astype(np.float32) / scale).clip(0, 1)

    return load


def list_sources(spec: str, key: str) -> list[Source]:
    """The images of a ``data.train`` / ``data.val`` entry: a folder or ``skimage:a,b``."""
    if spec.startswith(SKIMAGE_PREFIX):
        names = [n.strip() for n in spec[len(SKIMAGE_PREFIX) :].split(",") if n.strip()]
        if not names:
            raise ConfigError(f"data.{key}: '{spec}' names no image (e.g. skimage:astronaut)")
        try:
            import skimage.data
        except ImportError:
            raise ConfigError(
                f"data.{key} uses scikit-image's photos but scikit-image is not installed "
                "(pip install scikit-image)"
            ) from None
        unknown = [n for n in names if not callable(getattr(skimage.data, n, None))]
        if unknown:
            raise ConfigError(
                f"data.{key}: scikit-image has no image {unknown[0]!r} "
                "(try astronaut, coffee, chelsea, rocket, retina, hubble_deep_field)"
            )
        return [Source(f"{n}.skimage", "skimage", _skimage_loader(n)) for n in names]

    from classsr_core.io.images import IMAGE_SUFFIXES

    folder = Path(spec)
    if not folder.is_dir():
        raise ConfigError(
            f"data.{key}: folder {folder} does not exist; give a folder of HR images "
            "(scripts/fetch_photos.sh makes data/photos/train and data/photos/val)"
        )
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ConfigError(
            f"data.{key}: folder {folder} holds no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); put HR photos there"
        )
    out = []
    for path in files:
        st = path.stat()
        out.append(Source(path.name, f"{st.st_size}:{st.st_mtime_ns}", _file_loader(path)))
    return out


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _read_file(path)


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
    from classsr_core._basicsr import imresize

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


# -- reading the store ---------------------------------------------------------------------
class Store:
    """Read side of a prepared store: sub-image counts, arrays, labels, validation images."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("train", {}).get("complete"):
            raise ClassSRError(
                f"the sub-image store {self.root} is incomplete (prepare was interrupted); "
                "run `classsr prepare CONFIG` again, it continues where it stopped"
            )
        self.items: list[dict] = self.manifest["train"]["items"]
        self.counts = np.array([it["count"] for it in self.items], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def signature(self) -> str:
        return self.manifest["train"]["signature"]

    def item_arrays(self, i: int, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        mode = "r" if mmap else None
        it = self.items[i]
        lr = np.load(self.root / it["lr"], mmap_mode=mode)
        hr = np.load(self.root / it["hr"], mmap_mode=mode)
        return lr, hr

    def paths(self) -> list[tuple[str, str]]:
        return [(str(self.root / it["lr"]), str(self.root / it["hr"])) for it in self.items]

    def divide_info(self) -> dict[str, Any] | None:
        div = self.manifest.get("divide")
        if not div or div.get("signature") != self.signature:
            return None
        if not (self.root / "labels.npy").is_file():
            return None
        return div

    def labels(self) -> np.ndarray:
        if self.divide_info() is None:
            raise ClassSRError(
                f"the sub-images in {self.root} have no up-to-date class labels; "
                "run `classsr divide CONFIG` first"
            )
        return np.load(self.root / "labels.npy")

    def val_images(self, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
        items = self.manifest.get("val", {}).get("items", [])[:limit]
        return [
            (it["key"], np.load(self.root / it["lr"]), np.load(self.root / it["hr"]))
            for it in items
        ]


def apply_aug(img: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations (bit 0: left-right, bit 1: up-down, bit 2: transpose)."""
    if code & 1:
        img = img[:, ::-1]
    if code & 2:
        img = img[::-1]
    if code & 4:
        img = img.transpose(1, 0, 2)
    return img


class PairDataset:
    """``(index, aug_code) -> (input uint8 CHW, HR uint8 CHW)`` over a store's sub-images.

    Arrays are memory-mapped on first use in each process (never pickled), so DataLoader
    workers start cheaply.
    """

    def __init__(self, store: Store):
        self.paths = store.paths()
        self.offsets = store.offsets
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._open:
            lr, hr = self.paths[i]
            self._open[i] = (np.load(lr, mmap_mode="r"), np.load(hr, mmap_mode="r"))
        return self._open[i]

    def __getitem__(self, key):
        import torch

        index, code = key
        item = int(np.searchsorted(self.offsets, index, side="right") - 1)
        lr_all, hr_all = self._arrays(item)
        local = index - int(self.offsets[item])
        lr = apply_aug(lr_all[local], code)
        hr = apply_aug(hr_all[local], code)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return to_t(lr), to_t(hr)

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}


class ShardedBatchSampler:
    """Infinite batches for one process: the distributed sampler of this project.

    Each epoch is a seeded permutation of ``indices`` (repeated when there are fewer than
    one global batch); iteration ``t`` takes global batch ``t`` of it and this rank keeps
    every ``world``-th sample. Each sample carries a random flip/rotation code. Everything is
    a function of ``(seed, t)``, so resuming at iteration ``t`` continues the very same
    sequence, and all ranks agree on the permutation without communicating.
    """

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        *,
        rank: int = 0,
        world: int = 1,
        seed: tuple[int, ...] | int = 0,
        start: int = 0,
        augment: bool = True,
    ):
        if len(indices) == 0:
            raise ClassSRError("no training samples to draw from")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch = batch_size
        self.rank, self.world = rank, world
        self.seed = list(seed) if isinstance(seed, (tuple, list)) else [seed]
        self.start = start
        self.augment = augment
        self.global_batch = batch_size * world
        n = len(self.indices)
        self.per_epoch = max(1, n // self.global_batch)
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([*self.seed, epoch])
            n = len(self.indices)
            reps = -(-self.global_batch // n)  # a class smaller than one batch repeats
            order = np.concatenate([rng.permutation(n) for _ in range(reps)])
            codes = (
                rng.integers(0, 8, size=len(order))
                if self.augment
                else np.zeros(len(order), dtype=np.int64)
            )
            self._epoch = (epoch, self.indices[order], codes)
        return self._epoch[1], self._epoch[2]

    def batch_at(self, t: int) -> list[tuple[int, int]]:
        epoch, j = divmod(t, self.per_epoch)
        order, codes = self._epoch_order(epoch)
        sl = slice(j * self.global_batch + self.rank, (j + 1) * self.global_batch, self.world)
        return [(int(i), int(c)) for i, c in zip(order[sl], codes[sl])]

    def __iter__(self):
        t = self.start
        while True:
            yield self.batch_at(t)
            t += 1


def width_at(t: int, num_branches: int, seed: tuple[int, ...] | int = 0) -> int:
    """The branch that step ``t`` of shared-weight stage 1 trains.

    Steps come in blocks of ``num_branches``; each block visits every width once, in a
    seeded random order. Every width gets the same number of updates (a plain random draw
    lets one width fall behind), and the choice is a function of ``(seed, t)``, so resuming
    continues the same schedule.
    """
    block, j = divmod(t, num_branches)
    seed = list(seed) if isinstance(seed, (tuple, list)) else [seed]
    return int(np.random.default_rng([*seed, block]).permutation(num_branches)[j])


class WidthSampler:
    """Batches for shared-weight stage 1: step ``t`` draws from the class of
    :func:`width_at` ``(t)``, through that class's own :class:`ShardedBatchSampler` (each
    class is at its ``t // num_branches``-th batch: one per block)."""

    def __init__(self, samplers: list[ShardedBatchSampler], seed, start: int = 0):
        self.samplers = samplers
        self.seed = seed
        self.start = start

    def batch_at(self, t: int) -> list[tuple[int, int]]:
        m = len(self.samplers)
        return self.samplers[width_at(t, m, self.seed)].batch_at(t // m)

    def __iter__(self):
        t = self.start
        while True:
            yield self.batch_at(t)
            t += 1
