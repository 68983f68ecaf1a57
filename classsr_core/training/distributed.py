"""Process-group setup for ``torchrun``: DDP with NCCL on CUDA and gloo on CPU.

Under ``torchrun --nproc_per_node N`` the environment carries ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; without it everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from classsr_core.device import pick_device
from classsr_core.errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    prev_threads: int | None = None  # restored by close(): training is not the whole process

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.prev_threads is not None:
            torch.set_num_threads(self.prev_threads)
            self.prev_threads = None
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def setup(requested_device: str | None = None, threads: int | None = None) -> DistContext:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    prev = torch.get_num_threads()
    if world <= 1:
        if threads:
            torch.set_num_threads(threads)
        return DistContext(device=device, prev_threads=prev)

    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
        # N processes on one machine share its cores; oversubscription only adds contention.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))
    else:
        raise ConfigError(
            f"distributed training runs on CUDA (NCCL) or CPU (gloo), not {device.type}; "
            "set device: cpu or cuda"
        )
    if threads and device.type == "cuda":
        torch.set_num_threads(threads)
    owns = False
    if not dist.is_initialized():
        # A long validation on rank 0 keeps the others waiting at a barrier: allow an hour.
        dist.init_process_group(backend, timeout=timedelta(minutes=60))
        owns = True
    return DistContext(rank, world, local_rank, device, owns, prev)
