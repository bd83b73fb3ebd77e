"""Per-stage pruning searched under a measured latency budget instead of one ratio everywhere.

Two measurements and a search:

- **latency**: :class:`~vitedge.bench.latency_model.LatencyTable`, a configuration's latency on
  the target predicted as a fixed cost minus a fitted per-stage rate times the MACs each stage's
  cut removes;
- **sensitivity**: :func:`measure_sensitivity` prunes each stage alone at each ratio of the grid,
  re-estimates BatchNorm, and measures on held-out *training* images (never the test split) how
  far the model moved from the dense one: the mean KL divergence of its predictions (per pixel
  for segmentation) and the task's score;
- **search** (:func:`search`): the configuration (a ratio per stage, 0 included) with the least
  summed divergence whose predicted latency meets the budget.

Why exhaustive: the pruned widths are per stage, so the space is the grid to the power of the
stage count (B0: 4 ratios, 5 stages → 1,024 configurations; M0: 64), small enough to enumerate in
milliseconds. An evolutionary or NetAdapt-style greedy search would only approximate the optimum
of the same additive model; they pay off once the choices are per layer (widths and precisions).
Why KL and not the accuracy drop: on a few hundred held-out images a small cut moves top-1 by a
single image or none, which cannot rank 1,024 configurations; the divergence of the predictions
resolves those differences and is label-free (the same for a segmenter). The score drop is
recorded beside it, and summed for the prediction shown to the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitedge.bench.latency_model import (
    DEFAULT_RATIOS,
    LatencyTable,
    harness,
    measure_table,
    time_files,
    variant_files,
)
from vitedge.bench.profile import profile
from vitedge.deploy import export, get_runtime
from vitedge.deploy.runtimes import native_bf16
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle, read_metadata, write_json
from vitedge.models.checkpoint import load
from vitedge.pruning import PruneConfig, prune
from vitedge.pruning.batchnorm import recalibrate_batchnorm
from vitedge.pruning.depth import block_counts, drop_blocks, removable_blocks
from vitedge.pruning.pruner import stage_names
from vitedge.quantization import QuantConfig
from vitedge.quantization.plan import predictions, score_logits
from vitedge.train.checkpoint import STATE_FILE
from vitedge.train.config import DataConfig, TrainConfig
from vitedge.train.task_data import TaskData
from vitedge.train.tasks import task_of
from vitedge.workflows.prune import PRUNED_FILE, prune_checkpoint
from vitedge.workflows.quantize import QUANTIZED_FILE, quantize_checkpoint
from vitedge.workflows.stages import Stage, file_digest

__all__ = ["SearchRequest", "SearchResult", "SearchRun", "SearchedModel", "Sensitivity", "check_budget", "check_search",
           "measure_sensitivity", "search", "search_checkpoint", "searched_model"]


@dataclasses.dataclass
class Sensitivity:
    """Per stage and grid ratio: the mean KL divergence from the dense model and the score change
    (points of the task's metric) on held-out training images."""

    metric: str
    ratios: tuple[float, ...]
    dense_score: float
    images: int
    kl: dict[str, dict[str, float]]     # stage → f"{ratio:g}" → mean KL(dense ‖ pruned)
    score: dict[str, dict[str, float]]  # stage → f"{ratio:g}" → score − dense score
    # depth: stage → the blocks in the order they are removed (least harmful alone
    # first); stage → f"{k}" → KL and score change with the first k of them removed
    depth_blocks: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    depth_kl: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    depth_score: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sensitivity:
        return cls(**{**data, "ratios": tuple(data["ratios"])})


@dataclasses.dataclass
class SearchResult:
    """The chosen ratio per stage (pruned stages only) and what the models predict for it."""

    stage_ratios: dict[str, float]
    predicted_ms: float
    budget_ms: float
    predicted_kl: float
    predicted_score: float
    candidates: int    # configurations within the budget
    stage_drops: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # stage → blocks removed


def _kl(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Mean KL(dense ‖ pruned) over images (and pixels: class scores are dim 1)."""
    return score_logits(predictions(pruned), predictions(dense)).kl


@torch.no_grad()
def measure_sensitivity(model: nn.Module, data: TaskData, *, ratios: Sequence[float], images: int = 256,
                        bn_images: int = 256, seed: int = 0, round_to: int = 8, stage_widths: bool = False,
                        depth: bool = False, log: Callable[[str], None] = print) -> Sensitivity:
    """Each stage of ``model`` pruned alone (L2, its residual width too with ``stage_widths``) at
    each ratio, BatchNorm re-estimated on ``bn_images`` training images, then compared with the
    dense model on ``images`` other training images. With ``depth``, each removable block of a
    stage (:func:`~vitedge.pruning.depth.removable_blocks`) removed alone, then the k least harmful
    together."""
    model = model.eval()
    available = len(data.train_set)
    if available < 2:
        raise VitedgeError(f"the training split holds {available} image(s); the sensitivity needs two at "
                           "least")
    if available < bn_images + images:  # a small split: half re-estimates BatchNorm, half scores
        bn_images = available // 2
        images = min(images, available - bn_images)
    bn = data.sample(bn_images, seed=seed)
    held = data.sample(images, seed=seed, labels=True, skip=bn_images)
    dense_logits = [model(x) for x, _ in held]
    dense_score = _score(data, dense_logits, held)
    stages = stage_names(model)
    kl: dict[str, dict[str, float]] = {s: {} for s in stages}
    score: dict[str, dict[str, float]] = {s: {} for s in stages}
    for i, (stage, ratio) in enumerate(itertools.product(stages, ratios), 1):
        variant = prune(model, 0.0, stage_ratios={stage: ratio}, round_to=round_to, stage_widths=stage_widths)
        recalibrate_batchnorm(variant, bn)
        logits = [variant.eval()(x) for x, _ in held]
        weighted = sum(_kl(d, p) * len(x) for d, p, (x, _) in zip(dense_logits, logits, held))
        kl[stage][f"{ratio:g}"] = weighted / sum(len(x) for x, _ in held)
        score[stage][f"{ratio:g}"] = _score(data, logits, held) - dense_score
        log(f"sensitivity {i}/{len(stages) * len(ratios)}: {stage} at {ratio:.0%}: KL "
            f"{kl[stage][f'{ratio:g}']:.4f}, {data.task.label} {score[stage][f'{ratio:g}']:+.2f}")
    sensitivity = Sensitivity(data.metric, tuple(ratios), dense_score, sum(len(x) for x, _ in held), kl, score)
    if depth:
        def compare(variant: nn.Module) -> tuple[float, float]:
            recalibrate_batchnorm(variant, bn)
            logits = [variant.eval()(x) for x, _ in held]
            weighted = sum(_kl(d, p) * len(x) for d, p, (x, _) in zip(dense_logits, logits, held))
            return weighted / sum(len(x) for x, _ in held), _score(data, logits, held) - dense_score

        counts = block_counts(model)
        for stage, candidates in removable_blocks(model).items():
            n = counts[stage]
            alone = {j: compare(drop_blocks(model, {stage: [j]}))[0] for j in candidates}
            order = sorted(alone, key=alone.__getitem__)[:n - 1]
            sensitivity.depth_blocks[stage] = order
            sensitivity.depth_kl[stage], sensitivity.depth_score[stage] = {}, {}
            for k in range(1, len(order) + 1):
                kl_k, score_k = compare(drop_blocks(model, {stage: order[:k]}))
                sensitivity.depth_kl[stage][str(k)], sensitivity.depth_score[stage][str(k)] = kl_k, score_k
                log(f"sensitivity: {stage} without {k} of {n} blocks {order[:k]}: KL {kl_k:.4f}, "
                    f"{data.task.label} {score_k:+.2f}")
    return sensitivity


def _score(data: TaskData, logits: Sequence[torch.Tensor], batches: Sequence[Any]) -> float:
    scorer = data.task.scorer(data.classes)
    for out, (_, targets) in zip(logits, batches):
        scorer.update(out, targets)
    return scorer.score()


MacsOf = Callable[[Mapping[str, float], Mapping[str, Sequence[int]]], float]


def search(table: LatencyTable, sensitivity: Sensitivity, budget_ms: float, *, max_macs: float | None = None,
           macs_of: MacsOf | None = None) -> SearchResult:
    """The configuration of least summed divergence whose predicted latency is at most
    ``budget_ms`` (ties: the faster); every stage of the table takes 0 or a ratio both measured,
    and (a table and sensitivity with depth) 0 … n−1 of its blocks removed.
    With ``max_macs`` it must also keep at most that share of the dense model's MACs, as
    ``macs_of(stage_ratios, blocks removed)`` counts them (exactly, on the built model: asked in
    order of divergence until one fits)."""
    ratios = [r for r in sensitivity.ratios if f"{r:g}" in next(iter(table.deltas.values()), {})]
    stages = [s for s in table.stages if s in sensitivity.kl]
    if not stages or not ratios:
        raise VitedgeError("the latency table and the sensitivity share no stage or ratio; measure both "
                           "for the same model and grid")

    def options(stage: str) -> list[tuple[float, int]]:
        most = min(table.max_drops.get(stage, 0), len(sensitivity.depth_kl.get(stage, {})))
        return [(r, k) for k in range(most + 1) for r in (0.0, *ratios)]

    feasible: list[tuple[float, float, dict[str, float], dict[str, int]]] = []
    fastest = float("inf")
    for choice in itertools.product(*(options(s) for s in stages)):
        config = {s: r for s, (r, _) in zip(stages, choice) if r > 0}
        drops = {s: k for s, (_, k) in zip(stages, choice) if k > 0}
        ms = table.predict(config, drops)
        fastest = min(fastest, ms)
        if ms <= budget_ms:
            divergence = (sum(sensitivity.kl[s][f"{r:g}"] for s, r in config.items())
                          + sum(sensitivity.depth_kl[s][str(k)] for s, k in drops.items()))
            feasible.append((divergence, ms, config, drops))
    if not feasible:
        raise VitedgeError(f"a latency of {budget_ms:.3f} ms cannot be met: the fastest configuration of the "
                           f"grid is predicted at {fastest:.3f} ms (dense {table.dense_ms:.3f} ms); "
                           "allow more time or measure a wider ratio grid")
    feasible.sort(key=lambda c: (c[0], c[1]))

    def removed(drops: Mapping[str, int]) -> dict[str, list[int]]:
        return {s: sorted(sensitivity.depth_blocks[s][:k]) for s, k in drops.items()}

    if max_macs is None:
        best = feasible[0]
    else:
        if macs_of is None:
            raise VitedgeError("a MACs budget needs macs_of, the counter of a configuration's MACs")
        best = next((c for c in feasible if macs_of(c[2], removed(c[3])) <= max_macs), None)
        if best is None:
            raise VitedgeError(f"no configuration within {budget_ms:.3f} ms keeps at most {max_macs:.0%} of the "
                               "MACs; allow more MACs, or measure a wider ratio grid")
    divergence, ms, config, drops = best
    change = (sum(sensitivity.score[s][f"{r:g}"] for s, r in config.items())
              + sum(sensitivity.depth_score[s][str(k)] for s, k in drops.items()))
    return SearchResult(config, ms, budget_ms, divergence, max(0.0, sensitivity.dense_score + change),
                        len(feasible), removed(drops))


SEARCH_FILE = "search.json"


@dataclasses.dataclass
class SearchRun:
    """A finished search: what was chosen and why, and the deployed model measured for real."""

    result: SearchResult
    table: LatencyTable
    sensitivity: Sensitivity
    checkpoint: Path           # the searched float model (pruned, fine-tuned)
    deployed: Path             # the file timed on the runtime (INT8 quantized for it, or FP32)
    metrics: dict[str, Any]    # scores on the test split, measured latencies, speedups

    def summary(self) -> str:
        m = self.metrics
        widths = ", ".join(f"{s} {r:.0%}" for s, r in self.result.stage_ratios.items()) or "no width pruned"
        if self.result.stage_drops:
            widths += "; blocks removed: " + ", ".join(f"{s} {b}" for s, b in self.result.stage_drops.items())
        return (f"searched ({widths}): {m['label']} {m['score']:.2f} % on the test split, "
                f"{m['measured_ms']:.2f} ms on {self.table.runtime} {self.table.precision} (predicted "
                f"{self.result.predicted_ms:.2f}, budget {self.result.budget_ms:.2f}), {m['speedup']:.2f}× "
                f"the dense FP32 model, {m['latency_vs_dense']:.2f}× the dense model's latency in "
                f"{self.table.precision}, {m['macs_pruned'] / m['macs_dense']:.2f}× its MACs")


@dataclasses.dataclass
class SearchedModel:
    """The searched configuration, pruned and fine-tuned: what the deployment steps start from."""

    result: SearchResult
    table: LatencyTable
    sensitivity: Sensitivity
    checkpoint: Path           # the pruned, fine-tuned float model
    metrics: dict[str, Any]    # its scores (pruned, BatchNorm re-estimated, fine-tuned), params, MACs, budget


def check_search(checkpoint: Path, data: DataConfig, runtime: str, precision: str, *, latency_ms: float | None,
                 speedup: float | None, match_ratio: float | None, ratios: Sequence[float],
                 max_macs: float | None = None) -> None:
    """What can be checked before any measurement; raises a one-line VitedgeError."""
    if max_macs is not None and not 0 < max_macs <= 1:
        raise VitedgeError(f"--max-macs is a share of the dense model's MACs in (0, 1], got {max_macs}")
    given = [b for b in (latency_ms, speedup, match_ratio) if b is not None]
    # --match-uniform R --speedup X: X times faster than uniform R (the equal-accuracy comparison)
    if len(given) != 1 and not (len(given) == 2 and latency_ms is None):
        raise VitedgeError("give the budget as one of --latency-ms, --speedup or --match-uniform (or "
                           "--match-uniform R --speedup X: X times faster than uniform R)")
    if match_ratio is not None and not any(abs(match_ratio - r) < 1e-9 for r in ratios):
        raise VitedgeError(f"--match-uniform {match_ratio:g} is not a ratio of the grid {list(ratios)}: the "
                           "uniform model is measured at grid ratios only")
    if not all(b > 0 for b in given):
        raise VitedgeError(f"the budget must be positive, got {', '.join(f'{b:g}' for b in given)}")
    if precision not in ("fp32", "bf16", "int8"):
        raise VitedgeError(f"the search deploys fp32, bf16 or int8, not {precision!r}")
    spec = get_runtime(runtime)
    ok, why = spec.available()
    if spec.format != "onnx" or not ok:
        raise VitedgeError(f"runtime {runtime} cannot be measured here: "
                           f"{why or 'the search times ONNX files'}; use onnxruntime or openvino")
    if precision == "bf16" and runtime != "openvino":
        raise VitedgeError(f"bf16 is searched on OpenVINO; {runtime} runs FP32 files in fp32: use fp32 or int8")
    if precision == "bf16" and not native_bf16():
        raise VitedgeError("bf16 is searched on a CPU with native bf16 (AVX-512 BF16 or AMX) and this CPU has "
                           "none: use fp32 or int8")
    if not checkpoint.is_file():
        raise VitedgeError(f"checkpoint {checkpoint} does not exist; check the path")
    arch = read_metadata(checkpoint)["arch"]
    task_of(data.dataset).check_model(arch["name"])


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    """What to search and how to measure it. The budget is one of ``latency_ms``, ``speedup``
    (over the dense FP32 model on ``runtime``) or ``match_ratio`` (the latency the table predicts
    for the uniformly pruned model at that grid ratio; with ``speedup`` too, that many times
    faster than the uniform model); ``max_macs`` (a share of
    the dense model's MACs) bounds the compute too. ``stage_widths``: a Microsoft model's residual
    stage widths are searched with their stage; ``depth``: so is the number of its blocks (an M
    model's any block, a B/L model's body blocks). ``finetune``: the winner's fine-tuning (epochs, optimiser,
    distillation); ``images``: held-out training images that score each cut. ``measured``: where the
    latency table and the sensitivity are cached (default ``out``), so that searches under other
    budgets share them."""

    checkpoint: Path
    data: DataConfig
    runtime: str
    precision: str = "int8"
    latency_ms: float | None = None
    speedup: float | None = None
    match_ratio: float | None = None
    max_macs: float | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    finetune: TrainConfig | None = None
    images: int = 256
    bn_images: int = 256
    threads: int = 1
    runs: int = 50
    rounds: int = 3
    seed: int = 0
    stage_widths: bool = True
    depth: bool = True
    out: Path = Path("runs/search")
    measured: Path | None = None

    def __post_init__(self) -> None:
        for name in ("checkpoint", "out"):  # callers pass str or Path
            object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "measured", Path(self.measured) if self.measured is not None else self.out)
        object.__setattr__(self, "ratios", tuple(self.ratios))


def check_budget(request: SearchRequest, *, log: Callable[[str], None] = print) -> float:
    """The latency budget of ``request`` in milliseconds of its latency table, which is measured
    (or read from ``request.measured``) on the way; a one-line error when no configuration of the
    grid meets it. The study calls this before any fine-tuning, so that a budget out of reach
    fails in minutes rather than after the uniform variants."""
    return _budgeted(request, log)[3]


def _budgeted(r: SearchRequest, log: Callable[[str], None]) -> tuple[TaskData, nn.Module, LatencyTable, float,
                                                                     dict[str, Any]]:
    """The checks, the task, the float model, its latency table and the budget (with how it was set)."""
    check_search(r.checkpoint, r.data, r.runtime, r.precision, latency_ms=r.latency_ms, speedup=r.speedup,
                 match_ratio=r.match_ratio, max_macs=r.max_macs, ratios=r.ratios)
    arch = read_metadata(r.checkpoint)["arch"]
    # the table's key: the architecture with its widths (a pruned checkpoint times differently)
    arch_id = f"{arch['name']}-{hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:8]}"
    bundle = load_bundle(r.checkpoint)
    if bundle.kind != "float":
        raise VitedgeError(f"{r.checkpoint} is already quantized; search from the float checkpoint")
    task = TaskData(dataclasses.replace(r.data, scale=(1.0, 1.0)), bundle.data_config, bundle.classes)
    resolution = int(task.data_config["input_size"][-1])
    model = bundle.model
    table = measure_table(model, runtime=r.runtime, precision=r.precision, resolution=resolution,
                          name=arch_id, threads=r.threads, ratios=r.ratios, runs=r.runs, rounds=r.rounds,
                          cache=r.measured / f"latency_{r.runtime}_{r.precision}.json",
                          stage_widths=r.stage_widths, depth=r.depth, log=log)
    budget_metrics: dict[str, Any] = {}
    if r.latency_ms is not None:
        budget = r.latency_ms
    elif r.match_ratio is not None:
        # the uniform model as the table predicts it, in the units the search compares with
        faster = r.speedup or 1.0
        budget = table.predict({stage: r.match_ratio for stage in table.stages}) / faster
        budget_metrics["budget_from"] = f"uniform {r.match_ratio:.0%}" + (f" / {faster:g}" if r.speedup else "")
    else:
        # the dense FP32 model and the dense model in the table's precision, side by side: --speedup
        # counts from FP32, in the table's units
        fp32_ms, same_ms = _dense_pair(model, r.runtime, r.precision, resolution, r.threads, r.runs, r.rounds,
                                       r.out)
        reference = table.dense_ms * fp32_ms / same_ms
        budget = reference / r.speedup
        budget_metrics["reference_fp32_ms"] = reference
    fastest = table.fastest_ms  # as LatencyTable.predict bounds it, so this check and the search agree
    if budget < fastest:
        raise VitedgeError(f"a latency of {budget:.3f} ms cannot be met: the fastest configuration of the "
                           f"grid is predicted at {fastest:.3f} ms (dense {table.dense_ms:.3f} ms on "
                           f"{r.runtime} {r.precision}); allow more time or search a wider ratio grid")
    return task, model, table, budget, budget_metrics


def searched_model(request: SearchRequest, *, log: Callable[[str], None] = print) -> SearchedModel:
    """The latency table, the sensitivity and the search of :func:`search_checkpoint`, then the
    winner pruned and fine-tuned; no quantization, export or timing of the winner (the study does
    those for every variant alike)."""
    r = request
    task, model, table, budget, budget_metrics = _budgeted(r, log)
    resolution = int(task.data_config["input_size"][-1])
    digest = file_digest(r.checkpoint)

    key = {"checkpoint": digest, "data": dataclasses.asdict(r.data), "seed": r.seed, "ratios": list(r.ratios),
           "images": r.images, "bn_images": r.bn_images, "stage_widths": r.stage_widths,
           **({"depth": True} if r.depth and block_counts(model) else {})}
    stage = Stage(r.measured / "sensitivity", key, log)
    record = stage.cached()
    if record is None:
        measured = measure_sensitivity(model, task, ratios=r.ratios, images=r.images, bn_images=r.bn_images,
                                       seed=r.seed, stage_widths=r.stage_widths, depth=r.depth, log=log)
        record = stage.done(measured.to_dict())
    sensitivity = Sensitivity.from_dict(record)
    macs_of = None
    if r.max_macs is not None:
        dense_macs = profile(model, resolution=resolution)["macs"]

        def macs_of(config: Mapping[str, float], blocks: Mapping[str, Sequence[int]]) -> float:
            pruned = prune(model, 0.0, stage_ratios=dict(config), stage_widths=r.stage_widths,
                           drop_blocks=dict(blocks) or None)
            return profile(pruned.eval(), resolution=resolution)["macs"] / dense_macs

    result = search(table, sensitivity, budget, max_macs=r.max_macs, macs_of=macs_of)
    removed = f", blocks removed {result.stage_drops}" if result.stage_drops else ""
    log(f"search: {result.candidates} configurations within {budget:.2f} ms; chosen {result.stage_ratios}{removed} "
        f"(predicted {result.predicted_ms:.2f} ms, KL {result.predicted_kl:.4f})")

    pruned = _pruned(r.checkpoint, digest, result.stage_ratios, result.stage_drops, r.finetune, r.data,
                     r.bn_images, r.seed, r.stage_widths, r.out, log)
    metrics: dict[str, Any] = {"metric": task.metric, "label": task.task.label, "budget_ms": budget,
                               **budget_metrics, **pruned["metrics"]}
    return SearchedModel(result, table, sensitivity, Path(pruned["checkpoint"]), metrics)


def search_checkpoint(request: SearchRequest, *, calib: int = 256,
                      log: Callable[[str], None] = print) -> SearchRun:
    """Search per-stage pruning as ``request`` says, then prune by the winner, fine-tune it
    (``request.finetune``; ``None``: BatchNorm re-estimation only), quantize it for the runtime on
    ``calib`` training images (``int8``), export it and time it beside the dense model. Every stage
    is cached in ``request.out`` and a re-run resumes."""
    r = request
    found = searched_model(request, log=log)
    metrics = dict(found.metrics)
    resolution = found.table.resolution
    deployed_checkpoint = found.checkpoint
    if r.precision == "int8":
        quantized = _quantized(deployed_checkpoint, r.runtime, r.data, calib, r.seed, r.out, log)
        deployed_checkpoint = Path(quantized["checkpoint"])
        metrics.update(quantized["metrics"])
    # the deployed model's score: after INT8, else after fine-tuning, else after BatchNorm re-estimation
    metrics["score"] = next(metrics[k] for k in ("score_int8", "score_finetuned", "score_bn_recalibrated",
                                                  "score_pruned") if metrics.get(k) is not None)
    deployed = export(load(deployed_checkpoint), r.out / f"searched_{r.precision}.onnx",
                      "fp32" if r.precision == "bf16" else r.precision, resolution=resolution)
    # beside the dense model in FP32 (the --speedup reference) and in the deployed precision
    dense_fp32 = export(load(r.checkpoint), r.out / "dense_fp32.onnx", "fp32", resolution=resolution)
    # a file of its own per precision: the timer keys its results by path
    dense_same = dense_fp32
    if r.precision != "fp32":
        dense_same = variant_files(load(r.checkpoint).eval(), {f"dense_{r.precision}": {}}, r.out,
                                   runtime=r.runtime, precision=r.precision,
                                   resolution=resolution)[f"dense_{r.precision}"]
    timed = _time_together(r.runtime, [(deployed, r.precision), (dense_fp32, "fp32"), (dense_same, r.precision)],
                           resolution, r.threads, r.runs, r.rounds)
    metrics.update(measured_ms=timed[0], dense_fp32_ms=timed[1], speedup=timed[1] / timed[0],
                   dense_same_ms=timed[2], latency_vs_dense=timed[0] / timed[2])
    run = SearchRun(found.result, found.table, found.sensitivity, found.checkpoint, deployed, metrics)
    write_json(r.out / SEARCH_FILE, {"search": dataclasses.asdict(found.result), "metrics": metrics,
                                     "table": found.table.to_dict(), "sensitivity": found.sensitivity.to_dict(),
                                     "checkpoint": str(run.checkpoint), "deployed": str(deployed)}, indent=1)
    return run


def _dense_pair(model: nn.Module, runtime: str, precision: str, resolution: int, threads: int, runs: int,
                rounds: int, out: Path) -> tuple[float, float]:
    """The dense model's latency on ``runtime`` in FP32 and in ``precision``, timed together."""
    out.mkdir(parents=True, exist_ok=True)
    fp32 = export(model, out / "dense_fp32.onnx", "fp32", resolution=resolution)
    if precision == "fp32":
        return (_time_together(runtime, [(fp32, "fp32")], resolution, threads, runs, rounds)[0],) * 2
    files = variant_files(model, {f"dense_{precision}": {}}, out, runtime=runtime, precision=precision,
                          resolution=resolution)
    fp32_ms, same_ms = _time_together(runtime, [(fp32, "fp32"), (files[f"dense_{precision}"], precision)], resolution,
                                      threads, runs, rounds)
    return fp32_ms, same_ms


def _time_together(runtime: str, files: Sequence[tuple[Path, str]], resolution: int, threads: int, runs: int,
                   rounds: int) -> list[float]:
    """Each ``(file, precision)``'s latency, the files alternated in one harness process per round."""
    named = {str(i): file for i, file in enumerate(files)}
    timed = time_files(harness(threads, 1, resolution, runs, max(1, runs // 5)), runtime, named, rounds)
    return [timed[str(i)] for i in range(len(files))]


def _pruned(checkpoint: Path, digest: str, stage_ratios: dict[str, float], stage_drops: dict[str, list[int]],
            finetune: TrainConfig | None, data: DataConfig, bn_images: int, seed: int, stage_widths: bool, out: Path,
            log: Callable[[str], None]) -> dict[str, Any]:
    runs = out / "pruned" / "finetune"
    train = finetune or TrainConfig(model=str(checkpoint), data=data, seed=seed)
    train = train.replace(out=str(runs), resume=(runs / STATE_FILE).is_file())
    config = PruneConfig(ratio=0.0, stage_ratios=stage_ratios, bn_images=bn_images, seed=seed,
                         stage_widths=stage_widths, drop_blocks=stage_drops or None)
    stage = Stage(out / "pruned", {"checkpoint": digest, "prune": dataclasses.asdict(config),
                                   "finetune": train.to_dict() if finetune else None}, log)
    record = stage.cached()
    if record is None:
        (stage.folder / PRUNED_FILE).unlink(missing_ok=True)
        result = prune_checkpoint(checkpoint, config, train=train, finetune=finetune is not None,
                                  out=stage.folder)
        kept = {k: v for k, v in result.metrics.items() if k.startswith(("score", "params", "macs"))}
        record = stage.done({"checkpoint": str(result.path), "metrics": kept})
    return record


def _quantized(checkpoint: Path, runtime: str, data: DataConfig, calib: int, seed: int, out: Path,
               log: Callable[[str], None]) -> dict[str, Any]:
    config = QuantConfig.for_target(runtime)
    stage = Stage(out / "quantized", {"checkpoint": file_digest(checkpoint), "config": config.to_dict(),
                                      "calib": calib, "seed": seed}, log)
    record = stage.cached()
    if record is None:
        (stage.folder / QUANTIZED_FILE).unlink(missing_ok=True)
        result = quantize_checkpoint(checkpoint, config, data=dataclasses.replace(data, scale=(1.0, 1.0)),
                                     calib=calib, out=stage.folder, seed=seed)
        record = stage.done({"checkpoint": str(result.path),
                             "metrics": {k: v for k, v in result.metrics.items() if k.startswith("score")}})
    return record
