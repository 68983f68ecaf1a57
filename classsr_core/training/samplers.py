"""Which sub-images each iteration trains on.

:class:`ShardedBatchSampler` makes each iteration's batch a pure function of
``(seed, iteration, rank)``; that is what lets ``--resume`` continue exactly, mid-epoch.
:class:`WidthSampler` and :func:`width_at` schedule the widths of a shared-weight stage 1.
"""

from __future__ import annotations

import numpy as np

from classsr_core.errors import ClassSRError


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
