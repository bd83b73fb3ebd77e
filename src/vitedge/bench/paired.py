"""Paired latency: several files on one runtime, timed in one process in short blocks that
alternate across the files, so each file's blocks have neighbours of the others measured under
the same machine load. On a shared machine whose load changes within seconds, the ratio of two
files' block medians, taken round by round, holds where separate processes minutes apart do not
(seen here: one file measured 2.9 and 4.5 ms in two runs a minute apart; its paired ratio to
another moved by under 2 %).

    python -m vitedge.bench.paired --runtime openvino --resolution 224 --source a.onnx --source b.onnx

prints one JSON line ``{source: [block median ms, ...]}`` (or ``{"error": message}``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from vitedge.deploy import load_runtime
from vitedge.workers import answer_json, run_json_worker

__all__ = ["paired_latency", "paired_ratio"]


def paired_latency(runtime: str, sources: Sequence[tuple[str | os.PathLike, str]], *, resolution: int,
                   threads: int = 2, rounds: int = 20, block: int = 10, warmup: int = 10,
                   batch: int = 1) -> dict[str, list[float]]:
    """Block medians (ms per call of ``batch`` images) of each ``(file, precision)`` on ``runtime``,
    measured in one fresh process with ``rounds`` rounds of ``block`` runs per file; keyed by the
    file path as given."""
    cmd = [sys.executable, "-m", "vitedge.bench.paired", "--runtime", runtime, "--resolution", str(resolution),
           "--threads", str(threads), "--rounds", str(rounds), "--block", str(block), "--warmup", str(warmup),
           "--batch", str(batch)]
    for path, precision in sources:
        cmd += ["--source", str(path), "--precision", precision]
    return run_json_worker(cmd, threads, f"the paired {runtime} latency run")


def paired_ratio(blocks: dict[str, list[float]], ours: str, reference: str) -> float:
    """Median over the rounds of ``ours``'s block median divided by ``reference``'s."""
    return float(np.median(np.asarray(blocks[ours]) / np.asarray(blocks[reference])))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtime", required=True)
    p.add_argument("--source", action="append", required=True)
    p.add_argument("--precision", action="append", help="once per --source (default fp32)")
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    precisions = args.precision or ["fp32"] * len(args.source)
    if len(precisions) != len(args.source):
        p.error("give --precision once per --source")
    return answer_json(lambda: _blocks(args, precisions))


def _blocks(args: argparse.Namespace, precisions: list[str]) -> dict[str, list[float]]:
    """Median ms of each block of ``args.block`` runs, per source, over alternating rounds."""
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.resolution, args.resolution), dtype=np.float32)
    engines = {src: load_runtime(args.runtime, src, precision=prec, threads=args.threads)
               for src, prec in zip(args.source, precisions)}
    for engine in engines.values():
        for _ in range(args.warmup):
            engine(x)
    blocks: dict[str, list[float]] = {src: [] for src in engines}
    for _ in range(args.rounds):
        for src, engine in engines.items():
            time.sleep(0.05)  # let the previous engine's pool threads stop spinning before this block
            times = []
            for _ in range(args.block):
                start = time.perf_counter()
                engine(x)
                times.append((time.perf_counter() - start) * 1000)
            blocks[src].append(float(np.median(times)))
    return blocks


if __name__ == "__main__":
    raise SystemExit(main())
