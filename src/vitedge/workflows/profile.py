"""Profile models as ``vitedge profile`` shows them: params, MACs, memory and PyTorch latency of
each, and optionally where a runtime spends the time per operator kind against the roofline.

Example::

    report = profile_report(["efficientvit_b0"], breakdown=True, threads=1)
    print(report.table().markdown())
    report.save(plot="breakdown.png", json="profile.json")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.bench.profile import profile_models, profile_table
from vitedge.hardware.roofline import CpuBreakdown, cpu_breakdown, plot_breakdown
from vitedge.io import write_text
from vitedge.models import list_models
from vitedge.models.checkpoint import resolve_model
from vitedge.tables import Table

__all__ = ["ProfileReport", "furthest_from_floor", "profile_report"]

# Threads of the breakdown when none are given (``None`` leaves latency on torch's default).
BREAKDOWN_THREADS = 2


@dataclass
class ProfileReport:
    """One result per model (with its ``breakdown`` when one was asked) and the breakdowns."""

    results: list[dict[str, Any]]
    batch_size: int = 1
    breakdowns: list[CpuBreakdown] = field(default_factory=list)

    def table(self) -> Table:
        """Each model beside its published params and MACs."""
        return profile_table(self.results, self.batch_size)

    def save(self, *, plot: str | os.PathLike | None = None, markdown: str | os.PathLike | None = None,
             json_path: str | os.PathLike | None = None) -> list[Path]:
        """Write the breakdown plot (PNG) and tables (Markdown), and the results (JSON), where
        asked; returns the files written."""
        written = []
        if plot is not None:
            written.append(plot_breakdown(self.breakdowns, plot))
        if markdown is not None:
            written.append(write_text(markdown, "\n".join(bd.to_markdown() for bd in self.breakdowns)))
        if json_path is not None:
            write_text(json_path, json.dumps(self.results, indent=2))
            written.append(Path(json_path))
        return written


def furthest_from_floor(breakdown: CpuBreakdown) -> str:
    """The operator kinds furthest above their roofline floor, as one line."""
    return "furthest from the floor: " + ", ".join(r.kind for r in breakdown.furthest_from_floor())


def profile_report(names: Sequence[str] | None = None, *, resolution: int | None = None,
                   num_classes: int | None = None, latency: bool = True, threads: int | None = None,
                   batch_size: int = 1, runs: int = 10, breakdown: bool = False, breakdown_runs: int = 50,
                   runtime: str = "onnxruntime") -> ProfileReport:
    """Profile ``names`` (registered models or checkpoints; ``None``: every registered model); with
    ``breakdown``, also each one's FP32 export per node on ``runtime``."""
    names = list_models() if names is None else list(names)
    results = profile_models(names, resolution=resolution, num_classes=num_classes, latency=latency,
                             threads=threads, batch_size=batch_size, runs=runs)
    breakdowns = [cpu_breakdown(resolve_model(name, num_classes=num_classes), resolution=resolution,
                                threads=threads or BREAKDOWN_THREADS, runs=breakdown_runs, name=name,
                                runtime=runtime)
                  for name in (names if breakdown else [])]
    for stats, bd in zip(results, breakdowns):
        stats["breakdown"] = bd.to_dict()
    return ProfileReport(results, batch_size, breakdowns)
