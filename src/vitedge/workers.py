"""Measuring workers: a fresh process that prints one JSON line, and the caller that reads it.

torch's OpenMP threads keep spinning after its last op and would slow a runtime measured in the
same process, so latency and profiling runs happen in a process of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from vitedge.errors import VitedgeError

__all__ = ["answer_json", "run_json_worker"]


def run_json_worker(cmd: Sequence[str], threads: int, what: str) -> dict[str, Any]:
    """Run a measuring worker (a fresh process, ``threads`` OpenMP threads) and return the JSON
    object on the last ``{`` line of its output; its ``{"error": ...}`` or a crash is a VitedgeError
    naming ``what``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise VitedgeError(f"{what} failed: {last}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise VitedgeError(result["error"])
    return result


def answer_json(work: Callable[[], Any]) -> int:
    """The worker's side: print ``work()`` as one JSON line (exit 0), or its VitedgeError as
    ``{"error": ...}`` (exit 2) for :func:`run_json_worker` to raise again."""
    try:
        result = work()
    except VitedgeError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(result))
    return 0
