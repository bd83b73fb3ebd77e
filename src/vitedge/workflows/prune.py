"""Prune a trained checkpoint, fine-tune it (optionally distilled from the unpruned model),
evaluate, save: the whole recipe behind ``vitedge prune CKPT --ratio 0.4 --finetune-epochs N
--distill``, as one function the CLI and the pruning study both call.

Files in ``out``:

- ``model.safetensors`` — the pruned (and fine-tuned) model; ``extra`` holds the classes, the
  preprocessing, the pruning config, per-group widths and the metrics;
- ``prune.json`` — the same metrics and per-group summary as plain JSON;
- ``finetune/`` — the training run (``metrics.json``, resumable state) when fine-tuning.

Example::

    result = prune_checkpoint("runs/b0/model.safetensors", PruneConfig(ratio=0.4),
                              train=TrainConfig(epochs=10, data=DataConfig(dataset="cifar10",
                                                root="data/cifar10"),
                                                distill=DistillConfig(teacher="dense")),
                              out="runs/b0_p40")
    result.metrics["score_finetuned"]
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from vitedge.bench.profile import profile
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle, write_text
from vitedge.models.checkpoint import save
from vitedge.pruning.batchnorm import recalibrate_batchnorm
from vitedge.pruning.depth import drop_blocks
from vitedge.pruning.pruner import PruneConfig, apply_plan, plan_pruning
from vitedge.train import fit
from vitedge.train.config import TrainConfig
from vitedge.train.task_data import TaskData
from vitedge.train.trainer import build_teacher, jsonable_config

__all__ = ["DENSE_TEACHER", "PruneResult", "prune_checkpoint"]

PRUNED_FILE = "model.safetensors"
REPORT_FILE = "prune.json"
# DistillConfig.teacher value meaning "the checkpoint being pruned" (what --distill sets).
DENSE_TEACHER = "dense"


@dataclass
class PruneResult:
    """The pruned model (fine-tuned if asked, eval mode), its metrics and per-group widths."""

    model: nn.Module
    metrics: dict[str, Any]
    groups: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None


def prune_checkpoint(
    checkpoint: str | os.PathLike,
    config: PruneConfig,
    *,
    train: TrainConfig | None = None,
    finetune: bool = True,
    out: str | os.PathLike | None = None,
    verbose: bool = True,
) -> PruneResult:
    """Prune ``checkpoint`` (a vitedge checkpoint) and, given ``train``, evaluate and fine-tune.

    ``train`` is a :class:`vitedge.train.TrainConfig`: its ``data`` gives the dataset for
    evaluation, Taylor scores and fine-tuning; its ``epochs``, ``optim`` and ``ema`` drive the
    fine-tuning (skipped with ``finetune=False``); ``distill.teacher="dense"`` distils from the
    unpruned checkpoint. Without ``train`` the model is only pruned (no data, no metrics).
    Metrics (percent): ``score_dense``, ``score_pruned``, ``score_bn_recalibrated`` (after
    re-estimating BatchNorm statistics on ``config.bn_images`` training images, no training;
    fine-tuning starts there), ``score_finetuned``; plus ``params`` and
    ``macs`` of the dense and pruned models at the model's input size.
    """

    checkpoint = Path(checkpoint)
    bundle = load_bundle(checkpoint)
    dense, data_config, classes = bundle.model, bundle.data_config, bundle.classes
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and (out_dir / PRUNED_FILE).exists():
        raise VitedgeError(f"{out_dir / PRUNED_FILE} already exists; choose another --out or delete it")

    metrics: dict[str, Any] = {"checkpoint": str(checkpoint), "config": asdict(config)}
    data = None
    if train is not None:
        data = TaskData(train.data, data_config, classes)
        metrics["metric"] = data.metric  # what the score_* entries hold: top-1, or mIoU
        metrics["score_dense"] = data.score(dense)

    batches = None
    if data is not None and config.criterion == "taylor":
        bs = min(64, train.data.batch_size)
        batches = data.sample(bs * config.max_batches, seed=config.seed, batch_size=bs, labels=True)
    loss_fn = data.loss_fn if data is not None else None  # Taylor: the task's own loss
    shallower = drop_blocks(dense, config.drop_blocks or {})  # whole blocks first, then the widths
    plan = plan_pruning(shallower, config, example_batches=batches, loss_fn=loss_fn)
    model = apply_plan(shallower, plan)
    if data is not None:
        metrics["score_pruned"] = data.score(model)
        if config.bn_images:  # fine-tuning starts from the re-estimated statistics too
            recalibrate_batchnorm(model, data.sample(config.bn_images, seed=config.seed))
            metrics["score_bn_recalibrated"] = data.score(model)
        if finetune:
            model = _finetune(data, train, model, dense, checkpoint, out_dir, verbose)
            metrics["score_finetuned"] = data.score(model)
    for name, net in (("dense", dense), ("pruned", model)):
        cost = profile(net)
        metrics[f"params_{name}"], metrics[f"macs_{name}"] = cost["params"], cost["macs"]

    groups = plan.summary()
    path = None
    if out_dir is not None:
        classes = data.classes if data is not None else classes
        path = save(model, out_dir / PRUNED_FILE, extra={
            "classes": classes, "data_config": jsonable_config(data_config),
            "pruning": {"source": str(checkpoint), "config": asdict(config), "groups": groups},
            "metrics": {k: v for k, v in metrics.items() if k.startswith(("score", "params", "macs"))}})
        report = json.dumps({"metrics": metrics, "groups": groups}, indent=2)
        write_text(out_dir / REPORT_FILE, report)
    return PruneResult(model.eval(), metrics, groups, path)


def _finetune(data: TaskData, train: TrainConfig, model: nn.Module, dense: nn.Module, checkpoint: Path,
              out: Path | None, verbose: bool) -> nn.Module:

    cfg = train.replace(model=str(checkpoint), out=str(out / "finetune") if out is not None else train.out)
    teacher = None
    if cfg.distill.teacher == DENSE_TEACHER:
        teacher = dense
    elif cfg.distill.teacher:
        teacher = build_teacher(cfg.distill.teacher, len(data.classes))
    result = fit(model, data.train_set, data.eval_set, cfg, data_config=data.data_config,
                 teacher=teacher, verbose=verbose)
    return result.model

