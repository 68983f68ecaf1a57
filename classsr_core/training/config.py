"""The training configuration: one YAML file drives ``prepare``, ``divide`` and ``train``.

Every section forbids unknown keys, so a typo fails with its key path. The ``task`` section
is validated by the model the task plugin registered (``config_model``): it is spliced into
the top-level model before validation, so its typos name their path (``task.scael``) too.
Relative paths are taken from the current directory, as in most training tools.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, create_model, field_validator, model_validator

from classsr_core.config import StrictModel, load_yaml, validate
from classsr_core.errors import ClassSRError, ConfigError
from classsr_core.model.spec import ModelSpec
from classsr_core.plugins.registry import lookup

STAGES = ("branches", "classifier", "joint")
DEVICE_CHOICES = "cpu, cuda, cuda:N, mps"  # as classsr_core.device spells them
DEVICE_NAME = re.compile(r"(cpu|cuda|mps)(:\d+)?")


class ModelSection(ModelSpec):
    """The ClassWrapper to build: the model spec, whose scale defaults to the task's."""

    scale: int | None = Field(None, ge=1, description="default (and must equal): the task's")
    patch_size: int = Field(32, ge=4, description="LR patch size of the tile engine")

    def wrapper_kwargs(self) -> dict[str, Any]:
        """ClassWrapper keywords without the scale: the trainer passes the task's."""
        out = super().wrapper_kwargs()
        out.pop("scale", None)
        return out


class PairedFolders(StrictModel):
    """Paired data: degraded inputs and their targets, matched by file name without the
    extension; the task's inputs are then read, not made (docs/tasks/paired.md)."""

    inputs: str = Field(..., description="folder of degraded inputs (rainy, noisy, LR, ...)")
    targets: str = Field(
        ...,
        description="folder of targets of the same names, each its input's size x the task's scale",
    )


class DataSection(StrictModel):
    """Where the HR images are and how they become training sub-images."""

    train: str | PairedFolders = Field(
        ...,
        description="folder of HR images (PNG/JPEG/TIFF), 'skimage:name,name' for the "
        "photos scikit-image ships (the task makes the inputs of both), or paired folders "
        "{inputs: DIR, targets: DIR}",
    )
    val: str | PairedFolders | None = Field(
        None, description="folder (or skimage:..., or {inputs, targets}) of validation images"
    )
    store: str | None = Field(None, description="where sub-images go (default: OUT/data)")
    scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="multi-scale copies of each HR image (the paper: 1, 0.9, 0.8, 0.7, 0.6)",
    )
    crop: int = Field(128, ge=4, description="HR sub-image size (the paper: 128)")
    step: int = Field(64, ge=1, description="HR sub-image step (the paper: 64)")

    @field_validator("train", "val", mode="before")
    @classmethod
    def _folder_or_pairs(cls, value: Any) -> Any:
        """A string stays a folder; a mapping must be exactly ``{inputs, targets}`` (said
        so in one line, not as a union's two failures)."""
        if value is None or isinstance(value, (str, PairedFolders)):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                "give a folder (or skimage:name,name), or paired folders {inputs: DIR, "
                "targets: DIR}"
            )
        keys = set(value)
        if keys != {"inputs", "targets"}:
            missing = sorted({"inputs", "targets"} - keys)
            unknown = sorted(keys - {"inputs", "targets"})
            what = [f"missing {', '.join(missing)}"] if missing else []
            what += [f"unknown key(s) {', '.join(unknown)}"] if unknown else []
            raise ValueError(
                f"paired folders take exactly inputs and targets ({'; '.join(what)}), e.g. "
                "{inputs: data/rain/input, targets: data/rain/clean}"
            )
        if not all(isinstance(v, str) for v in value.values()):
            raise ValueError("paired folders: inputs and targets must be folder paths")
        return PairedFolders(**value)

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise ValueError(f"scales must be in (0, 1], got {self.scales}")
        paired = isinstance(self.train, PairedFolders) or isinstance(self.val, PairedFolders)
        if paired and self.scales != [1.0]:
            raise ValueError(
                f"scales {self.scales}: paired data is used as it is; shrinking an input "
                "would change its degradation, so multi-scale copies need clean images "
                "(leave scales out)"
            )
        return self


class DivideSection(StrictModel):
    """How sub-images are split into classes by difficulty."""

    reference: str | None = Field(
        None,
        description="checkpoint of a reference model (any load_model-able file); "
        "none: bicubic upscaling",
    )
    ratios: list[float] | None = Field(
        None,
        description="share of sub-images per branch, cheapest (easiest) first; "
        "default equal, e.g. [1, 1, 2] for the paper's 25:25:50",
    )
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DivideSection:
        if self.ratios is not None and (not self.ratios or any(r <= 0 for r in self.ratios)):
            raise ValueError(f"ratios must be positive, got {self.ratios}")
        return self


class LossSection(StrictModel):
    """ClassSRLoss weights (stages classifier and joint); the official ones for 0..1 images."""

    w_l1: float = Field(1000.0, ge=0)
    w_class: float = Field(0.5, ge=0)
    w_average: float = Field(3.0, ge=0)


class StageSection(StrictModel):
    """One training stage. ``lr_period`` is the cosine half-period in iterations (default:
    ``iterations``); the official stage 2 uses 500k with 200k iterations, so its rate never
    reaches the minimum. ``lr_cycles`` > 1 restarts the cosine, each cycle ``lr_cycle_decay``
    times the last."""

    iterations: int = Field(1000, ge=0)
    batch_size: int = Field(16, ge=1, description="global batch, split over the processes")
    optimizer: str = Field("adam", description="a timm optimizer name (create_optimizer_v2)")
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    lr_min: float = Field(1e-7, ge=0)
    lr_period: int | None = Field(None, ge=1)
    lr_cycles: int = Field(1, ge=1)
    lr_cycle_decay: float = Field(1.0, gt=0)
    warmup: int = Field(0, ge=0, description="linear warm-up iterations")
    grad_clip: float | None = Field(None, gt=0)
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the weights (timm ModelEmaV3)")
    augment: bool = Field(True, description="random flips and 90-degree rotations")
    loss: LossSection = Field(default_factory=LossSection)
    init: str | None = Field(
        None, description="start from this checkpoint instead of the previous stage's output"
    )
    log_every: int = Field(100, ge=1)
    val_every: int = Field(0, ge=0, description="validate every N iterations (0: at the end)")
    save_every: int = Field(1000, ge=1, description="write the resume state every N iterations")


class BranchStage(StageSection):
    """Stage 1 (official: 500k iterations, batch 16, lr 2e-4; 1e-3 for FSRCNN)."""

    iterations: int = Field(500_000, ge=0)
    sandwich: bool = Field(
        False,
        description="shared weights only: every step trains every width on one batch of all "
        "sub-images, the losses summed (the sandwich rule: the widest and the narrowest "
        "slice each step), instead of one width a step on its own class",
    )


class ClassifierStage(StageSection):
    """Stage 2 (official: 200k iterations, batch 96, lr 2e-4, cosine period 500k)."""

    iterations: int = Field(200_000, ge=0)
    batch_size: int = Field(96, ge=1, description="global batch, split over the processes")
    lr_period: int | None = Field(500_000, ge=1)


class JointStage(StageSection):
    """Stage 3: the official code gives no numbers; a short fine-tune at a tenth of the rate."""

    iterations: int = Field(100_000, ge=0)
    batch_size: int = Field(96, ge=1, description="global batch, split over the processes")
    lr: float = Field(2e-5, gt=0)


class StagesSection(StrictModel):
    branches: BranchStage = Field(default_factory=BranchStage)
    classifier: ClassifierStage = Field(default_factory=ClassifierStage)
    joint: JointStage = Field(default_factory=JointStage)


class ValidationSection(StrictModel):
    max_images: int | None = Field(None, ge=1, description="validate on the first N images only")
    tile_batch: int | None = Field(None, ge=1, description="patches per branch call (tile engine)")


class TaskSectionBase(StrictModel):
    name: str = Field("sr", description="a registered task (sr, denoise, deblock, ...)")


class TrainConfig(StrictModel):
    seed: int = 0
    out: str = Field("runs/classsr", description="checkpoints, logs and (by default) the data")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps; default: the best")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers per process (default: 0 on CPU, 4 on GPU)"
    )
    task: TaskSectionBase = Field(default_factory=TaskSectionBase)
    model: ModelSection
    data: DataSection
    divide: DivideSection = Field(default_factory=DivideSection)
    stages: StagesSection = Field(default_factory=StagesSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    # The caller's consent to import model.backbone as module:qualname: a flag of the
    # command (--trust-code), never a key of the file, so a config cannot grant it itself.
    _trust_code: bool = PrivateAttr(False)

    @property
    def trust_code(self) -> bool:
        return self._trust_code

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str | None) -> str | None:
        # The spelling only: whether this machine has the device is checked where it is
        # used (a config may be prepared on one machine and trained on another).
        if value is not None and not DEVICE_NAME.fullmatch(value):
            raise ValueError(f"not a device; choose one of {DEVICE_CHOICES}")
        return value

    # -- derived -----------------------------------------------------------------------
    def make_task(self):
        options = self.task.model_dump(exclude={"name"})
        return lookup("tasks", self.task.name).factory(**options)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def store_dir(self) -> Path:
        return Path(self.data.store) if self.data.store else self.out_dir / "data"

    def resolved(self) -> dict[str, Any]:
        """The whole config with every default filled in (written into checkpoints)."""
        return self.model_dump(mode="json")


def _task_model(name: str, source: str = "config") -> type[StrictModel]:
    """The task section's model: ``name`` plus the plugin's own options."""
    try:
        entry = lookup("tasks", name)
    except ClassSRError as exc:
        raise ConfigError(f"{source}: task.name: {exc}") from None
    options = entry.metadata.get("config_model")
    if options is None:  # a plugin without options: only the name is allowed
        return TaskSectionBase
    return create_model(
        f"TaskSection_{name}",
        __base__=(options,),
        name=(Literal[name], Field(name, description="a registered task")),  # type: ignore[valid-type]
    )


def validate_train_config(
    data: Any, source: str = "config", *, trust_code: bool = False
) -> TrainConfig:
    """Validate a parsed YAML document; errors name the key path and the allowed keys.

    Beyond the keys, the model section is built once on the meta device (no memory, no
    weights), so a bad backbone name, width list, classifier or ratio count fails here,
    before ``prepare`` or ``divide`` does any work, and not at ``train``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    task = data.get("task", {})
    if task is None:
        task = {}
    if not isinstance(task, dict):
        raise ConfigError(f"{source}: 'task' must be a mapping such as {{name: sr, scale: 4}}")
    name = task.get("name", "sr")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'task.name' must be a string, got {name!r}")
    section = _task_model(name, source)
    model = create_model(
        "TrainConfig",
        __base__=TrainConfig,
        task=(section, Field(default_factory=section)),
    )
    cfg = validate(model, data, source)
    cfg._trust_code = trust_code
    check_folders(cfg, source)
    check_model_section(cfg, source)
    check_stages(cfg, source)
    return cfg


def check_folders(cfg: TrainConfig, source: str = "config") -> None:
    """``out`` and ``data.store`` are folders (made if missing): refuse one that names an
    existing file, or lies under one, before any command does work."""
    for key, value in (("out", cfg.out), ("data.store", cfg.data.store)):
        if value is None:
            continue
        path = Path(value)
        for part in (path, *path.parents):
            if part.exists() or part.is_symlink():
                if not part.is_dir():
                    where = f"{part} is a file" if part == path else f"{part} (in {path}) is a file"
                    raise ConfigError(
                        f"{source}: {key} must be a folder; {where}. Give a folder that "
                        "does not exist yet (it is made) or an existing one"
                    )
                break


def timm_optimizers() -> list[str] | None:
    """The optimizer names timm registers (None: a timm too old to list them)."""
    try:
        from timm.optim import list_optimizers
    except ImportError:
        return None
    return sorted(list_optimizers())


def check_stages(cfg: TrainConfig, source: str = "config") -> None:
    """Build every stage's optimizer and learning-rate schedule as training will, on a
    one-weight stand-in: an unknown optimizer name or settings it refuses (betas out of
    range, say) fail here, before ``prepare`` and ``divide`` do minutes of work, and not
    when the stage starts."""
    # Lazy: the trainer and timm take seconds to import.
    from torch import nn

    from classsr_core.training.trainer import _make_optimizer, _make_scheduler

    known = timm_optimizers()
    for stage in STAGES:
        scfg = getattr(cfg.stages, stage)
        key = f"stages.{stage}.optimizer"
        name = scfg.optimizer
        base = name.lower().split("_")[-1]  # timm's parsing: an optional lookahead_ prefix
        if known is not None and base not in known:
            close = difflib.get_close_matches(base, known, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(
                f"{source}: {key} is {name!r}, not a timm optimizer{hint}; allowed: "
                f"{', '.join(known)}, each optionally prefixed lookahead_"
            )
        try:
            optimizer = _make_optimizer(scfg, nn.Conv2d(1, 1, 1))
            _make_scheduler(scfg, optimizer)
        except Exception as exc:  # timm's and torch's own errors, one line with the key
            raise ConfigError(
                f"{source}: stages.{stage}: optimizer {name!r} with lr {scfg.lr}, betas "
                f"{list(scfg.betas)}, weight_decay {scfg.weight_decay}, and its schedule, "
                f"cannot be built: {type(exc).__name__}: {exc}"
            ) from None


def check_model_section(cfg: TrainConfig, source: str = "config") -> None:
    """Build the configured model on the meta device; errors become ConfigErrors."""
    # Lazy: torch and the model stack take seconds to import; reading a config does not
    # need them until the model section is checked.
    import torch

    from classsr_core.model.wrapper import ClassWrapper

    scale = cfg.make_task().scale
    if cfg.model.scale is not None and cfg.model.scale != scale:
        raise ConfigError(
            f"{source}: model.scale is {cfg.model.scale} but the task's scale is {scale}; "
            "leave model.scale out (the task sets it)"
        )
    try:
        with torch.device("meta"):
            model = ClassWrapper(
                scale=scale,
                trust_code=cfg.trust_code,
                **cfg.model.wrapper_kwargs(),
            )
    except ClassSRError as exc:
        raise ConfigError(f"{source}: model: {exc}") from None
    ratios = cfg.divide.ratios
    # One branch (the "-O" network) has no classes to divide into: its run ignores the
    # divide section, so a config shared with the ClassSR run (`--set "model.widths=[64]"`
    # on examples/configs/denoise.yaml) keeps its three ratios.
    if ratios is not None and model.num_classes > 1 and len(ratios) != model.num_classes:
        raise ConfigError(
            f"{source}: divide.ratios has {len(ratios)} values but the model has "
            f"{model.num_classes} branches; give one share per branch, cheapest first"
        )
    if cfg.stages.branches.sandwich and not (cfg.model.shared_weights and model.num_classes > 1):
        raise ConfigError(
            f"{source}: stages.branches.sandwich trains the widths of one supernet together: "
            "it needs model.shared_weights: true and two widths or more; remove it"
        )


def set_override(data: dict, dotted: str, value: Any) -> None:
    """Apply ``a.b.c=value`` to a nested dict (the ``--set`` option)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def load_train_config(
    path: str | Path, overrides: list[str] | None = None, *, trust_code: bool = False
) -> TrainConfig:
    """Read a YAML file, apply ``KEY=VALUE`` overrides (values parsed as YAML), validate."""
    import yaml

    data = load_yaml(path)
    if data is None:
        data = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. stages.joint.lr=1e-5), got {item!r}")
        if not isinstance(data, dict):
            break
        set_override(data, key.strip(), yaml.safe_load(raw))
    return validate_train_config(data, source=str(path), trust_code=trust_code)
