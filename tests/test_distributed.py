"""Two processes on CPU (gloo, as under torchrun): DDP keeps both ranks' weights identical."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import micro_config, write_photos

from classsr_core.io.checkpoint import read_checkpoint
from classsr_core.training.divide import divide
from classsr_core.training.prepare import prepare


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_json: str, out: str) -> None:
    # What torchrun puts in the environment of each process.
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
        }
    )
    from classsr_core.training.config import validate_train_config
    from classsr_core.training.trainer import train

    cfg = validate_train_config(json.loads(cfg_json))
    trainer = train(cfg, "all", progress=False)
    torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    photos = write_photos(tmp_path / "hr", 3)
    stage = {"iterations": 4, "batch_size": 4, "save_every": 2, "log_every": 1}
    cfg = micro_config(
        tmp_path, photos, stages={s: stage for s in ("branches", "classifier", "joint")}
    )
    prepare(cfg, progress=False)  # as advised: prepare and divide before torchrun
    divide(cfg, progress=False, quiet=True)
    mp.spawn(
        _worker,
        args=(2, _free_port(), json.dumps(cfg.resolved()), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between the ranks"
    saved, meta = read_checkpoint(cfg.out_dir / "joint.safetensors")
    for k in a:
        assert torch.equal(saved[k], a[k])
    init, _ = read_checkpoint(cfg.out_dir / "branches.safetensors")
    assert not torch.equal(saved["classifier.fc.weight"], init["classifier.fc.weight"])
    # rank 0 alone logs: one record per logged iteration, not two
    log = [json.loads(line) for line in (cfg.out_dir / "log.jsonl").read_text().splitlines()]
    steps = [(r["stage"], r["part"], r["iteration"]) for r in log if "lr" in r]
    assert len(steps) == len(set(steps)) == 4 * (2 + 1 + 1)
