"""Time one runtime on one file in a process of its own, print the result as one JSON line.

``vitedge bench`` runs every latency measurement through here: PyTorch's OpenMP threads keep
spinning after its last op and slow ONNX Runtime or OpenVINO measured in the same process, so
each engine gets a clean process (only the torch rows ever run a torch op in theirs).

    python -m vitedge.bench.latency_worker --runtime onnxruntime --source m.onnx --batch 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtime", required=True)
    p.add_argument("--source", required=True, help="exported file, or a checkpoint for the torch runtime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)

    from vitedge.bench.latency import measure_latency
    from vitedge.deploy.runtimes import load_runtime
    from vitedge.errors import VitedgeError

    try:
        source: object = args.source
        if args.runtime == "torch":
            import torch

            from vitedge.models.checkpoint import load

            torch.set_num_threads(args.threads)
            source = load(args.source)
        runtime = load_runtime(args.runtime, source, precision=args.precision, threads=args.threads)
        x = np.random.default_rng(0).standard_normal((args.batch, 3, args.resolution, args.resolution),
                                                     dtype=np.float32)
        result = measure_latency(lambda: runtime(x), backend=args.runtime, batch_size=args.batch,
                                 threads=args.threads, warmup=args.warmup, runs=args.runs)
    except VitedgeError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
