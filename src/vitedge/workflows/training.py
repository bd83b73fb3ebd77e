"""Training configs from command options: a training run (fresh, fine-tuning a checkpoint, or
resumed from its folder) and the fine-tuning part of a compression recipe. The options' defaults
are :class:`~vitedge.train.config.TrainConfig`'s own, so only the options a user gives change it.

Example::

    outcome = train_from_options({"model": "efficientvit_b0", "data": "cifar10", "epochs": 30})
    print(outcome.summary())
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitedge.errors import VitedgeError
from vitedge.train import train
from vitedge.train.checkpoint import STATE_FILE, read_train_meta
from vitedge.train.config import TrainConfig
from vitedge.train.tasks import describe
from vitedge.train.trainer import TrainResult

__all__ = ["OPTION_FIELDS", "TrainOutcome", "recipe_config", "train_from_options", "training_config"]

DEFAULTS = TrainConfig()
# Option name (as ``vitedge train`` spells it, in snake case) → the TrainConfig field it sets.
OPTION_FIELDS = {
    "model": "model", "data": "data.dataset", "data_dir": "data.root", "epochs": "epochs",
    "batch_size": "data.batch_size", "lr": "optim.lr", "img_size": "data.img_size", "out": "out",
    "teacher": "distill.teacher", "alpha": "distill.alpha", "temperature": "distill.temperature",
    "seed": "seed", "workers": "data.workers", "ema": "ema.decay", "warmup_epochs": "optim.warmup_epochs",
    "weight_decay": "optim.weight_decay", "label_smoothing": "optim.label_smoothing",
    "min_scale": "data.scale", "hflip": "data.hflip", "randaug": "data.randaug_ops",
    "crop_pct": "data.crop_pct", "train_split": "data.seg_train_split", "strict": "data.strict",
    "device": "device", "eval_every": "eval_every",
}


@dataclass
class TrainOutcome:
    """A finished (or resumed and already finished) run: the config it ran with and its result."""

    config: TrainConfig
    result: TrainResult

    def summary(self) -> str | None:
        """The headline test metrics and where the model is; ``None`` when nothing was trained."""
        if not self.result.history:
            return None
        return f"{describe(self.result.metrics)}  → {self.config.out}/model.safetensors"


def training_config(options: Mapping[str, Any], *, resume: bool = False,
                    out: str | os.PathLike | None = None) -> TrainConfig:
    """The config of a run from the ``options`` a user gave (names of :data:`OPTION_FIELDS`);
    with ``resume``, the saved config of the run in ``out`` with those options applied."""
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise VitedgeError(f"unknown training option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(OPTION_FIELDS)}")
    changes = {OPTION_FIELDS[name]: _field_value(name, value) for name, value in options.items()}
    if resume:
        run = Path(out if out is not None else DEFAULTS.out)
        saved = TrainConfig.from_dict(json.loads(read_train_meta(run / STATE_FILE)["meta"])["config"])
        return saved.with_overrides({**changes, "resume": True, "out": str(run)})
    if "model" not in options or options["model"] is None:
        raise VitedgeError("give a MODEL (name or checkpoint) to train, or --resume with --out of a run")
    return DEFAULTS.with_overrides(changes)


def train_from_options(options: Mapping[str, Any], *, resume: bool = False,
                       out: str | os.PathLike | None = None) -> TrainOutcome:
    """Train with :func:`training_config` ``(options, resume=resume, out=out)``."""
    config = training_config(options, resume=resume, out=out)
    return TrainOutcome(config, train(config))


def recipe_config(epochs: int, *, seed: int, data: str, root: str | os.PathLike | None, batch_size: int,
                  workers: int, lr: float, more: Mapping[str, Any] | None = None) -> TrainConfig:
    """The data and fine-tuning settings of a compression recipe (``epochs`` 0: the data only, the
    config then keeps one epoch that the recipe does not run); ``more`` are further dotted fields."""
    return DEFAULTS.with_overrides({"epochs": max(1, epochs), "seed": seed, "data.dataset": data,
                                    "data.root": str(root) if root else None, "data.batch_size": batch_size,
                                    "data.workers": workers, "optim.lr": lr, **(more or {})})


def _field_value(name: str, value: Any) -> Any:
    if name == "min_scale":
        return (value, 1.0)  # the random-resized-crop area range
    return str(value) if isinstance(value, os.PathLike) else value
