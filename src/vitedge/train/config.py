"""Typed training configuration, grouped by concern; every default documented where it is set.

A :class:`TrainConfig` is plain data (a :func:`vitedge.settings.config_class`): it round-trips
through JSON (stored in each training checkpoint, compared on resume) and is validated on
construction, so a bad value fails before any data is read. :class:`TrainStage` is one training
stage of a larger recipe (the study's baseline, fine-tuning and QAT): the optimiser settings plus
a budget, with model, data and seed coming from the recipe.

Example::

    cfg = TrainConfig(model="efficientvit_b0", epochs=30,
                      data=DataConfig(dataset="cifar10", root="data/cifar10", img_size=64),
                      optim=OptimConfig(lr=2e-3))
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from vitedge import settings
from vitedge.errors import VitedgeError
from vitedge.settings import config_class


@config_class
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
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise VitedgeError(f"crop_pct must be in (0, 1] (1: the whole image), got {self.crop_pct}")


# QAT's fine-tuning recipe (CLI, study, benchmarks): it starts from a calibrated model that is
# already close, so the weights move little (2e-5), the learned step sizes 10× faster, and the
# loss is distillation from the float model alone (labels would pull it off the float function).
# What is frozen is an EMA of the weights and step sizes: the last step alone lands on a noisy
# point (B0 CIFAR-10, 1 epoch: 85.50 % with the EMA; 2 epochs: 85.37 vs 85.32 without).
QAT_LR = 2e-5
QAT_STEP_LR_MULT = 10.0
QAT_ALPHA = 1.0
QAT_EMA = 0.998


@config_class
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


@config_class
class EMAConfig:
    """Exponential moving average of the weights; evaluated and exported instead of the raw ones."""

    decay: float | None = None           # e.g. 0.9998; None: no EMA

    def __post_init__(self) -> None:
        if self.decay is not None and not 0 < self.decay < 1:
            raise VitedgeError(f"EMA decay must be in (0, 1), got {self.decay}")


@config_class
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


@config_class
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
        return settings.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys and wrong types are an error, not dropped."""
        return settings.parse(cls, data, what="TrainConfig field")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with dotted fields replaced: ``{"epochs": 30, "optim.lr": 2e-3, "data.img_size": 64}``."""
        return settings.with_overrides(self, changes, what="TrainConfig field")


@config_class
class TrainStage(OptimConfig):
    """One training stage inside a larger recipe: the optimiser settings (inherited), the budget,
    the crop-area floor (stages augment differently: a baseline from scratch crops harder than a
    fine-tune), an EMA and distillation. Model, data, seed and output come from the recipe."""

    epochs: int = 1                      # 0: the stage is skipped where the recipe allows it
    min_scale: float = 0.08              # random-resized-crop area range (min_scale, 1)
    ema: EMAConfig = field(default_factory=EMAConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 0:
            raise VitedgeError(f"epochs must be >= 0, got {self.epochs}")
        if not 0 < self.min_scale <= 1:
            raise VitedgeError(f"min_scale must be in (0, 1], got {self.min_scale}")

    @property
    def optim(self) -> OptimConfig:
        return settings.narrow(self, OptimConfig)

    def train_config(self, *, model: str, data: DataConfig, seed: int, out: str, resume: bool = False,
                     teacher: str | None = None) -> TrainConfig:
        """The :class:`TrainConfig` of this stage (at least one epoch) on ``data`` cropped by
        ``min_scale``; ``teacher`` replaces the stage's own when given."""
        distill = self.distill if teacher is None else dataclasses.replace(self.distill, teacher=teacher)
        return TrainConfig(model=model, epochs=max(1, self.epochs), seed=seed, out=out, resume=resume,
                           data=dataclasses.replace(data, scale=(self.min_scale, 1.0)), optim=self.optim,
                           ema=self.ema, distill=distill)


# Fields that may differ between a run and its resumption without changing the result.
RESUME_FREE_FIELDS = frozenset({"resume", "out", "device", "data.workers", "data.root", "data.strict"})


def config_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """``"group.field: old -> new"`` for every result-changing field that differs."""
    flat_old, flat_new = settings.flatten(old.to_dict()), settings.flatten(new.to_dict())
    return [f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in sorted(set(flat_old) | set(flat_new))
            if k not in RESUME_FREE_FIELDS and flat_old.get(k) != flat_new.get(k)]
