"""The study's configuration: one typed tree that composes the component configs, read from
YAML, validated before any work starts.

Sections (every knob documented in ``configs/study.yaml``):

- top level: ``name`` (the run folder ``<out>/<name>``), ``out``, ``seed``, ``task``
  (``classification``, or ``segmentation``/``seg``: a segmentation model on camvid/cityscapes,
  scored by mIoU), ``model``, ``checkpoint`` (a trained or downloaded model; none: the baseline is trained);
- ``data``: a :class:`~vitedge.train.DataConfig` (dataset, where it lives, resolution, subsets);
- ``baseline``: a :class:`~vitedge.train.TrainStage`, the recipe used when there is no checkpoint;
- ``pruning``: a :class:`~vitedge.pruning.PruneConfig` (criterion, scope, widths) with the ratios
  and the fine-tuning stage;
- ``quantization``: a :class:`~vitedge.quantization.QuantConfig` (method, bits, precision plan)
  with the calibration and hold-out sizes and the QAT stage; each runtime gets it retargeted;
- ``deploy``: runtime (``auto``: every runtime × precision installed here, each INT8 file quantized
  for its runtime, the fastest recommended), threads, latency runs, batch size, FPGA estimate,
  CPU breakdown;
- ``report``: the accuracy budget of the recommendation.

Each knob is defined once, in its component; the study adds only what is the study's own.
Presets (``quick``: the demo, ≤ 15 minutes on 2 cores; ``full``: the CIFAR-10 study) are
starting points; a config file and then command-line values override them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import field
from pathlib import Path
from typing import Any

from vitedge import settings
from vitedge.deploy import get_runtime
from vitedge.deploy.runtimes import native_bf16
from vitedge.errors import VitedgeError
from vitedge.hardware.accelerator import get_accelerator
from vitedge.models import is_model
from vitedge.models.registry import unknown_model_error
from vitedge.pruning import PruneConfig
from vitedge.pruning.importance import check_criterion
from vitedge.quantization import QuantConfig
from vitedge.settings import config_class
from vitedge.train.config import (
    QAT_ALPHA,
    QAT_EMA,
    QAT_LR,
    QAT_STEP_LR_MULT,
    DataConfig,
    DistillConfig,
    EMAConfig,
    TrainStage,
)
from vitedge.train.tasks import Task, get_task, task_of
from vitedge.workflows.prune import DENSE_TEACHER

__all__ = ["PRESETS", "SearchPlan", "StudyConfig", "budget_label", "load_study_config", "search_runtime"]


@config_class
class SearchPlan:
    """``pruning.mode: search``: besides the uniform ratios, one model with a pruning ratio per
    stage searched under a latency budget measured on ``runtime`` in ``precision``
    (:mod:`vitedge.workflows.search`), fine-tuned like the uniform ones.

    ``budget``: ``uniform:R`` (as fast as uniform pruning at grid ratio R, measured in the latency
    table: the equal-latency comparison), ``uniform:R/X`` (X times faster than that: the
    equal-accuracy comparison), ``speedup:X`` (X times faster than the dense FP32 model on the
    runtime) or ``latency:MS``. ``compare_budgets``: more budgets, one searched model each (its own
    row, named by its budget), sharing the latency table and the sensitivity."""

    runtime: str = "auto"             # auto: openvino where installed (the fastest CPU runtime here), else onnxruntime
    precision: str = "int8"           # fp32, bf16 (OpenVINO, native bf16 only) or int8
    budget: str = "uniform:0.4"
    compare_budgets: tuple[str, ...] = ()
    max_macs: float | None = None     # also keep at most this share of the dense model's MACs
    grid: tuple[float, ...] = (0.2, 0.4, 0.6)  # the per-stage ratios the table and the sensitivity measure
    images: int = 256                 # held-out training images that score each cut
    stage_widths: bool = True         # a Microsoft model's residual stage widths are searched with their stage
    depth: bool = True                # ... and how many of its blocks each stage keeps
    runs: int = 50                    # latency table: runs per model and call
    rounds: int = 3

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "int8"):
            raise VitedgeError(f"search.precision must be fp32, bf16 or int8, not {self.precision!r}")
        if not self.grid or not all(0 < r < 1 for r in self.grid) or len(set(self.grid)) != len(self.grid):
            raise VitedgeError(f"search.grid must list distinct ratios in (0, 1), got {list(self.grid)}")
        if self.max_macs is not None and not 0 < self.max_macs <= 1:
            raise VitedgeError(f"search.max_macs is a share of the dense model's MACs in (0, 1], got {self.max_macs}")
        for key in ("images", "runs", "rounds"):
            if getattr(self, key) < 1:
                raise VitedgeError(f"search.{key} must be at least 1, got {getattr(self, key)}")
        budgets = self.budgets
        if len(set(budgets)) != len(budgets):
            raise VitedgeError(f"search.compare_budgets {list(self.compare_budgets)} repeats a budget; list each "
                               "budget once, the main one (search.budget) not again")
        for budget in budgets:
            self.budget_args(budget)

    @property
    def budgets(self) -> tuple[str, ...]:
        """Every budget searched: ``budget`` first, then ``compare_budgets``."""
        return (self.budget, *self.compare_budgets)

    def budget_args(self, budget: str | None = None) -> dict[str, float]:
        """``budget`` (default: the main one) as :class:`~vitedge.workflows.search.SearchRequest`'s keywords."""
        budget = self.budget if budget is None else budget
        kind, _, value = budget.partition(":")
        keyword = {"uniform": "match_ratio", "speedup": "speedup", "latency": "latency_ms"}.get(kind)
        value, slash, faster = value.partition("/")
        try:
            number, times = float(value), float(faster) if slash else 1.0
        except ValueError:
            number = times = float("nan")
        if keyword is None or not number > 0 or not times > 0 or (slash and kind != "uniform"):
            raise VitedgeError(f"search.budget {budget!r} must be uniform:RATIO, uniform:RATIO/TIMES, "
                               "speedup:TIMES or latency:MS with positive numbers, e.g. uniform:0.4")
        if kind == "uniform" and not any(abs(number - r) < 1e-9 for r in self.grid):
            raise VitedgeError(f"search.budget {budget!r}: {number:g} is not a ratio of search.grid "
                               f"{list(self.grid)}")
        return {keyword: number, **({"speedup": times} if slash else {})}


def budget_label(budget: str) -> str:
    """A budget as tables name it: ``uniform:0.4/1.25`` → ``1.25× uniform 40%``."""
    kind, _, value = budget.partition(":")
    value, slash, faster = value.partition("/")
    if kind == "uniform":
        return (f"{float(faster):g}× " if slash else "") + f"uniform {float(value):.0%}"
    return f"{float(value):g}× dense" if kind == "speedup" else f"{float(value):g} ms"


@config_class
class PruningPlan(PruneConfig):
    """How the study prunes: a :class:`PruneConfig` for every ratio of ``ratios`` (its own
    ``ratio`` and ``seed`` are set per variant from ``ratios`` and the study's seed), then the
    same fine-tuning stage for every ratio and for the dense reference."""

    ratios: tuple[float, ...] = (0.2, 0.4, 0.6)
    compare: tuple[str, ...] = ()     # more criteria pruned at the same ratios, fine-tuned alike (e.g. taylor)
    mode: str = "uniform"             # uniform: the ratios only; search: the ratios and one searched model
    search: SearchPlan = field(default_factory=SearchPlan)
    finetune: TrainStage = field(default_factory=lambda: TrainStage(
        epochs=3, lr=5e-4, warmup_epochs=0.3, min_scale=0.5, distill=DistillConfig(teacher=DENSE_TEACHER)))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ratio", "seed"):
            if getattr(self, name) != getattr(PruneConfig, name):
                raise VitedgeError(f"{name} is set per variant (from ratios and the study's seed); "
                                   "leave it out")
        if len(set(self.ratios)) != len(self.ratios):
            raise VitedgeError(f"ratios {list(self.ratios)} list a ratio twice")
        if self.mode not in ("uniform", "search"):
            raise VitedgeError(f"pruning.mode must be uniform or search, not {self.mode!r}")
        if 0.0 in self.ratios:
            raise VitedgeError("ratios must not list 0: the dense baseline is always part of the study")
        for ratio in self.ratios:
            self.for_ratio(ratio, seed=0)  # each ratio under PruneConfig's rules
        compared = [check_criterion(c) for c in self.compare]
        if self.criterion in compared or len(set(compared)) != len(compared):
            raise VitedgeError(f"pruning.compare {list(self.compare)} must list other criteria than "
                               f"pruning.criterion ({self.criterion}), each once")
        object.__setattr__(self, "compare", tuple(compared))

    def for_ratio(self, ratio: float, *, seed: int, criterion: str | None = None) -> PruneConfig:
        return dataclasses.replace(settings.narrow(self, PruneConfig), ratio=ratio, seed=seed,
                                   criterion=criterion or self.criterion)


@config_class
class QuantPlan(QuantConfig):
    """How the study quantizes: a :class:`QuantConfig` (retargeted to each runtime it deploys on),
    ``calib`` calibration images, ``holdout`` other training images that score the precision plan
    (0: the calibration ones), an optional QAT stage (``qat.epochs`` > 0), and ``latency_plan``:
    time the attention and depthwise points in float on each runtime and keep what is faster."""

    calib: int = 512
    holdout: int = 256
    latency_plan: bool = True
    qat: TrainStage = field(default_factory=lambda: TrainStage(
        epochs=0, lr=QAT_LR, warmup_epochs=0.0, step_size_lr_mult=QAT_STEP_LR_MULT, min_scale=0.5,
        ema=EMAConfig(decay=QAT_EMA), distill=DistillConfig(alpha=QAT_ALPHA)))

    def __post_init__(self) -> None:
        if self.target != "simulation":
            raise VitedgeError("target is set per runtime by the study (deploy.runtime); leave it out")
        super().__post_init__()
        if self.calib < 1:
            raise VitedgeError(f"calib must be at least 1 image, got {self.calib}")
        if self.holdout < 0:
            raise VitedgeError(f"holdout={self.holdout} must be >= 0 (0: score on the "
                               "calibration images)")

    def config_for(self, target: str) -> QuantConfig:
        """The component config, laid out for ``target``."""
        return settings.narrow(self, QuantConfig).retarget(target)


@config_class
class DeployConfig:
    """Where and how the study times its variants."""

    runtime: str = "auto"             # auto (every runtime here, the fastest recommended), onnxruntime, openvino
    threads: int = 2
    batch_size: int = 1
    runs: int = 50                    # timed runs per model, alternated across models
    warmup: int = 10
    accelerator: str | None = "trio-zcu102"  # FPGA estimate column (vitedge hw); None: none
    seg_latency_size: tuple[int, int] = (512, 1024)  # task seg: latency also at this (height, width)
    breakdown: bool = True            # per-operator-kind ORT profile of the dense model vs its roofline

    def __post_init__(self) -> None:
        for key in ("threads", "batch_size", "runs"):
            if getattr(self, key) < 1:
                raise VitedgeError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.warmup < 0:
            raise VitedgeError(f"warmup must be >= 0, got {self.warmup}")
        if any(s < 32 or s % 32 for s in self.seg_latency_size):
            raise VitedgeError(f"seg_latency_size must be [height, width] in multiples of 32, "
                               f"got {list(self.seg_latency_size)}")
        if self.accelerator is not None:
            try:
                get_accelerator(self.accelerator)
            except VitedgeError as err:
                raise VitedgeError(f"accelerator: {err}") from err


@config_class
class ReportConfig:
    max_drop: float = 1.0             # the recommendation: fastest variant within this many points

    def __post_init__(self) -> None:
        if self.max_drop < 0:
            raise VitedgeError(f"max_drop must be >= 0 points, got {self.max_drop}")


@config_class
class StudyConfig:
    name: str = "quick"
    out: str = "runs"
    seed: int = 0
    task: str = "classification"      # or segmentation ("seg"): mIoU, whole frames, 512×1024 latency too
    model: str = "efficientvit_b0"
    checkpoint: str | None = None
    data: DataConfig = field(default_factory=lambda: DataConfig(img_size=64))
    baseline: TrainStage = field(default_factory=lambda: TrainStage(epochs=15, lr=2e-3, warmup_epochs=2.0,
                                                                    min_scale=0.8))
    pruning: PruningPlan = field(default_factory=PruningPlan)
    quantization: QuantPlan = field(default_factory=QuantPlan)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", get_task(self.task).name)  # "seg" is short for segmentation
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise VitedgeError(f"study name {self.name!r} must be a plain folder name")
        if self.data.img_size is None:
            raise VitedgeError("the study needs data.img_size (its training and evaluation resolution)")

    @property
    def task_object(self) -> Task:
        return get_task(self.task)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)

    def section(self, name: str) -> dict[str, Any]:
        return self.to_dict()[name]


PRESETS: dict[str, dict[str, Any]] = {
    # the demo: Fashion-MNIST subsets, short budgets; about 8 minutes of work on 2 cores
    "quick": {
        "name": "quick",
        "data": {"dataset": "fashion-mnist", "img_size": 64, "crop_pct": 1.0, "train_limit": 20000,
                 "eval_limit": 2000},
        "baseline": {"epochs": 4, "warmup_epochs": 0.5},
        "pruning": {"ratios": [0.2, 0.4, 0.6], "finetune": {"epochs": 1, "warmup_epochs": 0.1}},
        "quantization": {"calib": 256, "holdout": 128},
        "deploy": {"runs": 40, "warmup": 10},
    },
    # the CIFAR-10 study of benchmarks/RESULTS.md (give --data-dir, and --checkpoint to skip training)
    "full": {
        "name": "cifar10-b0",
        "data": {"dataset": "cifar10", "img_size": 96, "crop_pct": 1.0},
        "baseline": {"epochs": 50, "min_scale": 0.35},
        "pruning": {"ratios": [0.2, 0.4, 0.6], "finetune": {"epochs": 5, "warmup_epochs": 0.5}},
        "quantization": {"calib": 1024, "holdout": 256},
        "deploy": {"runs": 100, "warmup": 20},
    },
}


def load_study_config(path: str | os.PathLike | None = None, *, preset: str = "quick",
                      overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The defaults, updated by the preset, by the YAML file at ``path``, by ``overrides`` (dotted
    keys, e.g. ``{"data.dataset": "cifar10"}``; ``None`` values skip); every value type-checked
    and range-checked, and what needs the machine (model, checkpoint, runtime) checked too."""
    if preset not in PRESETS:
        raise VitedgeError(f"unknown preset {preset!r}; {_hint(preset, PRESETS)}")
    tree = settings.merge(StudyConfig().to_dict(), PRESETS[preset])
    if path is not None:
        settings.merge(tree, _read_yaml(Path(path)))
    settings.unflatten(tree, overrides or {})
    config = settings.parse(StudyConfig, tree, what="study setting")
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


def _hint(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(choices)}"


def check_study_config(config: StudyConfig) -> None:
    """What the sections cannot check alone: the task against its data and model, that the model
    and checkpoint exist, that the runtime is installed; raises a one-line VitedgeError."""

    _check_task(config)
    if config.checkpoint is None and not is_model(config.model) and not Path(config.model).is_file():
        raise unknown_model_error(config.model)  # a model is a registered name or a checkpoint to fine-tune
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise VitedgeError(f"checkpoint {config.checkpoint} does not exist; check the path")
    if config.pruning.mode == "search":
        _check_search(config)
    if config.deploy.runtime != "auto":
        spec = get_runtime(config.deploy.runtime)
        if spec.format != "onnx" or "fp32" not in spec.precisions or "int8" not in spec.precisions:
            raise VitedgeError(f"runtime {spec.name} cannot run both FP32 and INT8 files; use auto, onnxruntime "
                               "or openvino")
        ok, why = spec.available()
        if not ok:
            raise VitedgeError(f"runtime {spec.name} is not available here: {why}")


def search_runtime(config: StudyConfig) -> str:
    """The runtime whose latency the search budgets: ``pruning.search.runtime``, or with ``auto``
    the study's own runtime, OpenVINO when the study deploys on every runtime and it is installed
    (the fastest CPU runtime here), else ONNX Runtime."""
    wanted = config.pruning.search.runtime
    if wanted != "auto":
        return wanted
    if config.deploy.runtime != "auto":
        return config.deploy.runtime
    return "openvino" if get_runtime("openvino").available()[0] else "onnxruntime"


def _check_search(config: StudyConfig) -> None:
    s = config.pruning.search
    runtime = search_runtime(config)
    spec = get_runtime(runtime)
    if spec.format != "onnx" or not spec.available()[0]:
        raise VitedgeError(f"search.runtime {runtime} cannot be measured here: "
                           f"{spec.available()[1] or 'the search times ONNX files'}; use auto, onnxruntime or "
                           "openvino")
    if s.precision == "bf16" and (runtime != "openvino" or not native_bf16()):
        raise VitedgeError("search.precision bf16 needs OpenVINO on a CPU with native bf16 (AVX-512 BF16 or AMX)"
                           f"{'' if native_bf16() else ', and this CPU has none'}: use fp32 or int8")


def _check_task(config: StudyConfig) -> None:
    """The task, its dataset and its model agree (a classifier on CamVid fails here, not in hour 2)."""
    task, data_task = get_task(config.task), task_of(config.data.dataset)
    if data_task is not task:
        raise VitedgeError(f"task {task.name} needs a {task.name} dataset, not {config.data.dataset!r} (a "
                           f"{data_task.name} dataset); pass --task {data_task.name}, or --data with a "
                           f"{task.name} dataset")
    if config.checkpoint is None:
        task.check_model(config.model)
