"""The three training stages of ClassSR, resumable and distributed.

1. ``branches``: branch ``k`` trains alone (L1) on the sub-images of class ``k``. A model
   with one width is the "-O" baseline: its one branch trains on all sub-images. With
   ``shared_weights`` the branches are slices of one supernet, so training them one after
   another would let each overwrite the others; instead every step trains one width
   (:func:`classsr_core.training.samplers.width_at`) on a batch of its own class, or, with
   ``sandwich: true``, every width on one batch of all sub-images (a narrow slice then also
   learns the patches of other classes, which a per-cell router such as the edge table may
   still send it).
2. ``classifier``: the branches are frozen (their norm layers in eval mode, unlike the
   official code) and the Class-Module trains with :class:`ClassSRLoss` on the soft mix.
3. ``joint``: everything trains with the same loss.

Each stage starts from the previous stage's output (``OUT/<stage>.safetensors``) unless its
``init`` names another checkpoint, and writes its own output, which ``load_model`` reads.
While a stage runs, ``OUT/state/<stage>.safetensors`` (weights) and ``.pt`` (optimiser,
scheduler, EMA, RNG) are written every ``save_every`` iterations; ``--resume`` continues from
them and, because batches are a function of ``(seed, iteration)``, ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from classsr_core.base.grid import patch_grid
from classsr_core.errors import CheckpointError, ClassSRError, ConfigError
from classsr_core.io.atomic import atomic_path
from classsr_core.io.checkpoint import (
    load_into,
    read_checkpoint,
    read_training_state,
    save_state,
)
from classsr_core.model.sharing import SlicedBranch
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.training import distributed
from classsr_core.training.config import STAGES, StageSection, TrainConfig
from classsr_core.training.data import ensure_data
from classsr_core.training.dataset import PairDataset, Store
from classsr_core.training.losses import ClassSRLoss
from classsr_core.training.samplers import ShardedBatchSampler, WidthSampler, width_at

STATE_DIR = "state"
FINAL = "model.safetensors"


@dataclass
class ResumePoint:
    part: int = 0  # branch index in stage 1
    iteration: int = 0
    extra: dict[str, Any] | None = None  # optimiser / scheduler / EMA / RNG, when mid-part


@dataclass
class StageResult:
    stage: str
    path: Path
    val: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Part:
    """One call of :meth:`Trainer.fit`: what trains, with what, and how far it got."""

    stage: str
    part: int
    scfg: StageSection
    trainable: nn.Module  # what the optimiser updates
    runner: nn.Module  # what the forward calls (DDP-wrapped when distributed)
    optimizer: Any
    scheduler: Any
    ema: Any  # timm ModelEmaV3 or None
    criterion: ClassSRLoss | None  # None: plain L1 (stage 1)
    shared: bool  # shared-weight stage 1: each step trains the width of width_at(t)
    widths: list[int]  # the branches that train when shared, by index
    width_seed: tuple[int, ...]
    label: str
    start: int  # the iteration this call starts at
    done: int  # iterations finished so far
    history: list[dict] = field(default_factory=list)
    sums: dict[str, Any] = field(default_factory=dict)  # loss sums since the last log line
    n_sum: int = 0

    @property
    def iters(self) -> int:
        return self.scfg.iterations

    @property
    def sandwich(self) -> bool:
        """Shared: every width every step, on batches of all sub-images (only stage 1, whose
        section has the field, is ever shared)."""
        return self.shared and self.scfg.sandwich


def stages_for(cfg: TrainConfig, stage: str) -> list[str]:
    m = cfg.model.num_branches
    if stage == "all":
        return list(STAGES) if m > 1 else ["branches"]
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose branches, classifier, joint or all")
    if stage != "branches" and m == 1:
        raise ConfigError(
            f"stage {stage!r} trains a classifier, but the model has one branch (the '-O' "
            "baseline, no classifier); train it with --stage branches"
        )
    return [stage]


class Trainer:
    """Runs stages of one config. ``callback(event)`` is called after every iteration
    (tests use it to simulate a crash)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        progress: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.cfg = cfg
        self.resume = resume
        self.callback = callback
        self.ctx = distributed.setup(cfg.device, cfg.threads)
        self.device = self.ctx.device
        self.progress = progress and self.ctx.is_main
        self.task = cfg.make_task()
        self.out = cfg.out_dir
        self.model: nn.Module | None = None
        self.log_path = self.out / "log.jsonl"

    # -- entry point ---------------------------------------------------------------------
    def run(self, stage: str = "all") -> list[StageResult]:
        stages = stages_for(self.cfg, stage)
        if stage == "all" and stages == ["branches"]:
            self._say("one width: training the '-O' baseline (stage branches only, no classifier)")
        try:
            if self.ctx.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                ensure_data(self.cfg, stages, self.progress, True)
            self.ctx.barrier()
            if not self.ctx.is_main:
                ensure_data(self.cfg, stages, False, False)
            results = []
            for s in stages:
                out_path = self.out / f"{s}.safetensors"
                if self.resume and _complete(out_path) and not self._state_exists(s):
                    self._say(f"[{s}] already complete: {out_path} (skipped)")
                    continue
                results.append(self.run_stage(s))
            return results
        finally:
            self.ctx.close()

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank and every run
        return ClassWrapper(
            scale=self.task.scale, trust_code=self.cfg.trust_code, **self.cfg.model.wrapper_kwargs()
        )

    def _meta(self, stage: str, part: int, iteration: int, complete: bool, **extra) -> dict:
        return {
            "model": self.model.spec,
            "stage": stage,
            "part": part,
            "iteration": iteration,
            "complete": complete,
            "config": self.cfg.resolved(),
            **extra,
        }

    def _state_paths(self, stage: str) -> tuple[Path, Path]:
        d = self.out / STATE_DIR
        return d / f"{stage}.safetensors", d / f"{stage}.pt"

    def _state_exists(self, stage: str) -> bool:
        return self._state_paths(stage)[0].is_file()

    def _start_weights(self, stage: str, scfg: StageSection) -> None:
        previous = {"classifier": "branches", "joint": "classifier"}.get(stage)
        explicit = scfg.init is not None
        path = Path(scfg.init) if scfg.init else None
        if path is None and previous:
            path = self.out / f"{previous}.safetensors"
            if not path.is_file():
                raise ClassSRError(
                    f"stage {stage!r} starts from the output of stage {previous!r}, but {path} "
                    f"does not exist. Run `classsr train CONFIG --stage {previous}` first "
                    f"(or --stage all), or set stages.{stage}.init to a checkpoint."
                )
        if path is None:
            return
        if not path.is_file():
            raise ClassSRError(f"stages.{stage}.init: {path} does not exist")
        state, _ = read_checkpoint(path)
        if explicit and stage == "branches" and _one_branch(state) and self.model.num_classes > 1:
            state = self._from_plain(state, path)
        load_into(self.model, state, str(path))

    def _from_plain(self, state: dict, path: Path) -> dict:
        """Start stage 1 from a trained '-O' network: its weights go into every branch of
        the same shape (the widest; with shared weights, the supernet all widths slice),
        the rest keeps its fresh initialisation. The paper's branches likewise start from
        pre-trained networks."""
        full = self.model.state_dict()
        plain = {k[len("branches.0.") :]: v for k, v in state.items()}
        hits = []
        for i in range(self.model.num_classes):
            mine = {
                k[len(f"branches.{i}.") :]: v
                for k, v in full.items()
                if k.startswith(f"branches.{i}.")
            }
            if (
                mine
                and mine.keys() == plain.keys()
                and all(mine[k].shape == plain[k].shape for k in mine)
            ):
                hits.append(i)
                full.update({f"branches.{i}.{k}": v for k, v in plain.items()})
        if not hits:
            raise CheckpointError(
                f"stages.branches.init: {path} is a one-branch network that matches no branch "
                "of this model (compare the widths); give a checkpoint of this model instead"
            )
        self._say(f"[branches] branch(es) {[i + 1 for i in hits]} start from {path}")
        return full

    def _load_resume(self, stage: str) -> ResumePoint | None:
        weights, extra_path = self._state_paths(stage)
        if not weights.is_file():
            return None
        state, meta = read_checkpoint(weights)
        load_into(self.model, state, str(weights))
        point = ResumePoint(part=int(meta["part"]), iteration=int(meta["iteration"]))
        if point.iteration > 0:
            if not extra_path.is_file():
                raise CheckpointError(f"{extra_path} is missing; delete {weights} to restart")
            extra = read_training_state(extra_path)  # empty or foreign: a CheckpointError
            if (extra["part"], extra["iteration"]) != (point.part, point.iteration):
                raise CheckpointError(
                    f"{weights} (part {point.part}, iteration {point.iteration}) and "
                    f"{extra_path} (part {extra['part']}, iteration {extra['iteration']}) "
                    "disagree (interrupted while saving?); delete both to restart the stage"
                )
            point.extra = extra
        return point

    # -- one stage -----------------------------------------------------------------------
    def run_stage(self, stage: str) -> StageResult:
        scfg: StageSection = getattr(self.cfg.stages, stage)
        point = self._begin_stage(stage, scfg)
        store = Store(self.cfg.store_dir)
        val, history = self._train_parts(stage, scfg, store, point)
        path = self._finish_stage(stage, scfg, store, val)
        return StageResult(stage, path, val, history)

    def _begin_stage(self, stage: str, scfg: StageSection) -> ResumePoint:
        """A fresh model with the stage's starting weights (or its saved state) on the
        device; returns where training continues."""
        self.model = self.build_model()
        point = self._load_resume(stage) if self.resume else None
        if point is None:
            if self.resume:
                self._say(f"[{stage}] no saved state in {self.out / STATE_DIR}; starting fresh")
            self._start_weights(stage, scfg)
            point = ResumePoint()
        else:
            self._say(f"[{stage}] resuming at part {point.part}, iteration {point.iteration}")
        self.model.to(self.device)
        return point

    def _train_parts(
        self, stage: str, scfg: StageSection, store: Store, point: ResumePoint
    ) -> tuple[dict | None, list[dict]]:
        """Fit every part of the stage on its sub-images; ``(last validation, history)``."""
        dataset = PairDataset(store)
        if stage == "branches" and self._shared():
            if scfg.sandwich:  # one batch of all sub-images (every class) trains every width
                return self.fit(stage, 0, scfg, dataset, np.arange(len(store)), point)
            labels = store.labels()
            # A parameter-free branch (FSRCNN width 0: the skip alone) has nothing to train:
            # the schedule samples among the others.
            per_class = {k: np.flatnonzero(labels == k) for k in self._trainable_branches()}
            _check_classes(per_class)
            return self.fit(stage, 0, scfg, dataset, per_class, point)
        if stage == "branches":
            return self._fit_branches(scfg, store, dataset, point)
        indices = np.arange(len(store))
        return self.fit(stage, 0, scfg, dataset, indices, point)

    def _fit_branches(
        self, scfg: StageSection, store: Store, dataset: PairDataset, point: ResumePoint
    ) -> tuple[dict | None, list[dict]]:
        """Stage 1 without shared weights: each branch alone on its class, in turn."""
        stage = "branches"
        m = self.model.num_classes
        labels = store.labels() if m > 1 else np.zeros(len(store), dtype=np.int8)
        trainable = self._trainable_branches()
        history: list[dict] = []
        val = None
        for k in range(point.part, m):
            if k not in trainable:
                # e.g. FSRCNN width 0 (the bicubic skip alone): nothing to learn
                self._say(f"[{stage}] branch {k + 1}/{m} has no parameters: nothing to train")
                continue
            indices = np.flatnonzero(labels == k)
            _check_classes({k: indices})
            start = point if k == point.part else ResumePoint(part=k)
            val, hist = self.fit(stage, k, scfg, dataset, indices, start)
            history += hist
        return val, history

    def _finish_stage(self, stage: str, scfg: StageSection, store: Store, val: dict | None) -> Path:
        """Write the stage's output (and ``model.safetensors``), drop its resume state."""
        path = self.out / f"{stage}.safetensors"
        if self.ctx.is_main:
            m = self.model.num_classes
            last = m - 1 if stage == "branches" and not self._shared() else 0
            meta = self._meta(stage, last, scfg.iterations, True)
            if val is not None:
                meta["val"] = val
            div = store.divide_info()
            if div is not None:
                meta["divide"] = {k: div[k] for k in ("reference", "ratios", "thresholds")}
            save_state(self.model.state_dict(), path, meta)
            save_state(self.model.state_dict(), self.out / FINAL, meta)
            for p in self._state_paths(stage):
                p.unlink(missing_ok=True)
            self._say(f"[{stage}] done: {path}")
        self.ctx.barrier()
        return path

    def _trainable_branches(self) -> list[int]:
        """The branches with weights to learn. A slice of a supernet registers no parameters
        of its own, yet has weights (asking its ``parameters()`` left every slice but the
        widest untrained in shared-weight stage 1); width 0 (the skip alone) has none."""

        def learns(b: nn.Module) -> bool:
            if isinstance(b, SlicedBranch):
                return b.has_weights
            return any(True for _ in b.parameters())

        return [k for k, b in enumerate(self.model.branches) if learns(b)]

    def _shared(self) -> bool:
        """Stage 1 trains a supernet (one run over all widths, not one run per branch)?"""
        spec = self.model.spec or {}
        return bool(spec.get("shared_weights")) and self.model.num_classes > 1

    def _parts(self, stage: str, part: int) -> tuple[nn.Module, nn.Module]:
        """``(trainable, net)``: what the optimiser updates and what the forward calls."""
        model = self.model
        if stage == "branches" and self._shared():
            return model.branches[-1], _BranchRunner(model.branches)
        if stage == "branches":
            branch = model.branches[part]
            return branch, branch
        if stage == "classifier":
            return model.classifier, model
        return model, model

    def _set_train_mode(self, stage: str, part: int) -> None:
        model = self.model
        model.eval()
        if stage == "branches" and self._shared():
            model.branches.train()
        elif stage == "branches":
            model.branches[part].train()
        elif stage == "classifier":
            model.train()  # the soft mix needs training mode
            model.branches.eval()  # frozen: BatchNorm keeps its running statistics
        else:
            model.train()

    # -- one part of a stage -------------------------------------------------------------
    def fit(
        self,
        stage: str,
        part: int,
        scfg: StageSection,
        dataset,
        indices: np.ndarray | dict[int, np.ndarray],
        start: ResumePoint,
    ) -> tuple[dict | None, list[dict]]:
        """Train ``part`` of ``stage`` on the sub-images ``indices`` (``{class: array}`` when
        a shared-weight stage 1 samples a width per step)."""
        if scfg.batch_size % self.ctx.world:
            raise ConfigError(
                f"stages.{stage}.batch_size ({scfg.batch_size}) must be divisible by the "
                f"number of processes ({self.ctx.world})"
            )
        run = self._setup_part(stage, part, scfg, start)
        loader = self._loader(dataset, self._batch_sampler(run, indices))
        self._train_loop(run, loader)
        return self._finish_part(run), run.history

    def _setup_part(
        self,
        stage: str,
        part: int,
        scfg: StageSection,
        start: ResumePoint,
    ) -> _Part:
        """Freeze all but what trains; optimiser, scheduler and EMA, restored on resume."""
        trainable, net = self._parts(stage, part)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in trainable.parameters():
            p.requires_grad_(True)
        optimizer = _make_optimizer(scfg, trainable)
        scheduler = _make_scheduler(scfg, optimizer)
        ema = _make_ema(scfg, trainable)
        if start.extra is not None:
            optimizer.load_state_dict(start.extra["optimizer"])
            scheduler.load_state_dict(start.extra["scheduler"])
            if ema is not None and start.extra.get("ema") is not None:
                ema.module.load_state_dict(start.extra["ema"])
            _set_rng(start.extra["rng"])
        shared = stage == "branches" and self._shared()
        return _Part(
            stage=stage,
            part=part,
            scfg=scfg,
            trainable=trainable,
            runner=self._distributed(net),
            optimizer=optimizer,
            scheduler=scheduler,
            ema=ema,
            criterion=ClassSRLoss(**scfg.loss.model_dump()) if stage != "branches" else None,
            shared=shared,
            widths=self._trainable_branches() if shared else [],
            width_seed=(self.cfg.seed, STAGES.index(stage), 1000),  # apart from parts 0..M-1
            label=_label(stage, part, self.model.num_classes, shared),
            start=start.iteration,
            done=start.iteration,
        )

    def _distributed(self, net: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return net
        # Lazy: DistributedDataParallel is needed only when a process group runs.
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)

    def _batch_sampler(
        self, run: _Part, indices: np.ndarray | dict[int, np.ndarray]
    ) -> ShardedBatchSampler | WidthSampler:
        """This rank's batches, a function of ``(seed, stage, part, iteration)``."""
        ctx, scfg = self.ctx, run.scfg
        stage_index = STAGES.index(run.stage)

        def sampler_for(idx: np.ndarray, part: int, start: int) -> ShardedBatchSampler:
            return ShardedBatchSampler(
                idx,
                scfg.batch_size // ctx.world,
                rank=ctx.rank,
                world=ctx.world,
                seed=(self.cfg.seed, stage_index, part),
                start=start,
                augment=scfg.augment,
            )

        if run.shared and not run.sandwich:
            per_class = [sampler_for(indices[k], k, 0) for k in run.widths]
            return WidthSampler(per_class, run.width_seed, start=run.start)
        return sampler_for(indices, run.part, run.start)

    def _loader(self, dataset, sampler) -> DataLoader:
        workers = self.cfg.num_workers
        if workers is None:
            workers = 4 if self.device.type == "cuda" else 0
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
        )

    def _train_loop(self, run: _Part, loader: DataLoader) -> None:
        """Iterations ``run.start`` .. ``iterations``; Ctrl-C saves the state first."""
        bar = tqdm(
            total=run.iters,
            initial=run.start,
            desc=run.label,
            unit="it",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        it = iter(loader)
        try:
            self._set_train_mode(run.stage, run.part)
            for t in range(run.start, run.iters):
                lr_u8, hr_u8 = next(it)
                loss, parts = self._train_step(run, t, lr_u8, hr_u8)
                run.done = t + 1
                self._record(run, loss, parts, bar)
                self._after_step(run)
        except KeyboardInterrupt:
            if not self.ctx.distributed and run.done > run.start:
                self._save_state(run, run.done)
                bar.write(
                    f"[{run.label}] state saved at iteration {run.done}; continue with --resume"
                )
            raise
        finally:
            bar.close()
            del it

    def _train_step(
        self, run: _Part, t: int, lr_u8: torch.Tensor, hr_u8: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step on one batch; returns the loss and its parts."""
        lr = lr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        hr = hr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        if run.sandwich:
            # Summed, not averaged: each width's gradient is as large as when it trains alone.
            parts = {f"l1_{k}": nn.functional.l1_loss(run.runner(lr, k), hr) for k in run.widths}
            loss = sum(parts.values())
        elif run.shared:
            out = run.runner(lr, run.widths[width_at(t, len(run.widths), run.width_seed)])
            loss = nn.functional.l1_loss(out, hr)
            parts = {"l1": loss}
        elif run.criterion is None:
            out = run.runner(lr)
            loss = nn.functional.l1_loss(out, hr)
            parts = {"l1": loss}
        else:
            out, probs = run.runner(lr)
            parts = run.criterion(out, hr, probs)
            loss = parts["total"]
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.scfg.grad_clip:
            nn.utils.clip_grad_norm_(run.trainable.parameters(), run.scfg.grad_clip)
        run.optimizer.step()
        run.scheduler.step_update(num_updates=t + 1)
        if run.ema is not None:
            run.ema.update(run.trainable, step=t + 1)
        return loss, parts

    def _record(self, run: _Part, loss: torch.Tensor, parts: dict, bar) -> None:
        """Sum the loss parts, check the loss now and then, write a log line every
        ``log_every`` iterations."""
        # Loss values stay on the device between log lines: no sync per iteration.
        for k, v in parts.items():
            run.sums[k] = run.sums.get(k, 0.0) + v.detach()
        run.n_sum += 1
        done = run.done
        if done % 10 == 0 or done == run.iters or done == run.start + 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ClassSRError(
                    f"[{run.label}] the loss became {value} at iteration {done}; lower "
                    f"stages.{run.stage}.lr (now {run.scfg.lr}) or set grad_clip"
                )
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
        bar.update(1)
        if done % run.scfg.log_every == 0 or done == run.iters:
            rec = {
                "stage": run.stage,
                "part": run.part,
                "iteration": done,
                "lr": run.optimizer.param_groups[0]["lr"],
                **{k: float(v) / run.n_sum for k, v in run.sums.items()},
            }
            run.history.append(rec)
            self._log(rec, echo=not self.progress)
            run.sums, run.n_sum = {}, 0

    def _after_step(self, run: _Part) -> None:
        """Validation and resume state every ``val_every`` / ``save_every`` iterations (the
        last is left to :meth:`_finish_part`), then the callback."""
        done, scfg = run.done, run.scfg
        if scfg.val_every and done % scfg.val_every == 0 and done != run.iters:
            with _swapped(run.trainable, run.ema):
                self._validate(run.stage, run.part, done)
            self._set_train_mode(run.stage, run.part)
        if done % scfg.save_every == 0 and done != run.iters:
            self._save_state(run, done)
        if self.callback is not None:
            self.callback({"stage": run.stage, "part": run.part, "iteration": done})

    def _finish_part(self, run: _Part) -> dict | None:
        """The trained (EMA) weights in place, validated; returns the validation record."""
        model = self.model
        if run.ema is not None:  # the stage's product is the averaged weights
            run.trainable.load_state_dict(run.ema.module.state_dict())
        for p in model.parameters():
            p.requires_grad_(True)
        if run.shared:  # every width, each on every patch; the widest's record is the stage's
            for k in range(model.num_classes):
                val = self._validate(run.stage, k, run.iters)
        else:
            val = self._validate(run.stage, run.part, run.iters)
        last_branch = run.part + 1 >= model.num_classes
        if run.stage == "branches" and not run.shared and not last_branch and self.ctx.is_main:
            # Between branches: weights so far, no optimiser state (the next branch is fresh).
            self._save_weights_state(run.stage, run.part + 1, 0)
        self.ctx.barrier()
        return val

    # -- saving --------------------------------------------------------------------------
    def _save_weights_state(self, stage: str, part: int, iteration: int) -> None:
        weights, _ = self._state_paths(stage)
        save_state(self.model.state_dict(), weights, self._meta(stage, part, iteration, False))

    def _save_state(self, run: _Part, iteration: int) -> None:
        if not self.ctx.is_main:
            return
        weights, extra_path = self._state_paths(run.stage)
        extra = {
            "part": run.part,
            "iteration": iteration,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": _plain_state(run.scheduler.state_dict()),
            "ema": run.ema.module.state_dict() if run.ema is not None else None,
            "rng": _get_rng(),
        }
        # The extra state first: a crash between the two writes leaves the older weights,
        # which _load_resume detects by their differing iteration.
        with atomic_path(extra_path) as tmp:
            torch.save(extra, tmp)
        self._save_weights_state(run.stage, run.part, iteration)

    # -- validation ----------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, stage: str, part: int, iteration: int) -> dict[str, Any] | None:
        """Mean PSNR / SSIM over whole validation images, class ratios, FLOPs fraction."""
        if not self.ctx.is_main:
            return None
        images = Store(self.cfg.store_dir).val_images(self.cfg.validation.max_images)
        if not images:
            return None
        model = self.model
        # Stage 1 checks one branch: every patch is routed to it (the classifier still runs
        # and is counted, so the FLOPs fraction is what this branch would cost in the model).
        force = part if stage == "branches" and model.num_classes > 1 else None
        t0 = time.perf_counter()
        psnrs, ssims, fractions, weights = [], [], [], []
        counts = np.zeros(model.num_classes, dtype=np.int64)
        for _, lr8, hr8 in images:
            score, cc, fraction = self._val_image(lr8, hr8, force)
            psnrs.append(score["psnr"])
            ssims.append(score["ssim"])
            counts += cc
            fractions.append(fraction)
            weights.append(int(cc.sum()))
        total = max(int(counts.sum()), 1)
        rec = {
            "stage": stage,
            "part": part,
            "iteration": iteration,
            "val_psnr": float(np.mean(psnrs)),
            "val_ssim": float(np.mean(ssims)),
            "class_ratios": [round(c / total, 4) for c in counts.tolist()],
            "flops_fraction": float(np.average(fractions, weights=weights)),
            "val_images": len(images),
            "val_seconds": round(time.perf_counter() - t0, 2),
        }
        self._log_val(rec)
        return rec

    def _val_image(
        self, lr8: np.ndarray, hr8: np.ndarray, force: int | None
    ) -> tuple[dict[str, float], np.ndarray, float]:
        """One validation image through ``infer`` (every patch to branch ``force`` unless
        None): its scores, class counts and FLOPs fraction."""
        model = self.model
        x = torch.from_numpy(lr8).permute(2, 0, 1)[None].float().div(255.0).to(self.device)
        options = {}
        if force is not None:
            n = len(patch_grid(x.shape[2], x.shape[3], model.patch_size, model.stride))
            options["classes"] = np.full(n, force)
        result = model.infer(x, **options)  # restores every module's train/eval flag
        out = result.output[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        score = self.task.score(out, hr8.astype(np.float32) / 255.0)
        cc = np.asarray(result.class_counts, dtype=np.int64)
        return score, cc, float(result.flops_fraction)

    def _log_val(self, rec: dict[str, Any]) -> None:
        label = _label(rec["stage"], rec["part"], self.model.num_classes, False)
        ratios = "/".join(f"{100 * r:.0f}%" for r in rec["class_ratios"])
        self._log(
            rec,
            echo=True,
            text=f"[{label}] iter {rec['iteration']}: val PSNR {rec['val_psnr']:.2f} dB, "
            f"SSIM {rec['val_ssim']:.4f}, classes {ratios}, "
            f"FLOPs {100 * rec['flops_fraction']:.0f}% of the widest branch",
        )

    # -- logging -------------------------------------------------------------------------
    def _log(self, rec: dict, echo: bool, text: str | None = None) -> None:
        if not self.ctx.is_main:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if echo:
            if text is None:
                text = " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                )
            tqdm.write(text)

    def _say(self, text: str) -> None:
        if self.ctx.is_main:
            print(text, flush=True)


class _BranchRunner(nn.Module):
    """``forward(x, k)`` = branch ``k``: one module for DDP to wrap in shared-weight stage 1."""

    def __init__(self, branches: nn.ModuleList) -> None:
        super().__init__()
        self.branches = branches

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.branches[k](x)


def _label(stage: str, part: int, num_classes: int, shared: bool) -> str:
    if stage != "branches":
        return stage
    return f"{stage} (all widths)" if shared else f"{stage} {part + 1}/{num_classes}"


def _one_branch(state: dict) -> bool:
    """A '-O' checkpoint: one branch and no classifier."""
    return all(k.startswith("branches.0.") for k in state)


def _check_classes(indices: dict[int, np.ndarray]) -> None:
    for k, idx in indices.items():
        if len(idx) == 0:
            raise ClassSRError(
                f"class {k} has no sub-images, so branch {k} cannot train; "
                "add images or change divide.ratios"
            )


def _complete(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        _, meta = read_checkpoint(path)
    except CheckpointError:
        return False
    return bool(meta.get("complete"))


@contextmanager
def _swapped(module: nn.Module, ema):
    """Temporarily put the EMA weights into ``module`` (validation sees what is saved)."""
    if ema is None:
        yield
        return
    backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(ema.module.state_dict())
    try:
        yield
    finally:
        module.load_state_dict(backup)


def _make_optimizer(scfg: StageSection, trainable: nn.Module):
    # Lazy: timm is heavy, and only a training stage needs it.
    from timm.optim import create_optimizer_v2

    opt_kwargs: dict[str, Any] = {}
    if "adam" in scfg.optimizer.lower() or scfg.optimizer.lower() in ("lamb", "lion", "adan"):
        opt_kwargs["betas"] = tuple(scfg.betas)
    return create_optimizer_v2(
        trainable,
        opt=scfg.optimizer,
        lr=scfg.lr,
        weight_decay=scfg.weight_decay,
        **opt_kwargs,
    )


def _make_scheduler(scfg: StageSection, optimizer):
    """Cosine with warm-up and ``lr_cycles`` restarts, stepped per iteration."""
    from timm.scheduler import CosineLRScheduler  # lazy: timm is heavy

    iters = scfg.iterations
    period = scfg.lr_period or max(1, math.ceil((iters - scfg.warmup) / scfg.lr_cycles))
    return CosineLRScheduler(
        optimizer,
        t_initial=period,
        lr_min=scfg.lr_min,
        cycle_limit=scfg.lr_cycles,
        cycle_decay=scfg.lr_cycle_decay,
        warmup_t=scfg.warmup,
        warmup_lr_init=scfg.lr_min,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def _make_ema(scfg: StageSection, trainable: nn.Module):
    """timm's ModelEmaV3 of what trains, or None without ``ema_decay``."""
    if not scfg.ema_decay:
        return None
    from timm.utils import ModelEmaV3  # lazy: timm is heavy

    return ModelEmaV3(trainable, decay=scfg.ema_decay, use_warmup=True)


def _plain_state(state: dict) -> dict:
    """timm scheduler state as plain Python values (loadable with weights_only=True)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict)):
            out[k] = v
    return out


def _get_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_tuplify(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def train(
    cfg: TrainConfig,
    stage: str = "all",
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Trainer:
    """Run ``stage`` (or all stages) of ``cfg``; returns the trainer (``.model`` the result)."""
    trainer = Trainer(cfg, resume=resume, progress=progress, callback=callback)
    trainer.results = trainer.run(stage)
    return trainer
