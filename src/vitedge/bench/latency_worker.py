"""Time one runtime on one file in a process of its own, print the result as one JSON line.

``vitedge bench`` runs every latency measurement through here: PyTorch's OpenMP threads keep
spinning after its last op and slow ONNX Runtime or OpenVINO measured in the same process, so
each engine gets a clean process (only the torch rows ever run a torch op in theirs).

    python -m vitedge.bench.latency_worker --runtime onnxruntime --source m.onnx --batch 1 --threads 2

Several ``--source`` files are timed with their runs alternated, so models compared against
each other see the same machine load; several ``--batch`` sizes one after another in the same
process (a process start with its imports costs seconds on a small CPU, more than the
measurement). Prints one JSON line ``{"batches": {"1": {source: result, ...}, ...}}``, or
``{"error": message}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from vitedge.bench.latency import measure_alternated
from vitedge.deploy.runtimes import load_runtime
from vitedge.models.checkpoint import load
from vitedge.workers import answer_json


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtime", required=True)
    p.add_argument("--source", required=True, action="append",
                   help="exported file, or a checkpoint for the torch runtime (repeatable)")
    p.add_argument("--precision", action="append",
                   help="precision of the sources: once for all, or once per --source (default fp32)")
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 1)")
    p.add_argument("--resolution", type=_size, required=True, help="SIZE or HEIGHTxWIDTH")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    precisions = args.precision or ["fp32"]
    if len(precisions) == 1:
        precisions = precisions * len(args.source)
    if len(precisions) != len(args.source):
        p.error("give --precision once, or once per --source")
    batches = args.batch or [1]

    def measure() -> dict[str, Any]:
        by_batch = {b: _measure(args, b, precisions) for b in batches}
        return {"batches": {str(b): {path: r.to_dict() for path, r in results.items()}
                            for b, results in by_batch.items()}}

    return answer_json(measure)


def _measure(args: argparse.Namespace, batch: int, precisions: list[str]) -> dict:
    """Each source's latency at ``batch``, runs alternated; runtimes loaded afresh for the size."""

    x = np.random.default_rng(0).standard_normal((batch, 3, *args.resolution), dtype=np.float32)
    runners = {}
    for path, precision in zip(args.source, precisions):
        runtime = load_runtime(args.runtime, _source(args.runtime, path, args.threads),
                               precision=precision, threads=args.threads)
        runners[path] = lambda runtime=runtime: runtime(x)
    return measure_alternated(runners, backend=args.runtime, batch_size=batch, threads=args.threads,
                              warmup=args.warmup, runs=args.runs)


def _source(runtime: str, path: str, threads: int) -> object:
    """What ``load_runtime`` takes: the file, or for torch the model it holds."""
    if runtime != "torch":
        return path
    import torch


    torch.set_num_threads(threads)
    return load(path)


if __name__ == "__main__":
    sys.exit(main())
