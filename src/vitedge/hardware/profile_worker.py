"""Profile one ONNX file per node on one runtime, in a process of its own; print one JSON line.

    python -m vitedge.hardware.profile_worker m.onnx --runtime onnxruntime --threads 2 --resolution 224

torch's OpenMP threads keep spinning after its last op and would slow the runtime measured in
the same process (see :mod:`vitedge.bench.latency_worker`), so the breakdown runs here.
"""

from __future__ import annotations

import argparse
import sys

from vitedge.hardware.ort_profile import profile_onnx
from vitedge.hardware.ov_profile import profile_openvino
from vitedge.workers import answer_json

PROFILERS = ("onnxruntime", "openvino")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("onnx")
    p.add_argument("--runtime", choices=PROFILERS, default="onnxruntime")
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args(argv)

    profile = profile_openvino if args.runtime == "openvino" else profile_onnx
    return answer_json(lambda: profile(args.onnx, resolution=args.resolution, batch=args.batch,
                                       threads=args.threads, runs=args.runs, warmup=args.warmup))


if __name__ == "__main__":
    sys.exit(main())
