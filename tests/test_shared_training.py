"""Stage 1 of a shared-weight model: one run that samples a width per step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import micro_config, write_photos

from classsr_core.io.checkpoint import read_checkpoint
from classsr_core.training.divide import divide
from classsr_core.training.prepare import prepare
from classsr_core.training.samplers import ShardedBatchSampler, WidthSampler, width_at
from classsr_core.training.trainer import train


def test_width_schedule_visits_every_width_once_per_block():
    seq = [width_at(t, 3, seed=(0, 0)) for t in range(300)]
    for b in range(100):
        assert sorted(seq[3 * b : 3 * b + 3]) == [0, 1, 2]
    assert seq != [t % 3 for t in range(300)]  # shuffled, not round-robin
    assert seq == [width_at(t, 3, seed=(0, 0)) for t in range(300)]  # a function of (seed, t)


def test_each_step_draws_from_its_widths_class():
    per_class = [np.arange(0, 10), np.arange(10, 30), np.arange(30, 35)]
    samplers = [ShardedBatchSampler(idx, 4, seed=k) for k, idx in enumerate(per_class)]
    sampler = WidthSampler(samplers, seed=7)
    for t in range(30):
        k = width_at(t, 3, seed=7)
        assert {i for i, _ in sampler.batch_at(t)} <= set(per_class[k].tolist())


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    photos = write_photos(tmp / "hr", 3)

    def config(name):
        cfg = micro_config(
            tmp / name,
            photos,
            photos,  # validation on the training photos: only the records matter here
            threads=1,
            model={"widths": [4, 6, 8], "shared_weights": True},
            divide={"ratios": [1, 1, 1]},
            stages={"branches": {"iterations": 9, "save_every": 3}},
        )
        cfg.data.store = str(tmp / "store")
        return cfg

    cfg = config("straight")
    prepare(cfg, progress=False)
    divide(cfg, progress=False, quiet=True)
    torch.manual_seed(0)
    trainer = train(cfg, "branches", progress=False)
    return config, trainer


def test_one_run_trains_every_width_of_the_supernet(shared_run):
    config, trainer = shared_run
    cfg = config("straight")
    state, meta = read_checkpoint(cfg.out_dir / "branches.safetensors")
    assert meta["complete"] and meta["model"]["shared_weights"]
    # Stored: the widest branch (the supernet) and the classifier, nothing else.
    assert all(k.startswith(("branches.2.", "classifier.")) for k in state)
    # Every width trains: a slice registers no parameters of its own, and counting those
    # had left all but the widest untrained.
    assert trainer._trainable_branches() == [0, 1, 2]
    # Every width was validated at the end of the one run.
    log = [json.loads(line) for line in (cfg.out_dir / "log.jsonl").read_text().splitlines()]
    assert sorted(r["part"] for r in log if "val_psnr" in r) == [0, 1, 2]

    fresh = config("fresh")
    torch.manual_seed(fresh.seed)
    from classsr_core.model.wrapper import ClassWrapper

    init = ClassWrapper(scale=2, **fresh.model.wrapper_kwargs()).state_dict()
    first = "branches.2.head_conv.0.weight"
    # The first 4 output channels (the narrowest branch's slice) moved, and so did the rest.
    assert not torch.equal(state[first][:4], init[first][:4])
    assert not torch.equal(state[first][6:], init[first][6:])


def test_shared_stage_one_resumes_exactly(shared_run):
    config, _ = shared_run
    ref, _ = read_checkpoint(config("straight").out_dir / "branches.safetensors")
    _crash_resume_and_compare(config("crashed"), 5, ref)


def _crash_resume_and_compare(cfg, at: int, ref: dict) -> None:
    """Stage 1 of ``cfg`` interrupted at iteration ``at``, resumed, ends with ``ref``."""

    def crash(event):
        if event["iteration"] == at:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, "branches", progress=False, callback=crash)
    train(cfg, "branches", resume=True, progress=False)
    state, _ = read_checkpoint(cfg.out_dir / "branches.safetensors")
    for k in ref:
        assert torch.equal(state[k], ref[k]), k


def test_shared_stage_one_starts_from_a_plain_network_and_skips_width_zero(tmp_path):
    photos = write_photos(tmp_path / "hr", 2)
    plain_cfg = micro_config(tmp_path / "o", photos, threads=1, model={"widths": [8]})
    plain_cfg.data.store = str(tmp_path / "store")
    train(plain_cfg, "branches", progress=False)
    plain, _ = read_checkpoint(plain_cfg.out_dir / "model.safetensors")

    cfg = micro_config(
        tmp_path / "fast",
        photos,
        threads=1,
        model={
            "widths": [0, 4, 8],
            "shared_weights": True,
            "backbone_kwargs": {"m": 1, "skip": "bicubic"},
        },
        divide={"ratios": [1, 1, 1]},
        stages={
            "branches": {
                "init": str(plain_cfg.out_dir / "model.safetensors"),
                "iterations": 2,
                "lr": 1e-12,  # the start point, not the training, is under test
            }
        },
    )
    cfg.data.store = str(tmp_path / "store")
    trainer = train(cfg, "branches", progress=False)  # divides the store first
    state, _ = read_checkpoint(cfg.out_dir / "branches.safetensors")
    for k, v in plain.items():  # the supernet (branch 3 of 3) is the plain network
        torch.testing.assert_close(state[k.replace("branches.0.", "branches.2.")], v)
    assert trainer.model.branches[0](torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    assert trainer._trainable_branches() == [1, 2]  # width 0, the skip alone, learns nothing


def test_sandwich_trains_every_width_each_step_on_all_sub_images(tmp_path):
    """``sandwich: true``: each step one batch of all sub-images trains every width (the
    losses summed), so the narrowest slice learns the smooth patches too; it resumes to the
    same weights, and a model without shared weights refuses it, naming the fix."""
    photos = write_photos(tmp_path / "hr", 3)

    def config(name, **model):
        cfg = micro_config(
            tmp_path / name,
            photos,
            photos,
            threads=1,
            model=model
            or {
                "widths": [0, 4, 8],
                "shared_weights": True,
                "backbone_kwargs": {"m": 1, "skip": "bicubic"},
            },
            divide={"ratios": [1, 1, 1]},
            stages={"branches": {"iterations": 4, "save_every": 2, "sandwich": True}},
        )
        cfg.data.store = str(tmp_path / "store")
        return cfg

    cfg = config("sandwich")
    torch.manual_seed(0)
    train(cfg, "branches", progress=False)
    log = [json.loads(line) for line in (cfg.out_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "l1_1" in r]
    assert steps and all("l1_2" in r and "l1_0" not in r for r in steps)  # width 0: no weights
    ref, _ = read_checkpoint(cfg.out_dir / "branches.safetensors")

    torch.manual_seed(0)
    _crash_resume_and_compare(config("crashed"), 3, ref)

    from classsr_core.errors import ConfigError

    with pytest.raises(ConfigError, match="shared_weights"):
        train(config("separate", widths=[4, 6, 8]), "branches", progress=False)
