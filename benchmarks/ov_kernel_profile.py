"""OpenVINO per-kernel time of one ONNX file at batch 1, summed by (layer type, precision).

Shows which layers OpenVINO runs in int8 / bf16 / f32 and where the time goes, e.g. an INT8 QDQ
export against the FP32 file under the bf16 hint::

    python benchmarks/ov_kernel_profile.py runs/deploy_speed/efficientvit_b1/timm_fp32.onnx --hint bf16
    python benchmarks/ov_kernel_profile.py runs/deploy_speed/efficientvit_b1/vitedge_int8_plain.onnx
"""

from __future__ import annotations

import argparse
import collections

import numpy as np


def profile(path: str, hint: str = "f32", threads: int = 2, resolution: int = 224, runs: int = 20,
            ) -> dict[tuple[str, str], tuple[float, int]]:
    """(layer type, precision) → (ms per inference, layers) over ``runs`` profiled inferences."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0]: [1, 3, resolution, resolution]})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": str(threads),
                                                 "INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    for _ in range(10):
        request.infer({0: x})
    total: dict[tuple[str, str], float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for layer in request.profiling_info:
            if layer.status == layer.Status.EXECUTED:
                key = (layer.node_type, layer.exec_type.split("_")[-1] if layer.exec_type else "")
                total[key] += layer.real_time.total_seconds() * 1e3 / runs
                count[key] += 1
    return {key: (ms, count[key] // runs) for key, ms in total.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("onnx")
    p.add_argument("--hint", default="f32", help="INFERENCE_PRECISION_HINT: f32 or bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--top", type=int, default=18)
    args = p.parse_args(argv)
    rows = profile(args.onnx, args.hint, args.threads, args.resolution)
    print(f"{args.onnx} ({args.hint} hint): {sum(ms for ms, _ in rows.values()):.2f} ms of kernels")
    for (kind, precision), (ms, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{ms:6.2f} ms  {n:4d}×  {kind:22s} {precision}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
