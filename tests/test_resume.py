"""--resume: an interrupted seeded CPU run ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from train_helpers import micro_config, write_photos

from classsr_core.io.checkpoint import read_checkpoint
from classsr_core.training.divide import divide
from classsr_core.training.prepare import prepare
from classsr_core.training.trainer import train

# EMA, warm-up and a cosine restart in every stage: all of their state must survive.
STAGE = {"ema_decay": 0.9, "warmup": 2, "lr_cycles": 2, "iterations": 8, "save_every": 2}


class Crash(Exception):
    """A process killed mid-run: nothing is saved beyond the last periodic state."""


def _config(tmp_path, photos, name):
    cfg = micro_config(
        tmp_path / name,
        photos,
        threads=1,
        stages={s: STAGE for s in ("branches", "classifier", "joint")},
    )
    cfg.data.store = str(tmp_path / "store")  # prepared once, shared by the runs
    return cfg


def _crash_at(stage, part, iteration, exc=Crash):
    def callback(event):
        if (event["stage"], event["part"], event["iteration"]) == (stage, part, iteration):
            raise exc

    return callback


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    photos = write_photos(tmp / "hr", 3)
    cfg = _config(tmp, photos, "straight")
    prepare(cfg, progress=False)
    divide(cfg, progress=False, quiet=True)
    train(cfg, "all", progress=False)
    state, _ = read_checkpoint(cfg.out_dir / "joint.safetensors")
    return tmp, photos, state


def _assert_same(state, ref):
    assert state.keys() == ref.keys()
    for k in ref:
        assert torch.equal(state[k], ref[k]), f"{k} differs after resuming"


def test_crashes_in_two_stages_then_resume(reference):
    tmp, photos, ref = reference
    cfg = _config(tmp, photos, "crashed")
    # mid-branch 1 of stage 1 (last save at iteration 4 of that branch) ...
    with pytest.raises(Crash):
        train(cfg, "all", progress=False, callback=_crash_at("branches", 1, 5))
    assert not (cfg.out_dir / "branches.safetensors").exists()
    _, meta = read_checkpoint(cfg.out_dir / "state" / "branches.safetensors")
    assert (meta["part"], meta["iteration"]) == (1, 4)
    # ... then again mid-stage 2 (stage 1 is complete by then and is skipped) ...
    with pytest.raises(Crash):
        train(cfg, "all", resume=True, progress=False, callback=_crash_at("classifier", 0, 7))
    assert (cfg.out_dir / "branches.safetensors").exists()
    # ... and a last resume finishes the run.
    trainer = train(cfg, "all", resume=True, progress=False)
    assert [r.stage for r in trainer.results] == ["classifier", "joint"]
    state, meta = read_checkpoint(cfg.out_dir / "joint.safetensors")
    assert meta["complete"] and meta["iteration"] == 8
    _assert_same(state, ref)


def test_ctrl_c_saves_the_exact_iteration(reference):
    tmp, photos, ref = reference
    cfg = _config(tmp, photos, "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, "all", progress=False, callback=_crash_at("joint", 0, 5, KeyboardInterrupt))
    _, meta = read_checkpoint(cfg.out_dir / "state" / "joint.safetensors")
    assert meta["iteration"] == 5  # not the periodic save at 4
    train(cfg, "all", resume=True, progress=False)
    state, _ = read_checkpoint(cfg.out_dir / "joint.safetensors")
    _assert_same(state, ref)


def test_without_resume_a_stage_starts_over(reference):
    tmp, photos, ref = reference
    cfg = _config(tmp, photos, "restarted")
    with pytest.raises(Crash):
        train(cfg, "all", progress=False, callback=_crash_at("branches", 0, 3))
    train(cfg, "all", progress=False)  # no --resume: fresh, same seed, same result
    state, _ = read_checkpoint(cfg.out_dir / "joint.safetensors")
    _assert_same(state, ref)
