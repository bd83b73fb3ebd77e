"""The study's configuration: one typed tree, read from YAML, validated before any work starts.

Sections and their knobs (every one documented in ``configs/study.yaml``):

- top level: ``name`` (the run folder ``<out>/<name>``), ``out``, ``seed``, ``task``
  (``classification``, or ``seg``: a segmentation model on camvid/cityscapes, mIoU in place of
  top-1), ``model``, ``checkpoint`` (a trained or downloaded model; none: the baseline is trained);
- ``data``: dataset, where it lives, resolution, optional subsets for quick runs, batch size;
- ``baseline``: the training recipe used when there is no checkpoint;
- ``pruning``: ratios, criterion, scope, fine-tuning budget and distillation;
- ``quantization``: PTQ method, calibration images, bits, optional QAT epochs;
- ``deploy``: runtime (``auto``: every runtime × precision installed here, each INT8 file quantized
  for its runtime, the fastest recommended), threads, latency runs, batch size, FPGA estimate,
  CPU breakdown;
- ``report``: the accuracy budget of the recommendation.

Presets (``quick``: the demo, ≤ 15 minutes on 2 cores; ``full``: the CIFAR-10 study) are
starting points; a config file and then command-line values override them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.data.segmentation import SEG_DATASETS
from vitedge.deploy import get_runtime
from vitedge.errors import VitedgeError
from vitedge.hardware.accelerator import get_accelerator
from vitedge.models import is_model
from vitedge.models.registry import unknown_model_error
from vitedge.pruning import PruneConfig
from vitedge.quantization import QuantConfig
from vitedge.train.config import QAT_ALPHA, QAT_EMA, QAT_LR, QAT_STEP_LR_MULT

__all__ = ["PRESETS", "StudyConfig", "load_study_config"]


@dataclass(frozen=True)
class DataSection:
    dataset: str = "fashion-mnist"    # registered name (fashion-mnist, cifar10) or an image folder
    root: str | None = None           # where a registered dataset lives; None: its default
    img_size: int = 64                # training and evaluation resolution
    crop_pct: float | None = None     # evaluation centre crop; None: the model's (1.0: whole image)
    train_limit: int | None = None    # class-balanced subset of the training split (quick runs)
    eval_limit: int | None = None     # ... of the test split; None: the whole split
    batch_size: int = 128
    workers: int = 0                  # data-loader processes (0 is fastest on 2 cores)
    seg_train_split: str = "train"    # task seg: the split trained on (CamVid: train or trainval)


@dataclass(frozen=True)
class BaselineSection:
    epochs: int = 15
    lr: float = 2e-3
    warmup_epochs: float = 2.0
    min_scale: float = 0.8            # random-resized-crop minimum area


@dataclass(frozen=True)
class PruningSection:
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6)
    criterion: str = "l2"             # l2 (Frobenius), l1, taylor, random
    scope: str = "layer"              # layer (uniform per group) or global ranking
    round_to: int = 8                 # kept channels in multiples of this (runtimes like it)
    finetune_epochs: int = 3          # the same budget for every ratio
    distill: bool = True              # distil from the unpruned baseline while fine-tuning
    lr: float = 5e-4
    min_scale: float = 0.5


@dataclass(frozen=True)
class QuantizationSection:
    method: str = "trio"              # minmax, percentile, mse, trio
    calib: int = 512                  # calibration images from the training split
    w_bits: int = 8
    a_bits: int = 8
    qat_epochs: int = 0               # > 0: QAT (learned step sizes, distilled) after PTQ
    qat_lr: float = QAT_LR
    qat_step_lr_mult: float = QAT_STEP_LR_MULT  # the learned step sizes train at qat_lr × this
    qat_alpha: float = QAT_ALPHA      # distillation weight in QAT (1: the float model only)
    qat_ema: float = QAT_EMA          # QAT freezes an EMA of weights and step sizes (0: the last step)
    reconstruct: int = 0              # > 0: learn the step sizes for N steps on the calibration set
    holdout: int = 256                # other training images that score the precision plan
    auto_float: bool = True           # keep in float the points the model cannot take in INT8 (measured)
    keep_float: tuple[str, ...] = ()  # points, kinds (attn.num) or layers kept in float regardless
    latency_plan: bool = True         # also keep in float the attention / depthwise points that run faster so


@dataclass(frozen=True)
class DeploySection:
    runtime: str = "auto"             # auto (every runtime here, the fastest recommended), onnxruntime, openvino
    threads: int = 2
    batch_size: int = 1
    runs: int = 50                    # timed runs per model, alternated across models
    warmup: int = 10
    accelerator: str | None = "trio-zcu102"  # FPGA estimate column (vitedge hw); None: none
    seg_latency_size: tuple[int, ...] = (512, 1024)  # task seg: latency also at this (height, width)
    breakdown: bool = True            # per-operator-kind ORT profile of the dense model vs its roofline


@dataclass(frozen=True)
class ReportSection:
    max_drop: float = 1.0             # the recommendation: fastest variant within this many points


@dataclass(frozen=True)
class StudyConfig:
    name: str = "quick"
    out: str = "runs"
    seed: int = 0
    task: str = "classification"      # or "seg": segmentation (mIoU; frames and 512×1024 latency)
    model: str = "efficientvit_b0"
    checkpoint: str | None = None
    data: DataSection = field(default_factory=DataSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    pruning: PruningSection = field(default_factory=PruningSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    deploy: DeploySection = field(default_factory=DeploySection)
    report: ReportSection = field(default_factory=ReportSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples become lists

    def section(self, name: str) -> dict[str, Any]:
        return self.to_dict()[name]


PRESETS: dict[str, dict[str, Any]] = {
    # the demo: Fashion-MNIST subsets, short budgets; about 8 minutes of work on 2 cores
    "quick": {
        "name": "quick",
        "data": {"dataset": "fashion-mnist", "img_size": 64, "crop_pct": 1.0, "train_limit": 20000,
                 "eval_limit": 2000},
        "baseline": {"epochs": 4, "warmup_epochs": 0.5},
        "pruning": {"ratios": [0.2, 0.4, 0.6], "finetune_epochs": 1},
        "quantization": {"calib": 256, "holdout": 128},
        "deploy": {"runs": 40, "warmup": 10},
    },
    # the CIFAR-10 study of benchmarks/RESULTS.md (give --data-dir, and --checkpoint to skip training)
    "full": {
        "name": "cifar10-b0",
        "data": {"dataset": "cifar10", "img_size": 96, "crop_pct": 1.0},
        "baseline": {"epochs": 50, "min_scale": 0.35},
        "pruning": {"ratios": [0.2, 0.4, 0.6], "finetune_epochs": 5},
        "quantization": {"calib": 1024, "holdout": 256},
        "deploy": {"runs": 100, "warmup": 20},
    },
}


def load_study_config(path: str | os.PathLike | None = None, *, preset: str = "quick",
                      overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The preset, updated by the YAML file at ``path``, updated by ``overrides`` (dotted keys,
    e.g. ``{"data.dataset": "cifar10"}``); every value type-checked and range-checked."""
    if preset not in PRESETS:
        raise VitedgeError(f"unknown preset {preset!r}; {_hint(preset, PRESETS)}")
    tree = json.loads(json.dumps(PRESETS[preset]))
    if path is not None:
        _merge(tree, _read_yaml(Path(path)), where=str(path))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    config = _build(StudyConfig, tree, "")
    check_study_config(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise VitedgeError(f"study config {path} does not exist; see configs/study.yaml for one")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise VitedgeError(f"study config {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VitedgeError(f"study config {path} must be a mapping of sections, not a {type(data).__name__}")
    return data


def _merge(tree: dict[str, Any], update: dict[str, Any], where: str) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value, where)
        else:
            tree[key] = value


def _hint(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(choices)}"


def _build(cls: type, values: Any, prefix: str) -> Any:
    """``cls`` from a dict, naming the full dotted key of any unknown field or wrong type."""
    if not isinstance(values, dict):
        raise VitedgeError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise VitedgeError(f"unknown study setting {prefix}{key!r}: {_hint(key, sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(hint, value, key)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise VitedgeError(f"study setting {key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, key) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise VitedgeError(f"study setting {key} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def check_study_config(config: StudyConfig) -> None:
    """Ranges and names that would otherwise fail hours in; raises a one-line VitedgeError."""

    if not config.name or "/" in config.name or config.name.startswith("."):
        raise VitedgeError(f"study name {config.name!r} must be a plain folder name")
    _check_task(config)
    if config.checkpoint is None and not is_model(config.model) and not Path(config.model).is_file():
        raise unknown_model_error(config.model)  # a model is a registered name or a checkpoint to fine-tune
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise VitedgeError(f"checkpoint {config.checkpoint} does not exist; check the path")
    positive = {"data.img_size": config.data.img_size, "data.batch_size": config.data.batch_size,
                "baseline.epochs": config.baseline.epochs, "quantization.calib": config.quantization.calib,
                "deploy.threads": config.deploy.threads, "deploy.batch_size": config.deploy.batch_size,
                "deploy.runs": config.deploy.runs}
    for key, value in positive.items():
        if value < 1:
            raise VitedgeError(f"study setting {key} must be at least 1, got {value}")
    for key in ("train_limit", "eval_limit"):
        value = getattr(config.data, key)
        if value is not None and value < 1:
            raise VitedgeError(f"study setting data.{key} must be a positive number of images, got {value}")
    if config.pruning.finetune_epochs < 0 or config.quantization.qat_epochs < 0:
        raise VitedgeError("fine-tuning and QAT epochs must be >= 0")
    q = config.quantization
    if not (q.qat_lr > 0 and q.qat_step_lr_mult > 0 and 0 <= q.qat_alpha <= 1):
        raise VitedgeError("quantization.qat_lr and qat_step_lr_mult must be positive and qat_alpha in "
                           f"[0, 1], got {q.qat_lr}, {q.qat_step_lr_mult}, {q.qat_alpha}")
    if not 0 <= q.qat_ema < 1:
        raise VitedgeError(f"quantization.qat_ema must be in [0, 1) (0: off), got {q.qat_ema}")
    if q.reconstruct < 0:
        raise VitedgeError(f"quantization.reconstruct must be >= 0 steps, got {q.reconstruct}")
    if config.data.crop_pct is not None and not 0 < config.data.crop_pct <= 1:
        raise VitedgeError(f"data.crop_pct must be in (0, 1], got {config.data.crop_pct}")
    for scale in (config.baseline.min_scale, config.pruning.min_scale):
        if not 0 < scale <= 1:
            raise VitedgeError(f"min_scale must be in (0, 1], got {scale}")
    if len(set(config.pruning.ratios)) != len(config.pruning.ratios):
        raise VitedgeError(f"pruning.ratios {list(config.pruning.ratios)} lists a ratio twice")
    try:
        for ratio in config.pruning.ratios:  # PruneConfig holds the rules for ratio, criterion, scope
            PruneConfig(ratio=ratio, criterion=config.pruning.criterion, scope=config.pruning.scope,
                        round_to=config.pruning.round_to)
    except VitedgeError as err:
        raise VitedgeError(f"study section pruning: {err}") from err
    if 0.0 in config.pruning.ratios:
        raise VitedgeError("pruning.ratios must not list 0: the dense baseline is always part of the study")
    q = config.quantization
    try:
        QuantConfig(method=q.method, w_bits=q.w_bits, a_bits=q.a_bits, keep_float=q.keep_float,
                    auto_float=q.auto_float)
        if isinstance(q.holdout, bool) or not isinstance(q.holdout, int) or q.holdout < 0:
            raise VitedgeError(f"holdout={q.holdout!r} must be an int >= 0 (0: score on the calibration images)")
    except VitedgeError as err:
        raise VitedgeError(f"study section quantization: {err}") from err
    if config.deploy.runtime != "auto":
        spec = get_runtime(config.deploy.runtime)
        if spec.format != "onnx" or "fp32" not in spec.precisions or "int8" not in spec.precisions:
            raise VitedgeError(f"runtime {spec.name} cannot run both FP32 and INT8 files; use auto, onnxruntime "
                               "or openvino")
        ok, why = spec.available()
        if not ok:
            raise VitedgeError(f"runtime {spec.name} is not available here: {why}")
    if config.deploy.accelerator is not None:
        try:
            get_accelerator(config.deploy.accelerator)
        except VitedgeError as err:
            raise VitedgeError(f"study setting deploy.accelerator: {err}") from err


TASKS = ("classification", "seg")


def _check_task(config: StudyConfig) -> None:
    """The task, its dataset and its model agree (a classifier on CamVid fails here, not in hour 2)."""
    if config.task not in TASKS:
        raise VitedgeError(f"unknown task {config.task!r}; {_hint(config.task, TASKS)}")
    seg_data = str(config.data.dataset).lower() in SEG_DATASETS
    if config.task == "seg":
        if not seg_data:
            raise VitedgeError(f"task seg needs a segmentation dataset ({', '.join(SEG_DATASETS)}), not "
                               f"{config.data.dataset!r}; pass --data camvid --data-dir DIR")
        if config.checkpoint is None and "_seg_" not in Path(config.model).name:
            raise VitedgeError(f"task seg needs a segmentation model (e.g. efficientvit_seg_b0), not "
                               f"{config.model!r}; pass --model")
        size = config.deploy.seg_latency_size
        if len(size) != 2 or any(s < 32 or s % 32 for s in size):
            raise VitedgeError(f"deploy.seg_latency_size must be [height, width] in multiples of 32, "
                               f"got {list(size)}")
    elif seg_data:
        raise VitedgeError(f"{config.data.dataset} is a segmentation dataset; run the study with --task seg")
