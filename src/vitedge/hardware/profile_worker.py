"""Profile one ONNX file per node on one runtime, in a process of its own; print one JSON line.

    python -m vitedge.hardware.profile_worker m.onnx --runtime onnxruntime --threads 2 --resolution 224

torch's OpenMP threads keep spinning after its last op and would slow the runtime measured in
the same process (see :mod:`vitedge.bench.latency_worker`), so the breakdown runs here.
"""

from __future__ import annotations

import argparse
import json
import sys

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
    from vitedge.errors import VitedgeError

    if args.runtime == "openvino":
        from vitedge.hardware.ov_profile import profile_openvino as profile
    else:
        from vitedge.hardware.ort_profile import profile_onnx as profile
    try:
        result = profile(
            args.onnx,
            resolution=args.resolution,
            batch=args.batch,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
        )
    except VitedgeError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
