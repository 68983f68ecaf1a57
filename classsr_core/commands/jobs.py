"""A job of many images over the ranks of ``torchrun`` (or one process): sharding by pixel
count, agreement before any work, a progress bar over the whole job on rank 0, and one
report.

Under ``torchrun`` the environment names the rank, the world and the rendezvous; each rank
joins the group (:func:`classsr_core.training.distributed.setup`: ``cuda:LOCAL_RANK`` with
NCCL when CUDA is available, gloo on CPU with the cores shared among the local ranks) and
a gloo group carries the small messages here (progress ticks, the report), whatever the
device. Without ``torchrun`` a job is one process and nothing here talks to anyone.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _one_process() -> Any:
    from classsr_core.training.distributed import DistContext

    return DistContext()


@dataclass
class Job:
    """This rank's part of a job: the process group's
    :class:`~classsr_core.training.distributed.DistContext` (``rank``, ``world``, the
    device, ``distributed``, ``is_main``: read through to it) and the gloo group the small
    messages travel on. ``Job()``: a one-process job."""

    ctx: Any = field(default_factory=_one_process)  # a DistContext
    _group: Any = None
    _sent: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world(self) -> int:
        return self.ctx.world

    @property
    def device(self) -> Any:
        """The rank's ``torch.device`` under torchrun; ``None``: the command's ``--device``."""
        return self.ctx.device if self.ctx.distributed else None

    @property
    def distributed(self) -> bool:
        return self.ctx.distributed

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank (a barrier too)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return self.all_gather(obj if self.is_main else None)[0]

    def tick(self) -> None:
        """One image done on this rank (rank 0's bar counts it)."""
        if self.distributed and not self.is_main:
            import torch
            import torch.distributed as dist

            self._sent.append(dist.isend(torch.ones(1), dst=0, group=self._group))

    def barrier(self) -> None:
        """Every rank waits here for the others (over gloo, whatever the device)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def close(self) -> None:
        for req in self._sent:
            req.wait()
        self._sent.clear()
        self.ctx.close()  # idempotent: restores the threads, leaves the group once


def start(requested_device: str | None) -> Job:
    """Join ``torchrun``'s group when the environment describes one; else a one-process job.

    Under ``torchrun`` the device is ``cuda:LOCAL_RANK`` when CUDA is there (or asked for:
    a ``--device cuda:N`` index is replaced by the rank's), else the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Job()
    import torch
    import torch.distributed as dist

    from classsr_core.device import pick_device
    from classsr_core.errors import InputError
    from classsr_core.training.distributed import setup

    # Checked here, before the group forms, so that the message is about this command and
    # not a traceback from torch.cuda.set_device or the training setup's wording.
    device = pick_device(requested_device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise InputError(
            f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "give torchrun --nproc-per-node at most that many, or --device cpu"
        )
    if device.type not in ("cuda", "cpu"):
        raise InputError(
            f"torchrun jobs run on CUDA or the CPU, not {device.type}; pass --device cpu"
        )
    ctx = setup(str(device.type))
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Job(ctx, group)


def run(requested_device: str | None, body: Callable[[Job], int]) -> int:
    """``body(job)`` on this rank, the job closed after. A refusal (:class:`ClassSRError`)
    comes from every rank alike: rank 0 raises it for the command line to print, once; the
    others exit with status 2 in silence."""
    from classsr_core.errors import ClassSRError

    try:
        job = start(requested_device)
    except ClassSRError:
        if os.environ.get("RANK", "0") != "0":
            return 2
        raise
    try:
        status = body(job)
        # Leave together: a rank that tore down its gloo group while rank 0 still wrote the
        # job's outputs sometimes aborted at exit ("terminate called without an active
        # exception"). A rank that failed skips this; torchrun then stops the others.
        job.barrier()
        return status
    except ClassSRError:
        if not job.is_main:
            return 2
        raise
    finally:
        job.close()


def shard(sizes: list[int], world: int) -> list[list[int]]:
    """Indices of ``sizes`` per rank: largest first onto the least-loaded rank (ties: the
    lower index, the lower rank), each rank's own list back in input order. Deterministic:
    every rank computes the same split from the same sizes."""
    load = [0] * world
    owned: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owned[r].append(i)
        load[r] += max(int(sizes[i]), 1)
    return [sorted(o) for o in owned]


class Progress:
    """A bar over the whole job on rank 0 (stderr); other ranks tick it by message."""

    def __init__(self, job: Job, counts: list[int], desc: str, disable: bool):
        from tqdm import tqdm

        self.job = job
        total = sum(counts)
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="img",
            disable=disable or not job.is_main or total < 2,
            file=sys.stderr,  # stdout carries the results (and --json)
        )
        self.waiting: dict[int, list] = {}
        if job.distributed and job.is_main:
            for r in range(1, job.world):
                if counts[r]:
                    self.waiting[r] = [counts[r], self._post(r)]

    def _post(self, r: int):
        import torch
        import torch.distributed as dist

        buf = torch.zeros(1)
        return dist.irecv(buf, src=r, group=self.job._group)

    def _poll(self, block: bool) -> None:
        for r in list(self.waiting):
            left, req = self.waiting[r]
            while left and (block or req.is_completed()):
                req.wait()
                self.bar.update(1)
                left -= 1
                req = self._post(r) if left else None
            if left:
                self.waiting[r] = [left, req]
            else:
                del self.waiting[r]

    def done_one(self) -> None:
        if self.job.is_main:
            self.bar.update(1)
            self._poll(block=False)
        else:
            self.job.tick()

    def finish(self) -> None:
        if self.job.is_main:
            self._poll(block=True)
        self.bar.close()

    def write(self, text: str, file: Any = None) -> None:
        self.bar.write(text, file=file if file is not None else sys.stdout)


def write_report(path: Path, reports: list[dict[str, Any]], keep: list[dict] = ()) -> None:
    """One JSON object per line, atomically: ``keep`` (an earlier run's lines for the inputs
    skipped now) then ``reports``."""
    from classsr_core.io.atomic import atomic_write_text

    lines = [json.dumps(r) for r in [*keep, *reports]]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_report(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
