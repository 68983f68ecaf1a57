"""The data stage of training: make sure the sub-image store exists and is divided.

The pieces live in their own modules: :mod:`~classsr_core.training.sources` (folders,
``skimage:`` photos), :mod:`~classsr_core.training.prepare` (HR -> task inputs -> sub-image
store, manifest), :mod:`~classsr_core.training.divide` (classes by difficulty),
:mod:`~classsr_core.training.dataset` (``Store``, ``PairDataset``) and
:mod:`~classsr_core.training.samplers`. :func:`ensure_data` runs ``prepare`` and ``divide``
before ``train`` when their results are missing or do not fit the config.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from classsr_core.errors import ClassSRError
from classsr_core.training.config import TrainConfig
from classsr_core.training.dataset import Store
from classsr_core.training.divide import divide
from classsr_core.training.prepare import MANIFEST, prepare, read_manifest


def _labels_fit(cfg: TrainConfig, div: dict[str, Any] | None) -> bool:
    """Do the store's labels split the data the way this config asks?"""
    if div is None:
        return False
    m = cfg.model.num_branches
    ratios = np.asarray(cfg.divide.ratios or [1.0] * m, dtype=np.float64)
    have = np.asarray(div["ratios"], dtype=np.float64)
    return len(have) == m and np.allclose(have / have.sum(), ratios / ratios.sum())


def ensure_data(cfg: TrainConfig, stages: list[str], progress: bool, is_main: bool) -> None:
    """Run ``prepare`` and ``divide`` when their results are missing or do not fit."""
    root = cfg.store_dir
    ready = (root / MANIFEST).is_file() and read_manifest(root).get("train", {}).get("complete")
    needs_labels = "branches" in stages and cfg.model.num_branches > 1
    labelled = ready and _labels_fit(cfg, Store(root).divide_info())
    if ready and (labelled or not needs_labels):
        return
    if not is_main:  # rank 0 failed to make them (it runs first)
        raise ClassSRError(
            f"the data at {root} is not prepared; run `classsr prepare CONFIG` and "
            "`classsr divide CONFIG` before launching with torchrun"
        )
    if not ready:
        print(f"preparing sub-images in {root} ...")
        print(json.dumps(prepare(cfg, progress=progress)))
    if needs_labels and not _labels_fit(cfg, Store(root).divide_info()):
        divide(cfg, progress=progress)
