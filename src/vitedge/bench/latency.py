"""Latency harness shared by every backend: warm-up, N timed runs, median / p90 / min.

A backend is anything callable with no arguments that runs one inference; the harness owns the
timing and the thread setting, so numbers from different runtimes are taken the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one backend at one batch size, in milliseconds per batch."""

    backend: str
    batch_size: int
    threads: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size * 1000.0 / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput": self.throughput}


def measure_latency(
    run_once: Callable[[], Any],
    *,
    backend: str,
    batch_size: int,
    threads: int,
    warmup: int = 5,
    runs: int = 30,
) -> LatencyResult:
    """Time ``run_once`` after ``warmup`` untimed calls; the caller has set ``threads`` up."""
    if runs < 1 or warmup < 0:
        raise VitedgeError(f"runs must be ≥ 1 and warmup ≥ 0 (got runs={runs}, warmup={warmup})")
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - start) * 1000.0)
    return _result(sorted(times), backend, batch_size, threads)


def measure_alternated(
    runners: dict[str, Callable[[], Any]],
    *,
    backend: str,
    batch_size: int,
    threads: int,
    warmup: int = 5,
    runs: int = 30,
    block: int = 10,
    settle: int = 2,
) -> dict[str, LatencyResult]:
    """Like :func:`measure_latency` for several models at once, alternated across them in blocks
    of ``block`` consecutive timed runs: a load spike on a shared machine then hits every model
    alike, so their ratios hold.

    Blocks, not single runs: an engine's worker threads keep spinning for a while after its last
    run (ONNX Runtime's intra-op pool does), and two pools spinning on 2 cores slow each other
    several-fold — run by run, 8 ORT sessions measured 0.86 ms alone as 6.4 ms alternated. Each
    block starts after a short pause and ``settle`` untimed runs, so every model is timed with
    only its own threads awake, as when it is deployed alone."""
    if runs < 1 or warmup < 0 or block < 1 or settle < 0:
        raise VitedgeError(f"runs and block must be ≥ 1, warmup and settle ≥ 0 (got runs={runs}, "
                           f"block={block}, warmup={warmup}, settle={settle})")
    for run_once in runners.values():
        for _ in range(warmup):
            run_once()
    times: dict[str, list[float]] = {name: [] for name in runners}
    while any(len(t) < runs for t in times.values()):
        for name, run_once in runners.items():
            time.sleep(0.05)  # let the previous engine's pool go idle
            for _ in range(settle):
                run_once()
            for _ in range(min(block, runs - len(times[name]))):
                start = time.perf_counter()
                run_once()
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: _result(sorted(t), backend, batch_size, threads) for name, t in times.items()}


def _result(times: list[float], backend: str, batch_size: int, threads: int) -> LatencyResult:
    return LatencyResult(
        backend=backend, batch_size=batch_size, threads=threads, runs=len(times),
        median_ms=statistics.median(times), p90_ms=_percentile(times, 0.9),
        min_ms=times[0], mean_ms=statistics.fmean(times),
    )


def torch_latency(
    model: nn.Module,
    *,
    resolution: int | None = None,
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
) -> LatencyResult:
    """Latency of ``model`` in PyTorch eager mode on the CPU (inference mode, eval)."""
    channels, height, width = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    if resolution is not None:
        height = width = resolution
    x = torch.randn(batch_size, channels, height, width)
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            return measure_latency(lambda: model(x), backend="torch", batch_size=batch_size,
                                   threads=threads, warmup=warmup, runs=runs)
    finally:
        torch.set_num_threads(previous)


def _percentile(sorted_times: list[float], q: float) -> float:
    # Linear interpolation between closest ranks, as numpy's default does.
    pos = (len(sorted_times) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_times) - 1)
    return sorted_times[lo] + (sorted_times[hi] - sorted_times[lo]) * (pos - lo)
