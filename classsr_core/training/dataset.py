"""The read side of a prepared store (:class:`Store`) and the training pairs it serves
(:class:`PairDataset`, with :func:`apply_aug`'s flips and rotations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from classsr_core.errors import ClassSRError
from classsr_core.training.prepare import read_manifest


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
