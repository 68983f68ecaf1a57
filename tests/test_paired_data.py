"""Paired data (#27): a folder of inputs and a folder of targets, matched by file name, train
any task with no code; files without a partner and pairs of the wrong size are refused with
their names."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import micro_config, photo

from classsr_core.cli import main
from classsr_core.errors import ConfigError, InputError
from classsr_core.tasks import Task
from classsr_core.training.config import validate_train_config
from classsr_core.training.dataset import Store
from classsr_core.training.prepare import crop_starts, prepare
from classsr_core.training.sources import list_sources

REPO = Path(__file__).resolve().parents[1]
NAMES = ("a", "b", "c")


def degrade(target: np.ndarray, scale: int, seed: int) -> np.ndarray:
    """A seeded stand-in for a real degradation no task synthesises: subsample, streaks
    (rain) and noise."""
    rng = np.random.default_rng(seed)
    x = target[::scale, ::scale].astype(np.float32)
    x[:, rng.integers(0, x.shape[1], 4)] += 60.0  # vertical streaks
    x += rng.normal(0.0, 8.0, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def write_pairs(root: Path, scale: int, size=(64, 80)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """3 pairs under root/input and root/target; one input saved as .bmp (matched by name
    without the extension). Returns name -> (input, target) as uint8 arrays."""
    (root / "input").mkdir(parents=True)
    (root / "target").mkdir(parents=True)
    pairs = {}
    for i, name in enumerate(NAMES):
        target = photo(*size, seed=i)
        x = degrade(target, scale, seed=100 + i)
        Image.fromarray(target).save(root / "target" / f"{name}.png")
        Image.fromarray(x).save(root / "input" / f"{name}.{'bmp' if i == 1 else 'png'}")
        pairs[name] = (x, target)
    return pairs


def paired(root: Path) -> dict[str, str]:
    return {"inputs": str(root / "input"), "targets": str(root / "target")}


def test_prepare_stores_the_given_inputs_matched_to_their_targets(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", scale=2)
    cfg = micro_config(tmp_path, tmp_path, data={"train": paired(tmp_path / "pairs")})
    summary = prepare(cfg, progress=False)
    assert summary["train_images"] == 3 and summary["skipped"] == {"train": 0, "val": 0}
    store = Store(cfg.store_dir)
    assert [it["key"] for it in store.items] == ["a.png@1", "b.png@1", "c.png@1"]
    ys, xs = crop_starts(64, 32, 16), crop_starts(80, 32, 16)
    corners = [(y, x) for y in ys for x in xs]
    task = cfg.make_task()
    for i, name in enumerate(NAMES):
        x, target = pairs[name]
        lr, hr = store.item_arrays(i)
        assert len(lr) == len(hr) == len(corners)
        for k, (y, x0) in enumerate(corners):
            np.testing.assert_array_equal(hr[k], target[y : y + 32, x0 : x0 + 32])
            np.testing.assert_array_equal(lr[k], x[y // 2 : y // 2 + 16, x0 // 2 : x0 // 2 + 16])
        # The input is the file's, not the task's bicubic downscale of the target.
        made = task.make_input(target.astype(np.float32) / 255, None)
        assert not np.array_equal(lr[0], np.rint(made[:16, :16] * 255).astype(np.uint8))
    # A second run reuses every pair; a changed input is made again.
    assert prepare(cfg, progress=False)["reused"] == 3
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "pairs/input/c.png")
    summary = prepare(cfg, progress=False)
    assert (summary["made"], summary["reused"]) == (1, 2)
    assert not Store(cfg.store_dir).item_arrays(2)[0].any()


def test_unmatched_files_are_refused_with_their_names(tmp_path):
    write_pairs(tmp_path / "pairs", scale=2)
    (tmp_path / "pairs/target/b.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pairs/target/z.png")
    with pytest.raises(InputError) as info:
        list_sources(paired(tmp_path / "pairs"), "train", scale=2)
    msg = str(info.value)
    assert "data.train: unmatched files" in msg
    assert "1 input(s) without a target" in msg and "b.bmp" in msg
    assert "1 target(s) without an input" in msg and "z.png" in msg
    assert "file name without the extension" in msg


def test_pairs_of_the_wrong_size_are_refused_with_their_names(tmp_path):
    write_pairs(tmp_path / "pairs", scale=2)
    Image.fromarray(photo(60, 80, 0)).save(tmp_path / "pairs/target/a.png")
    with pytest.raises(InputError) as info:
        list_sources(paired(tmp_path / "pairs"), "train", scale=2)
    msg = str(info.value)
    assert "1 pair(s) of the wrong size" in msg and "scale 2" in msg
    assert "a.png is 60x80, its input a.png 32x40 (expected 64x80)" in msg
    # The same pair is right for no other scale either: at scale 1 every pair is wrong.
    with pytest.raises(InputError, match="3 pair"):
        list_sources(paired(tmp_path / "pairs"), "train", scale=1)
    # Through prepare (the training pipeline), before any sub-image is written.
    cfg = micro_config(tmp_path, tmp_path, data={"train": paired(tmp_path / "pairs")})
    with pytest.raises(InputError, match="wrong size"):
        prepare(cfg, progress=False)
    assert not list(cfg.store_dir.glob("train/*.npy"))


def test_paired_config_entries_are_checked(tmp_path):
    base = micro_config(tmp_path, tmp_path).model_dump(mode="json")
    base["data"]["train"] = {"inputs": "in"}
    with pytest.raises(ConfigError, match="missing targets"):
        validate_train_config(base)
    base["data"]["train"] = {"inputs": "in", "targets": "out"}
    base["data"]["scales"] = [1.0, 0.5]
    with pytest.raises(ConfigError, match="multi-scale copies need clean images"):
        validate_train_config(base)
    base["data"]["scales"] = [1.0]
    cfg = validate_train_config(base)
    assert (cfg.data.train.inputs, cfg.data.train.targets) == ("in", "out")
    with pytest.raises(ConfigError, match=r"data\.train\.inputs: folder in does not exist"):
        prepare(cfg, progress=False)


@dataclass
class Derain(Task):
    """docs/tasks/paired.md's task: real rain, which no code synthesises; no make_input."""

    name: str = "derain"
    scale: int = 1

    def crop_border(self) -> int:
        return 0


def test_a_task_without_a_degradation_trains_on_pairs_only(tmp_path, monkeypatch):
    from classsr_core import hookimpl
    from classsr_core.plugins import registry as registry_module

    reg = registry_module.Registry()
    reg.load_entry_points()
    plugin = types.SimpleNamespace(
        classsr_register_tasks=hookimpl(lambda register: register("derain", Derain))
    )
    reg.add_plugin(plugin, "derain_plugin")
    monkeypatch.setattr(registry_module, "_registry", reg)

    write_pairs(tmp_path / "pairs", scale=1)
    data = micro_config(tmp_path, tmp_path).model_dump(mode="json")
    data["task"] = {"name": "derain"}  # scale 1: the task gives it
    data["data"]["train"] = paired(tmp_path / "pairs")
    cfg = validate_train_config(data)
    assert prepare(cfg, progress=False)["sub_images"] == 3 * 3 * 4
    # Given clean images instead, it says what it needs.
    with pytest.raises(InputError, match=r"cannot make its inputs.*paired data"):
        cfg.make_task().make_input(np.zeros((8, 8, 3), np.float32), None)


@pytest.mark.slow
def test_the_example_config_trains_on_paired_folders(tmp_path, monkeypatch, capsys):
    """examples/configs/paired.yaml as a user runs it, on 3 pairs and 2 steps a stage."""
    write_pairs(tmp_path / "train", scale=1, size=(48, 56))
    write_pairs(tmp_path / "val", scale=1, size=(40, 40))
    monkeypatch.chdir(REPO)
    short = [
        f"out={tmp_path / 'run'}",
        f"data.train.inputs={tmp_path / 'train/input'}",
        f"data.train.targets={tmp_path / 'train/target'}",
        f"data.val.inputs={tmp_path / 'val/input'}",
        f"data.val.targets={tmp_path / 'val/target'}",
        "model.backbone_kwargs={nb: 2}",
        "threads=1",
        *(
            f"stages.{s}.{k}={v}"
            for s in ("branches", "classifier", "joint")
            for k, v in (("iterations", 2), ("batch_size", 4), ("save_every", 2))
        ),
        "stages.branches.warmup=0",
    ]
    argv = ["train", "examples/configs/paired.yaml", "--no-progress"]
    assert main([*argv, *(a for s in short for a in ("--set", s))]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    store = Store(tmp_path / "run" / "data")
    assert [it["key"] for it in store.items] == ["a.png@1", "b.png@1", "c.png@1"]
    assert len(store.manifest["val"]["items"]) == 3
