"""The whole edge-compression study as one resumable pipeline.

baseline (train, or the given checkpoint) → prune at each ratio + fine-tune (distilled from the
baseline; the dense reference every Δ is measured against gets the same fine-tuning) → quantize
every variant for each deployment runtime (PTQ, optional QAT; the points where that runtime fuses
them) → export FP32 and INT8 ONNX → top-1 on each runtime × precision → latency
(one process per runtime, runs alternated across all its files). :mod:`vitedge.report` renders
the result and recommends the fastest (variant, runtime, precision) within the accuracy budget.

``deploy.runtime: auto`` deploys on every CPU runtime installed here (:func:`deployment_matrix`);
a runtime name deploys on that one only.

``pruning.mode: search`` adds one variant beside the uniform ratios: a pruning ratio per stage
searched under a latency budget measured on the search runtime (by default as fast as uniform
pruning at 40 %), fine-tuned like the others (:mod:`vitedge.workflows.search`).

``task: segmentation`` runs the same stages on a segmentation model, scored by mIoU: exports at
the test frames' size, latency there and at ``deploy.seg_latency_size`` (a Cityscapes-like
512×1024), no FPGA estimate or CPU breakdown (the task object says which sizes and why).

Everything lands in ``<out>/<name>/``; each stage is cached (:mod:`vitedge.workflows.stages`), so a
killed study resumes where it stopped and a re-run with the same config does no work twice.

Example::

    result = run_study(load_study_config(preset="quick"))     # the measurements
    vitedge.report.write_report(result)                         # runs/quick/report.md
    # or both at once: vitedge.report.study_with_report(config)
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.bench.deployment import latency_in_subprocess, runtime_score
from vitedge.bench.latency_plan import latency_plan
from vitedge.bench.profile import profile
from vitedge.deploy import RUNTIMES, export, get_runtime
from vitedge.deploy.runtimes import native_bf16
from vitedge.errors import VitedgeError
from vitedge.hardware.accelerator import estimate
from vitedge.hardware.roofline import cpu_breakdown, plot_breakdown
from vitedge.io import read_metadata, write_text
from vitedge.models.checkpoint import load, save
from vitedge.quantization import load_quantized, plot_channel_ranges
from vitedge.study.config import StudyConfig, budget_label, search_runtime
from vitedge.train import DataConfig, TrainConfig, TrainStage, train
from vitedge.train.checkpoint import STATE_FILE
from vitedge.train.task_data import TaskData
from vitedge.train.trainer import jsonable_config
from vitedge.workflows.prune import PRUNED_FILE, prune_checkpoint
from vitedge.workflows.quantize import QUANTIZED_FILE, quantize_checkpoint
from vitedge.workflows.search import SearchRequest, check_budget, searched_model
from vitedge.workflows.stages import Stage, file_digest

__all__ = ["SEARCHED", "StudyResult", "Variant", "run_study"]

Log = Callable[[str], None]
SEARCHED = "searched"  # the variant name of pruning.mode: search


@dataclass
class Variant:
    """One float model of the study (the dense baseline or a pruned one) and what became of it."""

    name: str
    ratio: float
    checkpoint: Path
    fingerprint: str                       # of the stage that made it
    metrics: dict[str, Any] = field(default_factory=dict)
    quantized: dict[str, Path] = field(default_factory=dict)     # target runtime → quantized checkpoint
    quant_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # target → its PTQ/QAT record
    # runtime → precision → file (ONNX), size_mib, score (on that runtime), latency (and, task seg,
    # file_hi / latency_hi at deploy.seg_latency_size)
    deployments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # the searched model only: its per-stage ratios, budget, prediction and latency table
    search: dict[str, Any] | None = None
    criterion: str | None = None  # a compared criterion's model (pruning.compare); None: the study's own
    label: str | None = None      # how tables name it, where its ratio does not (a searched model)

    @property
    def shown(self) -> str:
        """How tables name it: its pruning ratio (and a compared criterion), or its label."""
        if self.label is not None:
            return self.label
        return f"{self.ratio:.0%}" + (f" {self.criterion}" if self.criterion else "")


@dataclass
class StudyResult:
    """Everything the study measured: what the report renders."""

    config: StudyConfig
    variants: list[Variant]
    seconds: float
    hardware: dict[str, Any] = field(default_factory=dict)  # FPGA estimates and the CPU breakdown
    # the dense INT8 model's per-channel ranges before and after the Trio-ViT transforms:
    # {"plot", "runtime", "detail"}, or None when the method has no transforms to show
    channel_ranges: dict[str, Any] | None = None
    report: Path | None = None  # set once vitedge.report has written it

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


def run_study(config: StudyConfig, *, log: Log = print) -> StudyResult:
    """Run (or resume) the study ``config`` describes and return what it measured
    (:func:`vitedge.report.write_report` renders it)."""
    start = time.perf_counter()
    run_dir = config.run_dir
    check_ready(config)  # a missing dataset or unreadable checkpoint fails here, before any work
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.to_dict(), indent=2)
    write_text(run_dir / "config.json", text)

    baseline = _baseline(config, run_dir, log)
    if config.pruning.mode == "search":  # a budget out of reach fails now, not after the fine-tuning
        for budget in config.pruning.search.budgets:
            _check_budget(config, run_dir, baseline, log, budget)
    task = _task(config, baseline.checkpoint)
    # every Δ is against a dense model trained as long as the pruned ones, so pruning is not credited
    # with their extra fine-tuning
    dense = _dense_reference(config, run_dir, baseline, log)
    p = config.pruning
    variants = [dense] + [_prune(config, run_dir, baseline, ratio, criterion, log)
                          for criterion in (p.criterion, *p.compare) for ratio in p.ratios]
    if config.pruning.mode == "search":
        variants += [_searched(config, run_dir, baseline, log, budget) for budget in p.search.budgets]
    frame = task.frame
    matrix = deployment_matrix(config)
    log("deploy: " + ", ".join(f"{runtime} {'/'.join(precisions)}" for runtime, precisions in matrix.items()))
    for variant in variants:
        for runtime in matrix:  # INT8 quantized for each runtime: the graph its kernels fuse
            _quantize(config, run_dir, variant, log, runtime)
        _export(config, run_dir, variant, log, matrix, frame, task.data_config)
        _runtime_score(config, run_dir, variant, task, log)
    _latency(config, run_dir, variants, log, frame)
    note = config.task_object.hardware_note
    hardware = (_hardware(config, run_dir, variants, log) if note is None else
                {"fpga": {}, "fpga_note": note, "breakdown": None})
    ranges = _channel_ranges(variants, next(iter(matrix)), task, run_dir / "plots" / "channel_ranges.png")
    return StudyResult(config, variants, time.perf_counter() - start, hardware, ranges)


def _channel_ranges(variants: list[Variant], runtime: str, task: Any, path: Path) -> dict[str, Any] | None:
    """Per-channel input ranges of the dense INT8 model's Trio-ViT sites (the reason for the method)."""
    dense = variants[0]
    try:
        summary = plot_channel_ranges(load_quantized(dense.quantized[runtime]), task.sample(32, seed=1)[0], path)
    except VitedgeError:
        return None  # a method without transforms on a model without depthwise convs: nothing to show
    detail = "; ".join(f"`{s.layer}` ({s.transform}) {s.levels_before:.0f} → {s.levels_after:.0f}" for s in summary)
    return {"plot": str(path), "runtime": runtime, "detail": detail}


# --------------------------------------------------------------------------------------------
# configs handed to the training / pruning / quantization recipes


def eval_data(config: StudyConfig) -> DataConfig:
    """The study's data as evaluation and calibration read it (whole images, no crop scale)."""
    return dataclasses.replace(config.data, scale=(1.0, 1.0))


def _stage_config(config: StudyConfig, stage: TrainStage, out: Path, model: str) -> TrainConfig:
    """``stage`` of the study's recipe on its data and seed, written to ``out``; an interrupted run
    continues from its last epoch."""
    return stage.train_config(model=model, data=config.data, seed=config.seed, out=str(out),
                              resume=(out / STATE_FILE).is_file())


def study_preprocessing(config: StudyConfig, checkpoint: Path) -> dict[str, Any]:
    """The one preprocessing of the study: ``checkpoint``'s (or its architecture's) with the study's
    ``data.img_size`` and ``data.crop_pct`` (when set) on top. The study evaluates with it and every
    checkpoint and ONNX file it writes records it, so ``vitedge eval`` and ``vitedge predict`` on
    them see the images the report's numbers were measured on."""

    model = load(checkpoint)
    extra = read_metadata(checkpoint)["extra"]
    merged = {**model.data_config, **extra.get("data_config", {})}
    channels = merged.get("input_size", (3,))[0]
    merged["input_size"] = (channels, config.data.img_size, config.data.img_size)
    if config.data.crop_pct is not None:
        merged["crop_pct"] = config.data.crop_pct
    return jsonable_config(merged)


def _task(config: StudyConfig, checkpoint: Path) -> Any:
    """The study's data with ``checkpoint``'s classes and the study's preprocessing."""

    classes = read_metadata(checkpoint)["extra"].get("classes")
    return TaskData(eval_data(config), study_preprocessing(config, checkpoint), classes)


# --------------------------------------------------------------------------------------------
# stages


def _baseline(config: StudyConfig, run_dir: Path, log: Log) -> Variant:
    if config.checkpoint is not None:
        return _given_baseline(config, run_dir, log)

    b = config.baseline
    stage = Stage(run_dir / "baseline", {"model": config.model, "data": config.section("data"),
                                         "baseline": config.section("baseline"), "seed": config.seed}, log)
    result = stage.cached()
    if result is None:
        log(f"baseline: training {config.model} on {config.data.dataset} for {b.epochs} epochs")
        trained = train(_stage_config(config, b, stage.folder, config.model), verbose=True)
        result = stage.done({"checkpoint": str(stage.folder / "model.safetensors"),
                             "score": trained.metrics[config.task_object.metric]})
    return _dense_variant(result, stage)


def _given_baseline(config: StudyConfig, run_dir: Path, log: Log) -> Variant:
    """The given checkpoint, copied into the run with the study's preprocessing recorded: what was
    pruned, quantized and exported from it inherits that record, not the one it was trained with."""

    checkpoint = Path(config.checkpoint)
    stage = Stage(run_dir / "baseline", {"checkpoint": str(checkpoint.resolve()),
                                         "digest": file_digest(checkpoint), "data": config.section("data"),
                                         "preprocessing": study_preprocessing(config, checkpoint)}, log)
    result = stage.cached()
    if result is None:
        task = _task(config, checkpoint)
        model = load(checkpoint)
        score = task.score(model)
        log(f"baseline: {checkpoint} — {config.task_object.label} {score:.2f} %")
        extra = {**read_metadata(checkpoint)["extra"], "classes": task.classes, "data_config": task.data_config,
                 "source": str(checkpoint)}
        stage.folder.mkdir(parents=True, exist_ok=True)
        copy = save(model, stage.folder / "model.safetensors", extra=extra)
        result = stage.done({"checkpoint": str(copy), "score": score})
    return _dense_variant(result, stage)


def _dense_variant(result: dict[str, Any], stage: Stage) -> Variant:

    checkpoint = Path(result["checkpoint"])
    cost = profile(load(checkpoint))
    metrics = {"score_fp32": result["score"], "params": cost["params"], "macs": cost["macs"]}
    return Variant("dense", 0.0, checkpoint, stage.fingerprint, metrics)


def _prune(config: StudyConfig, run_dir: Path, dense: Variant, ratio: float, criterion: str, log: Log) -> Variant:
    name = f"{criterion}_p{round(ratio * 100)}"
    variant = _prune_stage(config, run_dir / "prune" / name, name, dense, ratio, log, criterion)
    if criterion != config.pruning.criterion:  # a compared criterion: tables name it beside the ratio
        variant.criterion = criterion
    return variant


def _dense_reference(config: StudyConfig, run_dir: Path, baseline: Variant, log: Log) -> Variant:
    """The dense model every variant is compared with: the baseline given the pruned models'
    fine-tuning budget (ratio 0 through the same recipe: epochs, lr, crops, distillation from the
    baseline), or the baseline itself when there is no fine-tuning."""
    if config.pruning.finetune.epochs == 0:
        return baseline
    reference = _prune_stage(config, run_dir / "dense_finetune", "dense", baseline, 0.0, log)
    metrics = {k: v for k, v in reference.metrics.items() if k not in ("score_pruned", "score_bn")}
    reference.metrics = {**metrics, "score_baseline": baseline.metrics["score_fp32"]}
    return reference


def _prune_stage(config: StudyConfig, folder: Path, name: str, dense: Variant, ratio: float, log: Log,
                 criterion: str | None = None) -> Variant:

    p = config.pruning
    criterion = criterion or p.criterion
    # adding a ratio, a compared criterion or the searched model redoes none
    settings = _pruning_settings(config, "ratios", "mode", "search")
    settings["criterion"] = criterion
    stage = Stage(folder, {"baseline": dense.fingerprint, "ratio": ratio, "pruning": settings,
                           "seed": config.seed}, log)
    result = stage.cached()
    if result is None:
        log(f"dense reference: the baseline fine-tuned {p.finetune.epochs} epochs, the pruned models' budget"
            if ratio == 0 else
            f"prune: {name} ({ratio:.0%} of the channels by {criterion}), fine-tune {p.finetune.epochs} epochs")
        (stage.folder / PRUNED_FILE).unlink(missing_ok=True)  # saved just before an interruption
        train = _stage_config(config, p.finetune, stage.folder / "finetune", str(dense.checkpoint))
        pruned = prune_checkpoint(dense.checkpoint, p.for_ratio(ratio, seed=config.seed, criterion=criterion),
                                  train=train, finetune=p.finetune.epochs > 0, out=stage.folder, verbose=True)
        m = pruned.metrics
        result = stage.done({
            "checkpoint": str(pruned.path), "params": m["params_pruned"], "macs": m["macs_pruned"],
            "score_pruned": m["score_pruned"], "score_bn": m.get("score_bn_recalibrated"),
            "score_fp32": m.get("score_finetuned", m.get("score_bn_recalibrated", m["score_pruned"]))})
    metrics = {k: v for k, v in result.items() if k != "checkpoint"}
    return Variant(name, ratio, Path(result["checkpoint"]), stage.fingerprint, metrics)


def _pruning_settings(config: StudyConfig, *left_out: str) -> dict[str, Any]:
    """The pruning section as a stage key, without ``left_out`` and without the settings that make
    other models (``compare``, ``search.compare_budgets``) or were added after studies were cached
    (``drop_blocks`` unset), so those stay cached."""
    settings = {k: v for k, v in config.section("pruning").items() if k not in (*left_out, "compare")}
    if settings.get("drop_blocks") is None:
        settings.pop("drop_blocks", None)
    if "search" in settings:
        settings["search"] = {k: v for k, v in settings["search"].items() if k != "compare_budgets"}
    return settings


def _search_place(config: StudyConfig, run_dir: Path, budget: str) -> tuple[str, Path]:
    """The variant name and stage folder of ``budget``'s searched model."""
    if budget == config.pruning.search.budget:
        return SEARCHED, run_dir / "search"
    slug = re.sub(r"[^0-9a-z.]+", "-", budget)
    return f"{SEARCHED}_{slug}", run_dir / f"search_{slug}"


def _search_request(config: StudyConfig, run_dir: Path, baseline: Variant, budget: str, out: Path,
                    train: TrainConfig | None = None) -> SearchRequest:
    p, s = config.pruning, config.pruning.search
    return SearchRequest(baseline.checkpoint, config.data, search_runtime(config), s.precision,
                         **s.budget_args(budget), max_macs=s.max_macs, ratios=s.grid, finetune=train,
                         images=s.images, bn_images=p.bn_images, threads=config.deploy.threads, runs=s.runs,
                         rounds=s.rounds, seed=config.seed, stage_widths=s.stage_widths, depth=s.depth, out=out,
                         measured=run_dir / "search")


def _check_budget(config: StudyConfig, run_dir: Path, baseline: Variant, log: Log, budget: str) -> None:
    """Measure (or read) the search's latency table and check ``budget`` against it, unless its
    searched model is already cached."""
    _, folder = _search_place(config, run_dir, budget)
    if (folder / "pruned").is_dir() or (folder / "stage.json").is_file():
        return  # searched before under this budget: its own stage decides what to redo
    try:
        ms = check_budget(_search_request(config, run_dir, baseline, budget, folder), log=log)
    except VitedgeError as err:
        raise VitedgeError(f"pruning.search budget {budget!r}: {err}") from None
    log(f"search: budget {budget} is {ms:.3f} ms on {search_runtime(config)} {config.pruning.search.precision}, "
        "within the grid")


def _searched(config: StudyConfig, run_dir: Path, baseline: Variant, log: Log, budget: str) -> Variant:
    """``pruning.mode: search``: a ratio per stage searched under ``budget`` on the search runtime,
    pruned from the baseline and fine-tuned like the uniform variants. The main budget's model is
    ``searched`` in ``search/``; each compared budget's has a folder of its own and shares the
    latency table and the sensitivity measured there."""
    p, s = config.pruning, config.pruning.search
    runtime = search_runtime(config)
    settings = _pruning_settings(config, "ratios", "mode")
    settings["search"]["budget"] = budget
    name, folder = _search_place(config, run_dir, budget)
    stage = Stage(folder, {"baseline": baseline.fingerprint, "runtime": runtime, "pruning": settings,
                           "data": config.section("data"), "seed": config.seed, "threads": config.deploy.threads}, log)
    result = stage.cached()
    if result is None:
        log(f"search: a pruning ratio per stage of {config.model} within {budget} on {runtime} {s.precision}, "
            f"fine-tune {p.finetune.epochs} epochs")
        train = (_stage_config(config, p.finetune, stage.folder / "pruned" / "finetune", str(baseline.checkpoint))
                 if p.finetune.epochs > 0 else None)
        found = searched_model(_search_request(config, run_dir, baseline, budget, stage.folder, train), log=log)
        m, chosen = found.metrics, found.result
        result = stage.done({
            "checkpoint": str(found.checkpoint), "params": m["params_pruned"], "macs": m["macs_pruned"],
            "score_pruned": m["score_pruned"], "score_bn": m.get("score_bn_recalibrated"),
            "score_fp32": m.get("score_finetuned", m.get("score_bn_recalibrated", m["score_pruned"])),
            "search": {"runtime": runtime, "precision": s.precision, "budget": budget,
                       "budget_ms": chosen.budget_ms, "stage_ratios": chosen.stage_ratios,
                       "predicted_ms": chosen.predicted_ms, "predicted_kl": chosen.predicted_kl,
                       "predicted_score": chosen.predicted_score, "candidates": chosen.candidates,
                       "stage_drops": chosen.stage_drops,
                       "table": found.table.to_dict()}})
    info = result["search"]
    stages = info["table"]["deltas"]
    ratio = sum(info["stage_ratios"].values()) / max(1, len(stages))  # its mean cut, for ordering only
    metrics = {k: v for k, v in result.items() if k not in ("checkpoint", "search")}
    label = SEARCHED if not s.compare_budgets else f"{SEARCHED} {budget_label(budget)}"
    return Variant(name, ratio, Path(result["checkpoint"]), stage.fingerprint, metrics, search=info, label=label)


# the precisions a CPU study deploys in: FP32, bf16 where the CPU has it natively, INT8
# (FP16 has no CPU kernels worth timing; it is `vitedge bench`'s row)
STUDY_PRECISIONS = ("fp32", "bf16", "int8")


def deployment_matrix(config: StudyConfig) -> dict[str, tuple[str, ...]]:
    """Runtime → the precisions the study deploys on it: ``deploy.runtime``'s, or with ``auto``
    those of every runtime installed here that runs both FP32 and INT8."""

    d = config.deploy
    names = [d.runtime] if d.runtime != "auto" else [
        spec.name for spec in RUNTIMES if spec.format == "onnx" and {"fp32", "int8"} <= set(spec.precisions)
        and spec.available()[0]]
    matrix = {}
    for name in names:
        spec = get_runtime(name)
        matrix[name] = tuple(p for p in STUDY_PRECISIONS if p in spec.precisions
                             and (p != "bf16" or native_bf16()))
    return matrix


def _quantize(config: StudyConfig, run_dir: Path, variant: Variant, log: Log, target: str) -> None:

    q = config.quantization
    stage = Stage(run_dir / "quantize" / variant.name / target,
                  {"model": variant.fingerprint, "quantization": config.section("quantization"), "target": target,
                   "data": config.section("data"), "seed": config.seed}, log)
    result = stage.cached()
    if result is None:
        log(f"quantize: {variant.name} for {target} ({q.method}, W{q.w_bits}A{q.a_bits}, {q.calib} calibration "
            f"images{f', QAT {q.qat.epochs} epochs' if q.qat.epochs else ''})")
        (stage.folder / QUANTIZED_FILE).unlink(missing_ok=True)
        qat = _stage_config(config, q.qat, stage.folder / "qat", str(variant.checkpoint)) if q.qat.epochs else None
        method = q.config_for(target)
        refine = None
        if q.latency_plan and target in ("openvino", "onnxruntime"):
            def refine(qmodel: Any) -> None:  # keep in float what runs faster so on the target runtime
                latency_plan(qmodel, resolution=config.data.img_size, threads=config.deploy.threads, rounds=10)

        quantized = quantize_checkpoint(
            variant.checkpoint, method, data=eval_data(config), calib=q.calib, holdout=q.holdout, qat=qat,
            out=stage.folder, seed=config.seed, verbose=True, refine=refine)
        m = quantized.metrics
        plan = quantized.model.precision_plan
        m["latency_points"] = [p for p in plan.float_points if p not in plan.accuracy_points]
        log(f"quantize: {variant.name} for {target}: precision plan {m['precision_plan']}")
        result = stage.done({"checkpoint": str(quantized.path), "score_sim": m.get("score_qat", m["score_int8"]),
                             "score_ptq": m["score_int8"], "score_qat": m.get("score_qat"),
                             "precision_plan": m["precision_plan"], "float_points": m.get("float_points", []),
                             "latency_points": m["latency_points"], "plan_reasons": m.get("plan_reasons", [])})
    variant.quantized[target] = Path(result["checkpoint"])
    variant.quant_metrics[target] = {k: v for k, v in result.items() if k != "checkpoint"}


def _export(config: StudyConfig, run_dir: Path, variant: Variant, log: Log, matrix: dict[str, tuple[str, ...]],
            frame: tuple[int, int] | None = None, preprocessing: dict[str, Any] | None = None) -> None:
    """ONNX files of ``variant`` for every deployment in ``matrix``: one FP32 file (bf16 runs it too)
    and one INT8 file per target runtime (segmentation: at the test ``frame`` size, and again at
    ``deploy.seg_latency_size`` for the second latency column). Each file records ``preprocessing``
    (the study's); None: its checkpoint's."""

    sizes = config.task_object.latency_sizes(frame, config.deploy.seg_latency_size)
    sources = {"fp32": variant.checkpoint, **{f"int8_{t}": variant.quantized[t] for t in matrix}}
    written: dict[tuple[str, str], dict[str, Any]] = {}
    for suffix, size in sizes.items():
        for name, source in sources.items():
            precision = name.split("_")[0]
            key = {"source": file_digest(source), "precision": precision, "preprocessing": preprocessing,
                   **({"size": list(size)} if size else {})}
            stage = Stage(run_dir / "export" / f"{variant.name}_{name}{suffix}", key, log)
            result = stage.cached()
            if result is None:
                at = f" at {size[0]}×{size[1]}" if size else ""
                log(f"export: {variant.name} {name.replace('_', ' for ')} ONNX{at}")
                path = stage.folder / "model.onnx"
                extra = read_metadata(source)["extra"]
                export(load(source), path, precision, resolution=size, classes=extra.get("classes"),
                       data_config=preprocessing or extra.get("data_config"))
                result = stage.done({"file": str(path), "size_mib": path.stat().st_size / 2**20})
            written[name, suffix] = result
    for runtime, precisions in matrix.items():
        for precision in precisions:
            name = f"int8_{runtime}" if precision == "int8" else "fp32"  # bf16 compiles the FP32 file
            entry = variant.deployments.setdefault(runtime, {}).setdefault(precision, {})
            entry.update(file=Path(written[name, ""]["file"]), size_mib=written[name, ""]["size_mib"])
            if "_hi" in sizes:
                entry["file_hi"] = Path(written[name, "_hi"]["file"])


def _runtime_score(config: StudyConfig, run_dir: Path, variant: Variant, task: Any, log: Log) -> None:
    d = config.deploy
    for runtime, by_precision in variant.deployments.items():
        for precision, entry in by_precision.items():
            path = entry["file"]
            stage = Stage(run_dir / "evaluate" / f"{variant.name}_{runtime}_{precision}",
                          {"file": file_digest(path), "runtime": runtime, "precision": precision,
                           "data": config.section("data")}, log)
            result = stage.cached()
            if result is None:
                score = runtime_score(runtime, None, path, precision, task, None, d.threads)
                log(f"evaluate: {variant.name} {precision} on {runtime}: {config.task_object.label} {score:.2f} %")
                result = stage.done({"score": score})
            entry["score"] = result["score"]


def _latency(config: StudyConfig, run_dir: Path, variants: list[Variant], log: Log,
             frame: tuple[int, int] | None = None) -> None:
    """Latency of every deployment: per runtime (and, for bf16, per precision: it runs the FP32
    files) one process with the runs alternated across all variants."""
    d = config.deploy
    groups: dict[tuple[str, str], list[tuple[Variant, str]]] = {}
    for v in variants:
        for runtime, by_precision in v.deployments.items():
            for precision in by_precision:
                group = "bf16" if precision == "bf16" else ""
                groups.setdefault((runtime, group), []).append((v, precision))
    for (runtime, group), members in groups.items():
        sizes = {f"latency{suffix}": (f"file{suffix}", size or config.data.img_size)
                 for suffix, size in config.task_object.latency_sizes(frame, d.seg_latency_size).items()}
        for field_name, (file_key, size) in sizes.items():
            files = [(v, precision, v.deployments[runtime][precision][file_key]) for v, precision in members]
            key = {"files": [file_digest(p) for _, _, p in files], "runtime": runtime, "precisions":
                   [precision for _, precision, _ in files], "deploy": config.section("deploy"),
                   "img_size": config.data.img_size, **({"size": list(size)} if isinstance(size, tuple) else {})}
            folder = f"{field_name.replace('latency_hi', 'latency_512x1024')}/{runtime}{'_' + group if group else ''}"
            stage = Stage(run_dir / folder, key, log)
            result = stage.cached()
            if result is None:
                shown = size if isinstance(size, int) else f"{size[0]}×{size[1]}"
                log(f"latency: {len(files)} models on {runtime}{' ' + group if group else ''} at {shown}, batch "
                    f"{d.batch_size}, {d.threads} threads, {d.runs} runs each (alternated)")
                measured = latency_in_subprocess(runtime, [(p, precision) for _, precision, p in files],
                                                 batch=d.batch_size, resolution=size,
                                                 threads=d.threads, runs=d.runs, warmup=d.warmup)
                result = stage.done({f"{v.name}_{precision}": measured[str(p)] for v, precision, p in files})
            for v, precision, _ in files:
                v.deployments[runtime][precision][field_name] = result[f"{v.name}_{precision}"]


def _hardware(config: StudyConfig, run_dir: Path, variants: list[Variant], log: Log) -> dict[str, Any]:
    """FPGA estimate of every variant (W8A8 cycle model) and the dense model's CPU breakdown."""

    d = config.deploy
    key = {"models": [file_digest(v.checkpoint) for v in variants], "img_size": config.data.img_size,
           "accelerator": d.accelerator, "breakdown": d.breakdown, "threads": d.threads, "runs": d.runs,
           "warmup": d.warmup}
    stage = Stage(run_dir / "hardware", key, log)
    result = stage.cached()
    if result is None:
        result = {"fpga": {}, "fpga_note": None, "breakdown": None}
        if d.accelerator is not None:
            for v in variants:
                try:
                    est = estimate(load(v.checkpoint), d.accelerator, resolution=config.data.img_size)
                    result["fpga"][v.name] = est.summary()
                except VitedgeError as err:  # e.g. softmax attention: no engine for it
                    result["fpga_note"] = str(err)
                    break
            log(f"hardware: {d.accelerator} estimates for {len(result['fpga'])} variants")
        if d.breakdown:
            dense = variants[0]
            log(f"hardware: profiling the dense FP32 model per node on onnxruntime ({d.runs} runs)")
            bd = cpu_breakdown(load(dense.checkpoint), resolution=config.data.img_size, threads=d.threads,
                               runs=d.runs, warmup=d.warmup, name=config.model)
            plot = plot_breakdown([bd], stage.folder / "breakdown.png")
            result["breakdown"] = {**bd.to_dict(), "plot": str(plot)}
        result = stage.done(result)
    for v in variants:
        if v.name in result["fpga"]:
            v.metrics["fpga_fps"] = result["fpga"][v.name]["fps"]
    return result


def check_ready(config: StudyConfig) -> None:
    """What can be checked before any work: the dataset opens (both splits) and the given
    checkpoint is a vitedge model for the dataset's classes. Raises a one-line VitedgeError."""

    d = config.data
    classes = None
    if config.checkpoint is not None:
        classes = read_metadata(config.checkpoint)["extra"].get("classes")
    for split in ("train", "test"):
        config.task_object.split_classes(d, split, classes)
