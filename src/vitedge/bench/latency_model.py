"""A latency model of the target: what a per-stage pruning configuration costs on one runtime,
precision, resolution and batch, predicted from a table measured on this machine.

Pruning removes hidden channels (MBConv expansions, attention heads, FFN and classifier hidden
widths), and with ``stage_widths`` a Microsoft model's residual stage widths, which the next
stage's first layers and the classifier read too. A stage's pruning changes mostly that stage's
work, so a configuration's latency is modelled as a fixed cost minus a per-stage rate times the
MACs its pruning removes::

    latency({stage: ratio}) = L₀ − Σ_stage w_stage · ΔMACs_stage(ratio)

The table measures whole models: the dense one, one model per stage × grid ratio (that stage
pruned alone) and the uniformly pruned models (every stage at each grid ratio), all timed in one
process per runtime in alternating blocks. L₀ and the rates w ≥ 0 are fitted to all of them by
least squares: one rate per stage pools that stage's three ratios and the uniform models, so a
single noisy measurement moves the prediction little. At low resolution a stage's cut saves a few
per cent, about as much as the machine's noise, and reading the single-stage differences directly
(an earlier version of this model) predicted 16-44 % off on some runs where the fit stayed at 2-8 %
(RESULTS.md). The rate is per stage because the time a MAC costs is not: early stages are
memory-bound, depthwise convs and attention cost more per MAC than 1×1 convs.

Whole models, not extracted blocks: every runtime and precision (INT8 quantized for its runtime)
is measured the way it deploys, fusions across block borders included. A ratio between grid
points is interpolated linearly.

:func:`check_table` measures configurations and reports prediction against measurement.

Example::

    table = measure_table(model, runtime="openvino", precision="int8", resolution=224, name="b0")
    table.predict({"stages.2": 0.4, "stages.3": 0.6})  # ms
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitedge.bench.paired import paired_latency
from vitedge.bench.profile import profile
from vitedge.deploy import export
from vitedge.errors import VitedgeError
from vitedge.io import write_json
from vitedge.pruning import prune
from vitedge.pruning.depth import block_counts
from vitedge.pruning.pruner import stage_names
from vitedge.quantization import QuantConfig, quantize

__all__ = ["DEFAULT_RATIOS", "LatencyTable", "check_table", "fit_rates", "harness", "machine_fingerprint",
           "measure_table", "time_files", "variant_files"]

DEFAULT_RATIOS = (0.2, 0.4, 0.6)

# (runtime, [(file, precision), ...]) → {file: median ms}; the default runs the latency harness
Timer = Callable[[str, Sequence[tuple[str, str]]], Mapping[str, float]]


def machine_fingerprint() -> str:
    """The CPU (model name and the instruction sets INT8/BF16 kernels use) and its core count:
    a table measured on another machine does not apply here."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
    isa = sorted(flags & wanted)
    return f"{name} | {os.cpu_count()} cores | {' '.join(isa)}"


@dataclasses.dataclass
class LatencyTable:
    """Dense latency and the per-stage changes (ms) of one model on one deployment."""

    model: str
    runtime: str
    precision: str
    resolution: int
    batch: int
    threads: int
    machine: str
    ratios: tuple[float, ...]
    dense_ms: float
    deltas: dict[str, dict[str, float]]  # stage → f"{ratio:g}" → ms added (negative: saved)
    coupling: float = 1.0                # k: measured saving of the uniform models / summed deltas
    stage_widths: bool = False           # the variants pruned the residual stage widths too
    uniform_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # f"{ratio:g}" → every stage pruned
    # the fitted model (empty: predict from the deltas): stage → f"{ratio:g}" → MMACs that stage's cut
    # removes alone; L₀; stage → ms per MMAC removed
    macs_saved: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    fit_ms: float = 0.0
    ms_per_mmac: dict[str, float] = dataclasses.field(default_factory=dict)
    # depth: stage → the most blocks the table removed from it; stage → ms per block
    max_drops: dict[str, int] = dataclasses.field(default_factory=dict)
    ms_per_block: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        return list(self.deltas)

    def delta(self, stage: str, ratio: float) -> float:
        """Δ of ``stage`` pruned by ``ratio`` alone as measured, or interpolated between grid points (0: 0)."""
        return self._interpolate(self.deltas, stage, ratio)

    def saved_mmacs(self, stage: str, ratio: float) -> float:
        """MMACs ``stage``'s cut by ``ratio`` removes, interpolated between grid points (0: 0)."""
        return self._interpolate(self.macs_saved, stage, ratio)

    def _interpolate(self, values: Mapping[str, Mapping[str, float]], stage: str, ratio: float) -> float:
        if stage not in values:
            raise VitedgeError(f"stage {stage!r} is not in the latency table of {self.model}; its stages: "
                               f"{', '.join(values)}")
        grid = [(0.0, 0.0)] + [(r, values[stage][f"{r:g}"]) for r in self.ratios]
        if not 0 <= ratio <= grid[-1][0]:
            raise VitedgeError(f"ratio {ratio} of {stage} is outside the measured 0…{grid[-1][0]:g}; measure "
                               "the table with a wider ratio grid")
        for (r0, d0), (r1, d1) in zip(grid, grid[1:]):
            if ratio <= r1:
                return d0 + (d1 - d0) * (ratio - r0) / (r1 - r0)
        return grid[-1][1]

    def predict(self, stage_ratios: Mapping[str, float], stage_drops: Mapping[str, int] | None = None) -> float:
        """Predicted latency (ms) of the model with each stage pruned by its ratio (absent: 0)
        and ``stage_drops`` blocks removed from it (a fitted table with depth), never
        below :attr:`fastest_ms` (a fit can push a sum of savings below what any configuration
        measured)."""
        drops = {stage: k for stage, k in (stage_drops or {}).items() if k}
        for stage, k in drops.items():
            if not 0 < k <= self.max_drops.get(stage, 0):
                raise VitedgeError(f"{k} block(s) of {stage} is outside what the latency table of {self.model} "
                                   f"measured (at most {self.max_drops.get(stage, 0)})")
        blocks = sum(self.ms_per_block[stage] * k for stage, k in drops.items())
        if self.ms_per_mmac:  # rates ≥ 0: never below every stage at the largest ratio, fastest_ms
            fitted = self.fit_ms - sum(self.ms_per_mmac[stage] * self.saved_mmacs(stage, ratio)
                                       for stage, ratio in stage_ratios.items()) - blocks
            return max(fitted, self.floor_ms)
        else:
            saved = sum(self.delta(stage, ratio) for stage, ratio in stage_ratios.items())
            predicted = self.dense_ms + self.coupling * saved - blocks
        return max(predicted, self.fastest_ms) if self.uniform_ms else predicted

    @property
    def floor_ms(self) -> float:
        """Half the fastest model the table timed: a fitted extrapolation below it is noise in the
        rates (a tiny model timed in a few runs can fit savings larger than its whole latency),
        not a latency; every prediction of a fitted table stays above it."""
        measured = [self.dense_ms, *self.uniform_ms.values(),
                    *(self.dense_ms + d for by_ratio in self.deltas.values() for d in by_ratio.values())]
        return 0.5 * min(measured)

    @property
    def fastest_ms(self) -> float:
        """The fastest configuration of the grid: every stage at the largest ratio, as the fit
        predicts it (a table without a fit: as measured, or from the deltas without that)."""
        if self.ms_per_mmac:
            return self.predict({stage: self.ratios[-1] for stage in self.stages}, self.max_drops)
        if self.uniform_ms:
            return min(self.uniform_ms.values())
        return self.dense_ms + self.coupling * sum(min(0.0, *d.values()) for d in self.deltas.values())

    def key(self) -> dict[str, Any]:
        """What the table is valid for: a cached table with another key is measured again."""
        measured = ("dense_ms", "deltas", "coupling", "uniform_ms", "macs_saved", "fit_ms", "ms_per_mmac",
                    "ms_per_block")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in measured}

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        return cls(**{**data, "ratios": tuple(data["ratios"])})


def fit_rates(features: Sequence[Sequence[float]], latencies: Sequence[float]) -> tuple[float, list[float]]:
    """Least squares ``latency ≈ L₀ − Σ w_i · feature_i`` with every ``w_i ≥ 0`` (a cut never
    costs time in this model) and L₀ free: exact non-negative least squares by trying every
    subset of free rates (a handful of stages: at most a few hundred small solves)."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(latencies, dtype=float)
    n = x.shape[1]
    best: tuple[float, float, list[float]] | None = None
    for size in range(n + 1):
        for free in itertools.combinations(range(n), size):
            design = np.column_stack([np.ones(len(y)), *(-x[:, i] for i in free)])
            solution, *_ = np.linalg.lstsq(design, y, rcond=None)
            if (solution[1:] < 0).any():
                continue
            residual = float(((design @ solution - y) ** 2).sum())
            if best is None or residual < best[0] - 1e-15:
                rates = [0.0] * n
                for i, w in zip(free, solution[1:]):
                    rates[i] = float(w)
                best = (residual, float(solution[0]), rates)
    assert best is not None  # the empty subset (L₀ alone) always qualifies
    return best[1], best[2]


def _last_blocks(model: nn.Module, drops: Mapping[str, int]) -> dict[str, list[int]]:
    counts = block_counts(model)
    return {stage: list(range(counts[stage] - k, counts[stage])) for stage, k in drops.items() if k}


def _macs(model: nn.Module, stage_ratios: Mapping[str, float], resolution: int, stage_widths: bool) -> int:
    pruned = prune(model, 0.0, stage_ratios=dict(stage_ratios), round_to=8, stage_widths=stage_widths)
    return profile(pruned.eval(), resolution=resolution)["macs"]


def variant_files(model: nn.Module, configs: Mapping[str, Mapping[str, float]], folder: Path, *,
                  runtime: str, precision: str, resolution: int, round_to: int = 8,
                  calib: Sequence[torch.Tensor] | None = None, stage_widths: bool = False,
                  drops: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Path]:
    """One deployment file per named configuration (``{stage: ratio}``; empty: dense), pruned by L2
    (the widths, not which channels, set the latency), without the last ``drops[name][stage]``
    blocks of a stage (which blocks does not change the latency), and, for ``int8``, quantized for
    ``runtime`` with a fixed plan (every point the target places in INT8: the plan's float points
    are the exception the precision plan measures separately)."""
    drops = drops or {}
    if precision not in ("fp32", "bf16", "int8"):
        raise VitedgeError(f"the latency model measures fp32, bf16 or int8, not {precision!r}")
    if precision == "int8" and calib is None:
        calib = [torch.randn(4, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))]
    files = {}
    for name, stage_ratios in configs.items():
        variant = model.eval()
        removed = _last_blocks(model, drops.get(name, {}))
        if stage_ratios or removed:  # a pruned model is built in training mode: BatchNorm must fold before INT8
            variant = prune(model, 0.0, stage_ratios=dict(stage_ratios), round_to=round_to,
                            stage_widths=stage_widths, drop_blocks=removed).eval()
        if precision == "int8":
            config = QuantConfig.for_target(runtime, auto_float=False, auto_reconstruct=0)
            variant = quantize(variant, calib, config=config)
        # bf16 is how OpenVINO runs an FP32 file (its inference precision), not a file of its own
        files[name] = export(variant.eval(), folder / f"{name}.onnx", "fp32" if precision == "bf16" else precision,
                             resolution=resolution)
    return files


def harness(threads: int, batch: int, resolution: int, runs: int, warmup: int, block: int = 10) -> Timer:
    """The library's paired latency harness as a :data:`Timer`: one fresh process per call, each
    file run in blocks of ``block`` that alternate across the files (``runs`` per file in all).

    Each file's latency is its block median's ratio to the first file's block median in the same
    round (median over rounds), times the first file's median: the speed of a shared machine
    changes in phases (here up to 2× within a minute), which shifts every file of a round alike and
    cancels in the ratio. Blocks, not single runs, alternate: a model run right after another
    starts from cold caches, which is not how a deployed model runs."""
    def timer(runtime: str, sources: Sequence[tuple[str, str]]) -> Mapping[str, float]:
        blocks = paired_latency(runtime, sources, resolution=resolution, threads=threads, batch=batch,
                                rounds=max(1, runs // block), block=block, warmup=warmup)
        reference = blocks[str(sources[0][0])]
        base = statistics.median(reference)
        return {path: base * statistics.median(m / r for m, r in zip(medians, reference))
                for path, medians in blocks.items()}
    return timer


def time_files(timer: Timer, runtime: str, files: Mapping[str, tuple[Path, str]],
               rounds: int) -> dict[str, float]:
    """Each named ``(file, precision)``'s latency: the median over ``rounds`` timer calls (each
    alternating every file) of its median."""
    per_file: dict[str, list[float]] = {name: [] for name in files}
    sources = [(str(path), precision) for path, precision in files.values()]
    for _ in range(rounds):
        measured = timer(runtime, sources)
        for name, (path, _) in files.items():
            per_file[name].append(measured[str(path)])
    return {name: statistics.median(values) for name, values in per_file.items()}


def measure_table(model: nn.Module, *, runtime: str, precision: str, resolution: int, name: str,
                  batch: int = 1, threads: int = 1, ratios: Sequence[float] = DEFAULT_RATIOS,
                  runs: int = 50, warmup: int = 10, rounds: int = 3, cache: Path | None = None,
                  timer: Timer | None = None, stage_widths: bool = False, depth: bool = False,
                  log: Callable[[str], None] = print) -> LatencyTable:
    """The latency table of ``model`` (called ``name``) on ``runtime`` in ``precision``, its
    variants pruned with or without the residual ``stage_widths`` and, with ``depth``, with 1 …
    all of a stage's removable blocks removed (its last ones); read from ``cache`` (a JSON file) when it
    holds a table measured for the same key on this machine."""
    ratios = tuple(sorted(float(r) for r in ratios))
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise VitedgeError(f"latency table ratios must lie in (0, 1), got {list(ratios)}")
    stages = stage_names(model)
    max_drops = {stage: n - 1 for stage, n in block_counts(model).items() if n > 1} if depth else {}
    empty = LatencyTable(name, runtime, precision, resolution, batch, threads, machine_fingerprint(), ratios,
                         0.0, {}, stage_widths=stage_widths, max_drops=max_drops)
    if cache is not None and cache.is_file():
        cached = LatencyTable.from_dict(json.loads(cache.read_text()))
        if cached.key() == empty.key():
            return cached
    configs: dict[str, dict[str, float]] = {"dense": {}}
    configs.update({f"{stage}@{r:g}": {stage: r} for stage in stages for r in ratios})
    configs.update({f"all@{r:g}": {stage: r for stage in stages} for r in ratios})
    drops = {f"{stage}-{k}": {stage: k} for stage, most in max_drops.items() for k in range(1, most + 1)}
    if drops:  # the shallowest, narrowest model too: widths and depth together
        drops["all-most"] = dict(max_drops)
        configs.update({key: {} for key in drops})
        configs["all-most"] = {stage: ratios[-1] for stage in stages}
    log(f"latency table: {len(configs)} variants of {name} on {runtime} {precision} at {resolution} px")
    with tempfile.TemporaryDirectory() as tmp:
        files = variant_files(model, configs, Path(tmp), runtime=runtime, precision=precision,
                              resolution=resolution, stage_widths=stage_widths, drops=drops)
        timed = time_files(timer or harness(threads, batch, resolution, runs, warmup), runtime,
                           {name: (path, precision) for name, path in files.items()}, rounds)
    dense = timed["dense"]
    deltas = {stage: {f"{r:g}": timed[f"{stage}@{r:g}"] - dense for r in ratios} for stage in stages}
    summed = sum(sum(deltas[stage][f"{r:g}"] for stage in stages) for r in ratios)
    measured = sum(timed[f"all@{r:g}"] - dense for r in ratios)
    coupling = measured / summed if summed < 0 and measured < 0 else 1.0
    dense_macs = profile(model, resolution=resolution)["macs"]
    macs_saved = {stage: {f"{r:g}": (dense_macs - _macs(model, {stage: r}, resolution, stage_widths)) / 1e6
                          for r in ratios} for stage in stages}
    table = dataclasses.replace(empty, dense_ms=dense, deltas=deltas, coupling=coupling,
                                uniform_ms={f"{r:g}": timed[f"all@{r:g}"] for r in ratios}, macs_saved=macs_saved)
    features = [[table.saved_mmacs(stage, configs[key].get(stage, 0.0)) for stage in stages]
                + [drops.get(key, {}).get(stage, 0) for stage in max_drops] for key in timed]
    fit_ms, rates = fit_rates(features, list(timed.values()))
    table = dataclasses.replace(table, fit_ms=fit_ms, ms_per_mmac=dict(zip(stages, rates)),
                                ms_per_block=dict(zip(max_drops, rates[len(stages):])))
    if cache is not None:
        write_json(cache, table.to_dict(), indent=1)
    return table


def check_table(model: nn.Module, table: LatencyTable, configs: Sequence[Mapping[str, float]], *,
                runs: int = 50, warmup: int = 10, rounds: int = 3,
                timer: Timer | None = None) -> dict[str, Any]:
    """Each configuration measured and predicted; ``median_abs_error`` (a share of the measured
    latency) over them. The table's reference models (the dense one and the uniformly pruned
    ones) are timed beside them, so a machine that got slower since the table was measured shows
    as ``dense_drift`` (the median of their today / table ratios) rather than as prediction error."""
    stages = table.stages
    references = {"dense": ({}, table.dense_ms), **{f"all@{r}": ({stage: float(r) for stage in stages}, ms)
                                                    for r, ms in table.uniform_ms.items()}}
    named = {**{key: config for key, (config, _) in references.items()},
             **{f"c{i}": dict(c) for i, c in enumerate(configs)}}
    with tempfile.TemporaryDirectory() as tmp:
        files = variant_files(model, named, Path(tmp), runtime=table.runtime, precision=table.precision,
                              resolution=table.resolution, stage_widths=table.stage_widths)
        clock = timer or harness(table.threads, table.batch, table.resolution, runs, warmup)
        sources = {name: (path, table.precision) for name, path in files.items()}
        timed = time_files(clock, table.runtime, sources, rounds)
    scale = statistics.median(timed[key] / ms for key, (_, ms) in references.items())  # today's machine / the table's
    rows = [{"config": named[key], "predicted_ms": table.predict(named[key]) * scale,
             "measured_ms": timed[key]} for key in named if key not in references]
    for row in rows:
        row["error"] = row["predicted_ms"] / row["measured_ms"] - 1
    return {"rows": rows, "dense_drift": scale - 1,
            "median_abs_error": statistics.median(abs(r["error"]) for r in rows) if rows else 0.0}
