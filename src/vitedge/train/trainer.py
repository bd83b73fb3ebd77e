"""The training loop: the fine-tuning engine that baselines, pruning and QAT all run through.

:func:`train` builds model, data and teacher from a :class:`TrainConfig` (what the CLI calls);
:func:`fit` trains a model you already have (a pruned one, a QAT-prepared one) on datasets you
already have. Both run unchanged alone or under ``torchrun`` with DistributedDataParallel.

Files in ``cfg.out`` (rank 0 writes them; each is replaced atomically after every epoch):

- ``train_state.safetensors`` — everything ``resume`` needs (weights, AdamW moments, EMA, step);
- ``model.safetensors`` — the evaluated weights (EMA if enabled) with classes and preprocessing
  in its ``extra``, loadable by ``vitedge.load`` / ``vitedge eval``;
- ``metrics.json`` — the config and per-epoch history.

Resuming a killed run (even mid-epoch) restarts at the last completed epoch and ends with the
same bits as an uninterrupted run on the same device and thread count: data order,
augmentation and dropout randomness are re-derived from (seed, epoch), the learning rate from
the step.

The test split is for reporting only: no checkpoint is picked by test accuracy; the last
epoch's weights are the result.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vitedge.data.folder import DataWarning
from vitedge.errors import VitedgeError
from vitedge.io import read_metadata, write_text
from vitedge.models import create_model, is_model
from vitedge.models.checkpoint import load, save
from vitedge.models.registry import unknown_model_error
from vitedge.train import distributed
from vitedge.train.checkpoint import STATE_FILE, load_train_state, read_train_meta, save_train_state
from vitedge.train.config import TrainConfig, config_differences
from vitedge.train.ema import ModelEMA, unwrap
from vitedge.train.optim import lr_at, make_optimizer, set_lr
from vitedge.train.progress import TrainProgress
from vitedge.train.sampling import SeededDataset, ShardSampler, TrainBatchSampler, derive_seed
from vitedge.train.tasks import Task, task_for, task_of

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class StepInfo:
    """What a step hook sees after each optimizer step."""

    epoch: int
    step: int                  # optimizer steps done so far (1 after the first)
    loss: float
    lr: float
    model: nn.Module           # possibly DDP-wrapped
    dist: distributed.DistInfo


StepHook = Callable[[StepInfo], None]


@dataclass
class TrainResult:
    """The trained model (EMA weights if enabled, in eval mode), final metrics and history."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None


def train(cfg: TrainConfig, *, hooks: Sequence[StepHook] = (), verbose: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` as configured; see the module docstring for outputs.

    Example::

        result = train(TrainConfig(model="efficientvit_b0", epochs=10, out="runs/fmnist",
                                   data=DataConfig(dataset="fashion-mnist", img_size=64)))
        result.metrics["top1"]
    """

    info = distributed.setup(cfg.device)
    try:
        with warnings.catch_warnings():
            if not info.is_main:  # one copy of each data warning, from rank 0
                warnings.simplefilter("ignore", DataWarning)
            task = task_of(cfg.data.dataset)
            train_set = task.train_split(cfg.data)
            classes = list(_classes(train_set))
            torch.manual_seed(derive_seed(cfg.seed, "init"))
            model, data_config = build_model(cfg.model, classes, cfg.data.img_size)
            data_config = _override(data_config, cfg)
            eval_set = task.eval_split(cfg.data, data_config, classes)
        teacher = build_teacher(cfg.distill.teacher, len(classes)) if cfg.distill.teacher else None
        return fit(model, train_set, eval_set, cfg, data_config=data_config, teacher=teacher,
                   hooks=hooks, verbose=verbose, info=info)
    finally:
        distributed.teardown(info)


def fit(model: nn.Module, train_set: torch.utils.data.Dataset, eval_set: torch.utils.data.Dataset,
        cfg: TrainConfig, *, data_config: dict[str, Any] | None = None, teacher: nn.Module | None = None,
        hooks: Sequence[StepHook] = (), verbose: bool = True,
        info: distributed.DistInfo | None = None) -> TrainResult:
    """Train ``model`` on ``train_set`` (untransformed PIL images; the training transform is built
    here from ``cfg.data`` and ``data_config``) and evaluate on ``eval_set`` (already transformed)
    after every epoch. ``cfg.model`` and ``cfg.data.dataset`` are only recorded, not used."""
    own_info = info is None
    info = info or distributed.setup(cfg.device)
    try:
        data_config = _override(dict(data_config or getattr(unwrap(model), "data_config", {})), cfg)
        classes = list(_classes(train_set))
        task = task_for(train_set)
        transform = task.train_transform(data_config, cfg)
        d = cfg.data
        sampler = TrainBatchSampler(len(train_set), d.batch_size, seed=cfg.seed, rank=info.rank,
                                    world_size=info.world_size)
        pin = info.device.type == "cuda"
        seeded = SeededDataset(train_set, transform, joint=task.joint)
        loader = torch.utils.data.DataLoader(seeded, batch_sampler=sampler,
                                             num_workers=d.workers, persistent_workers=d.workers > 0,
                                             pin_memory=pin)
        eval_loader = torch.utils.data.DataLoader(
            eval_set, batch_size=2 * d.batch_size // info.world_size, num_workers=d.workers, pin_memory=pin,
            sampler=ShardSampler(len(eval_set), info.rank, info.world_size))

        # channels_last: oneDNN's convolutions (CPU) and cuDNN's run 1.4-1.6x faster on it for
        # these models (measured on B0 at 64-96 px, batch 128); the weights' values are unchanged.
        model = distributed.wrap(model.to(memory_format=torch.channels_last), info)
        optimizer = make_optimizer(model, cfg.optim)
        ema = ModelEMA(model, cfg.ema.decay) if cfg.ema.decay is not None else None
        if teacher is not None:
            teacher = teacher.to(info.device).eval().requires_grad_(False)
        steps_per_epoch = len(sampler)
        total_steps = cfg.epochs * steps_per_epoch
        warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)

        out = Path(cfg.out)
        start_epoch, step, history = _start(out, cfg, model, optimizer, ema)
        progress = TrainProgress(enabled=info.is_main, verbose=verbose)
        if start_epoch:
            progress.log(f"resuming {out} after epoch {start_epoch}/{cfg.epochs} (step {step})")
        metrics: dict[str, Any] = next((r for r in reversed(history) if "test_loss" in r), {})
        with progress:
            for epoch in range(start_epoch, cfg.epochs):
                sampler.set_epoch(epoch)
                # Dropout and any other model randomness: a pure function of (seed, epoch, rank).
                torch.manual_seed(derive_seed(cfg.seed, "model", epoch, info.rank))
                model.train()
                progress.start_epoch(epoch, cfg.epochs, steps_per_epoch)
                sums = torch.zeros(4, dtype=torch.float64)  # loss * n, correct, counted, n
                t0 = time.perf_counter()
                for images, targets in loader:
                    lr = lr_at(step, total_steps, warmup_steps, cfg.optim)
                    set_lr(optimizer, lr)
                    images = images.to(info.device, non_blocking=True,
                                       memory_format=torch.channels_last)
                    targets = targets.to(info.device, non_blocking=True)
                    logits = model(images)
                    loss = task.loss(logits, targets, _teacher_logits(teacher, images), cfg)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.optim.clip_grad is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                    optimizer.step()
                    if ema is not None:
                        ema.update(model)
                    step += 1
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise VitedgeError(f"the loss became {loss_value} at step {step} (epoch "
                                           f"{epoch + 1}); lower --lr or raise the warm-up")
                    correct, counted = task.hits(logits, targets)  # images, or labelled pixels
                    n = len(targets)
                    sums += torch.tensor([loss_value * n, correct, counted, n], dtype=torch.float64)
                    progress.advance(n * info.world_size, loss_value, 100.0 * correct / max(counted, 1))
                    for hook in hooks:
                        hook(StepInfo(epoch, step, loss_value, lr, model, info))
                seconds = time.perf_counter() - t0
                distributed.all_reduce_sum(sums, info)
                # Every rank continues from rank 0's BatchNorm statistics, as the checkpoint does.
                distributed.broadcast_buffers(model, info)
                if ema is not None:
                    distributed.broadcast_buffers(ema.module, info)
                eval_model = ema.module if ema is not None else unwrap(model)
                t1 = time.perf_counter()
                record = {"epoch": epoch + 1, "step": step, "lr": lr,
                          "train_loss": float(sums[0] / sums[3]),
                          "train_top1": float(100 * sums[1] / sums[2].clamp(min=1)),
                          "images_per_s": float(sums[3]) / seconds, "epoch_seconds": seconds}
                # Skipped evaluations leave the record without test metrics (not stale copies).
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    metrics = task.evaluate(eval_model, eval_loader, classes, info)
                    record.update({k: metrics[k] for k in task.record_keys}, test_loss=metrics["loss"])
                record["eval_seconds"] = time.perf_counter() - t1
                history.append(record)
                if info.is_main:
                    _write_outputs(out, cfg, task, model, optimizer, ema, eval_model, data_config,
                                   classes, history, metrics)
                distributed.barrier(info)
                tested = task.describe(metrics) if "test_loss" in record else "test skipped"
                progress.log(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['train_loss']:.4f}  "
                             f"train {record['train_top1']:.2f}%  {tested}  "
                             f"{record['images_per_s']:.0f} img/s  {seconds:.0f}s")
        final = ema.module if ema is not None else unwrap(model)
        if task.final_keys[-1] not in metrics and history:  # resumed after the last epoch: nothing ran
            metrics = task.evaluate(final, eval_loader, classes, info)
        # Back to the default layout: callers compare, export and time the model as they built it.
        final = final.to(memory_format=torch.contiguous_format)
        return TrainResult(final.eval(), metrics, history, out)
    finally:
        if own_info:
            distributed.teardown(info)


def build_model(spec: str, classes: Sequence[str],
                img_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A model for ``classes`` from a registered name (fresh weights) or a vitedge checkpoint.

    A checkpoint trained on other classes keeps its backbone and gets a new classifier.
    Returns the model and its data config (the checkpoint's training preprocessing if recorded).
    """

    size_kw = {} if img_size is None else {"img_size": img_size}
    if is_model(spec):
        model = create_model(spec, num_classes=len(classes), **size_kw)
        return model, dict(model.data_config)
    if not Path(spec).is_file():
        if any(sep in spec for sep in ("/", ".")):
            raise VitedgeError(f"checkpoint {spec} does not exist; check the path")
        raise unknown_model_error(spec)
    extra = read_metadata(spec)["extra"]
    same = extra.get("classes") == list(classes) or (
        "classes" not in extra and read_metadata(spec)["arch"]["kwargs"].get("num_classes") == len(classes))
    if same:
        model = load(spec, **size_kw)
    else:  # fine-tuning on new classes: keep the backbone, start a fresh classifier
        model = load(spec, num_classes=len(classes), backbone_only=True, **size_kw)
    config = {**model.data_config, **extra.get("data_config", {})}
    config["input_size"] = model.data_config["input_size"]
    return model, config


def build_teacher(spec: str, num_classes: int) -> nn.Module:
    """The distillation teacher from a vitedge checkpoint; its outputs must match the classes."""
    teacher = load(spec)
    outputs = getattr(teacher, "num_classes", None)
    if outputs is not None and outputs != num_classes:
        raise VitedgeError(f"the teacher {spec} predicts {outputs} classes but the data has {num_classes}; "
                           "use a teacher trained on the same dataset")
    return teacher


def _teacher_logits(teacher: nn.Module | None, images: torch.Tensor) -> torch.Tensor | None:
    if teacher is None:
        return None
    with torch.no_grad():
        return teacher(images)


def _start(out: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
           ema: ModelEMA | None) -> tuple[int, int, list[dict[str, Any]]]:
    """(first epoch, step, history): zeros for a new run, the saved values on resume."""
    state_path = out / STATE_FILE
    if not cfg.resume:
        if state_path.exists():
            meta = json.loads(read_train_meta(state_path)["meta"])
            raise VitedgeError(f"{out} already holds a training run (epoch {meta.get('epoch')} of "
                               f"{meta.get('config', {}).get('epochs')}); pass --resume to continue it or "
                               "choose another --out")
        return 0, 0, []
    saved = TrainConfig.from_dict(json.loads(read_train_meta(state_path)["meta"])["config"])
    changed = config_differences(saved, cfg)
    if changed:
        raise VitedgeError(f"cannot resume {out}: the settings differ from the original run "
                           f"({'; '.join(changed)}); resume with the original settings or start a new --out")
    meta = load_train_state(state_path, model=model, optimizer=optimizer, ema=ema)
    return int(meta["epoch"]), int(meta["step"]), list(meta["history"])


def _write_outputs(out: Path, cfg: TrainConfig, task: Task, model: nn.Module,
                   optimizer: torch.optim.Optimizer, ema: ModelEMA | None, eval_model: nn.Module,
                   data_config: dict[str, Any], classes: list[str], history: list[dict[str, Any]],
                   metrics: dict[str, Any]) -> None:
    last = history[-1]
    if getattr(eval_model, "arch", None) is not None:
        # save() writes each model in its kind's format (a QAT run's carries its quantization record)
        save(eval_model, out / MODEL_FILE, extra={
            "classes": classes, "data_config": jsonable_config(data_config), "epoch": last["epoch"],
            "weights": "ema" if ema is not None else "raw",
            "metrics": {k: metrics[k] for k in task.record_keys if k in metrics}, "task": task.name,
            "train_config": cfg.to_dict()})
    report = {"config": cfg.to_dict(), "classes": classes, "history": history,
              "final": {k: metrics[k] for k in task.final_keys if k in metrics}}
    text = json.dumps(report, indent=2)
    write_text(out / METRICS_FILE, text)
    # The training state goes last: once it names epoch N, the other files hold epoch N too.
    save_train_state(out / STATE_FILE, model=model, optimizer=optimizer, ema=ema,
                     meta={"epoch": last["epoch"], "step": last["step"], "history": history,
                           "config": cfg.to_dict(), "classes": classes, "torch": torch.__version__})


def _override(data_config: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    config = dict(data_config)
    if cfg.data.crop_pct is not None:
        config["crop_pct"] = cfg.data.crop_pct
    if cfg.data.interpolation is not None:
        config["interpolation"] = cfg.data.interpolation
    if cfg.data.img_size is not None:
        config["input_size"] = (3, cfg.data.img_size, cfg.data.img_size)
    if "input_size" not in config:
        raise VitedgeError("the model has no data_config input size; set DataConfig.img_size")
    config.setdefault("crop_pct", 0.875)
    config.setdefault("interpolation", "bicubic")
    config.setdefault("mean", (0.485, 0.456, 0.406))
    config.setdefault("std", (0.229, 0.224, 0.225))
    return config


def _classes(dataset: torch.utils.data.Dataset) -> Sequence[str]:
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):  # Subset and friends
        dataset = dataset.dataset
    if not hasattr(dataset, "classes"):
        raise VitedgeError("the training set does not name its classes; build it with vitedge.data")
    return dataset.classes


def jsonable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A data config with its tuples as lists (JSON has no tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
