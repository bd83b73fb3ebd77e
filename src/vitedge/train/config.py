"""Typed training configuration, grouped by concern; every default documented where it is set.

A :class:`TrainConfig` is plain data: it round-trips through JSON (stored in each training
checkpoint, compared on resume) and is validated on construction, so a bad value fails before
any data is read.

Example::

    cfg = TrainConfig(model="efficientvit_b0", epochs=30,
                      data=DataConfig(dataset="cifar10", root="data/cifar10", img_size=64),
                      optim=OptimConfig(lr=2e-3))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vitedge.errors import VitedgeError


@dataclass(frozen=True)
class DataConfig:
    """What to train on and how images are prepared."""

    dataset: str = "fashion-mnist"       # registered name or folder path
    root: str | None = None              # where a registered dataset lives (--data-dir)
    img_size: int | None = None          # None: the model's own input size
    batch_size: int = 128                # global batch, split evenly across DDP processes
    workers: int = 0                     # data-loader processes per training process
    strict: bool = False                 # unreadable images: error instead of skip
    scale: tuple[float, float] = (0.08, 1.0)   # random-resized-crop area range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    seg_scale: tuple[float, float] = (0.5, 2.0)  # segmentation: random rescale range before the crop
    seg_train_split: str = "train"       # segmentation: the split trained on (CamVid: "trainval" too)
    randaug_ops: int = 0                 # RandAugment-lite ops per image (0: off)
    randaug_magnitude: float = 9.0
    crop_pct: float | None = None        # evaluation crop; None: the model's data_config
    interpolation: str | None = None     # None: the model's data_config
    train_limit: int | None = None       # use a class-balanced seeded subset of the training split
    eval_limit: int | None = None        # ... and of the test split (quick runs); None: all of it

    def __post_init__(self) -> None:
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise VitedgeError(f"{name} must be a positive number of images or None, got {value!r}")
        if self.batch_size < 2:
            raise VitedgeError(f"batch_size must be at least 2 (BatchNorm needs it), got {self.batch_size}")
        if self.workers < 0:
            raise VitedgeError(f"workers must be >= 0, got {self.workers}")
        if self.img_size is not None and self.img_size <= 0:
            raise VitedgeError(f"img_size must be positive, got {self.img_size}")


# QAT's fine-tuning recipe (CLI, study, benchmarks): it starts from a calibrated model that is
# already close, so the weights move little (2e-5), the learned step sizes 10× faster, and the
# loss is distillation from the float model alone (labels would pull it off the float function).
# What is frozen is an EMA of the weights and step sizes: the last step alone lands on a noisy
# point (B0 CIFAR-10, 1 epoch: 85.50 % with the EMA; 2 epochs: 85.37 vs 85.32 without).
QAT_LR = 2e-5
QAT_STEP_LR_MULT = 10.0
QAT_ALPHA = 1.0
QAT_EMA = 0.998


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a per-step cosine schedule after a linear warm-up, plus loss settings."""

    lr: float = 1e-3                     # peak learning rate for the global batch
    min_lr: float = 1e-5                 # reached at the last step
    warmup_epochs: float = 1.0           # linear ramp from warmup_lr to lr
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05           # not applied to norms and biases
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0        # max global gradient norm; None: no clipping
    step_size_lr_mult: float = 1.0       # QAT: learned quantizer step sizes train at lr × this

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.min_lr < 0 or self.warmup_lr < 0:
            raise VitedgeError(f"learning rates must be positive (lr={self.lr}, min_lr={self.min_lr})")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise VitedgeError("warmup_epochs and weight_decay must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise VitedgeError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise VitedgeError(f"clip_grad must be positive or None, got {self.clip_grad}")
        if not self.step_size_lr_mult > 0:
            raise VitedgeError(f"step_size_lr_mult must be positive, got {self.step_size_lr_mult}")


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights; evaluated and exported instead of the raw ones."""

    decay: float | None = None           # e.g. 0.9998; None: no EMA

    def __post_init__(self) -> None:
        if self.decay is not None and not 0 < self.decay < 1:
            raise VitedgeError(f"EMA decay must be in (0, 1), got {self.decay}")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: loss = (1 - alpha) * CE + alpha * T² * KL(teacher_T || student_T)."""

    teacher: str | None = None           # checkpoint path or model name; None: no distillation
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise VitedgeError(f"distillation alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise VitedgeError(f"distillation temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimisation, extras and where results go."""

    model: str = "efficientvit_b0"       # registered name or checkpoint path
    epochs: int = 10
    seed: int = 0
    out: str = "runs/train"              # checkpoints, metrics and the final model go here
    resume: bool = False                 # continue the run in `out` instead of starting anew
    device: str | None = None            # None: CUDA if available, else CPU
    eval_every: int = 1                  # evaluate after every N-th epoch (and always after the last)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise VitedgeError(f"epochs must be at least 1, got {self.epochs}")
        if self.eval_every < 1:
            raise VitedgeError(f"eval_every must be at least 1, got {self.eval_every}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        groups = {"data": DataConfig, "optim": OptimConfig, "ema": EMAConfig, "distill": DistillConfig}
        kwargs = {}
        for key, value in data.items():
            if key in groups:
                kwargs[key] = _build(groups[key], value)
            else:
                kwargs[key] = value
        return _build(cls, kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with dotted fields replaced: ``{"epochs": 30, "optim.lr": 2e-3, "data.img_size": 64}``."""
        flat: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            group, _, name = key.partition(".")
            if name:
                flat.setdefault(group, {})[name] = value
            else:
                top[key] = value
        values = self.to_dict()
        for group, fields in flat.items():
            if group not in values or not isinstance(values[group], dict):
                raise VitedgeError(f"unknown TrainConfig group {group!r}")
            values[group].update(fields)
        values.update(top)
        return TrainConfig.from_dict(values)


# Fields that may differ between a run and its resumption without changing the result.
RESUME_FREE_FIELDS = frozenset({"resume", "out", "device", "data.workers", "data.root", "data.strict"})


def config_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """``"group.field: old -> new"`` for every result-changing field that differs."""
    flat_old, flat_new = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in sorted(set(flat_old) | set(flat_new))
            if k not in RESUME_FREE_FIELDS and flat_old.get(k) != flat_new.get(k)]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise VitedgeError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    # JSON turns tuples into lists; restore them so configs compare equal.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
