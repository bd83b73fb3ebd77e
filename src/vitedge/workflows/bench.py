"""Benchmark a checkpoint on every runtime × precision, as ``vitedge bench`` runs it: the dataset
named by the user's options, and NNCF's INT8 presets as the anchor rows unless left out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vitedge.bench.deployment import bench_deployment
from vitedge.train.config import DataConfig

__all__ = ["NNCF_PRESETS", "bench_checkpoint"]

# nncf.quantize presets of the anchor rows.
NNCF_PRESETS = ("performance", "transformer")


def bench_checkpoint(checkpoint: str | os.PathLike, *, out: str | os.PathLike,
                     quantized: str | os.PathLike | None = None, data: str | None = None,
                     root: str | os.PathLike | None = None, eval_limit: int | None = None, calib: int = 512,
                     runtimes: Sequence[str] | None = None, batch_sizes: Sequence[int] = (1, 8),
                     threads: int = 2, runs: int = 30, nncf: bool = True,
                     latency_plan: bool = True) -> list[dict[str, Any]]:
    """:func:`~vitedge.bench.deployment.bench_deployment` of ``checkpoint`` on the dataset ``data``
    (in ``root``; none: no accuracy), with NNCF's INT8 as anchor rows when ``nncf``."""
    data_cfg = DataConfig(dataset=data, root=str(root) if root else None) if data else None
    return bench_deployment(checkpoint, out=out, quantized=quantized, data=data_cfg, eval_limit=eval_limit,
                            calib=calib, runtimes=runtimes, batch_sizes=batch_sizes, threads=threads, runs=runs,
                            nncf_presets=NNCF_PRESETS if nncf else (), latency_plan=latency_plan)
