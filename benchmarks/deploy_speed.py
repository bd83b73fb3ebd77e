"""Deployment speed, side by side in one run: what a user gets from the usual stack vs vitedge.

For each model (default B0, B1, M0 at 224², ImageNet heads, random weights — latency does not
depend on the values), batch 1 (``--resolution`` and ``--batch`` change both; at a batch above 1
every file has a dynamic batch axis), ``--threads`` threads:

- timm eager FP32 (what a user starts from);
- ONNX Runtime FP32 of timm's own export;
- ONNX Runtime INT8 from ORT's ``quantize_static`` (QDQ, per-channel weights) of that export;
- OpenVINO FP32 and bf16 of the same FP32 file;
- vitedge's own FP32 file (attention in a channel-major layout, no transposes) on ORT and on
  OpenVINO FP32 and bf16: the float baseline a vitedge user deploys;
- vitedge INT8 (Trio-ViT PTQ) quantized for each runtime: the ``onnxruntime`` target (points
  after activated convs: ORT's QLinearConv pattern) on ONNX Runtime and on OpenVINO, and the
  ``openvino`` target (points only on conv and matmul inputs, attention operands signed on
  MatMul input 1) on OpenVINO; OpenVINO runs an INT8 file's float glue in bf16 where the CPU
  has it natively (as it does NNCF's);
- NNCF's INT8 (``nncf.quantize``, performance and transformer presets) of the same FP32 file on
  the same images, on OpenVINO — the anchor.

Every latency is measured in a process of its own (torch's OpenMP threads slow ORT in the
same process), with runs alternating across engines so all see the same machine load. Then
every OpenVINO engine is timed again in one process, in short blocks alternating across engines
(``--paired-rounds``): the acceptance ratios (vitedge / NNCF, vitedge / OpenVINO bf16) are
medians of those paired block ratios, which hold on a shared machine whose load changes within
seconds. Calibration for both INT8 paths uses the same random images (speed only; accuracy is
``benchmarks/int8_agreement.py``'s job).

Writes ``results.json`` and ``results.md`` (the table, the acceptance ratios and the command).

Example::

    python benchmarks/deploy_speed.py --out runs/deploy_speed --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODELS = ("efficientvit_b0", "efficientvit_b1", "efficientvit_m0")
WORKER = """
import json, sys, time, numpy as np
kind, path, precision, threads, runs, warmup, res, batch = sys.argv[1:9]
threads, runs, warmup, res, batch = int(threads), int(runs), int(warmup), int(res), int(batch)
x = np.random.default_rng(0).standard_normal((batch, 3, res, res), dtype=np.float32)
if kind == "timm":
    import torch, timm
    torch.set_num_threads(threads)
    model = timm.create_model(path, pretrained=False).eval()
    xt = torch.from_numpy(x)
    def run():
        with torch.inference_mode():
            model(xt)
else:
    from vitedge.deploy.runtimes import load_runtime
    engine = load_runtime(kind, path, precision=precision, threads=threads)
    def run():
        engine(x)
for _ in range(warmup):
    run()
times = []
for _ in range(runs):
    t = time.perf_counter(); run(); times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
                  "min_ms": float(np.min(times))}))
"""


def prepare(name: str, out: Path, calib: list[np.ndarray], batch: int = 1) -> dict[str, tuple[str, str, str]]:
    """Files for one model at the calibration images' resolution: timm's FP32 export, ORT's
    quantize_static of it, vitedge INT8 (batch fixed at 1, or dynamic for ``batch`` > 1)."""
    import timm
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import vitedge
    from vitedge.bench.float_glue import check_float_glue
    from vitedge.bench.nncf_anchor import NNCF_PRESETS, nncf_available, nncf_quantize, nncf_version
    from vitedge.quantization import QuantConfig

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    fp32 = folder / "timm_fp32.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(reference, (torch.from_numpy(calib[0][:1]),), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if batch > 1 else None)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": b[i:i + 1]} for b in calib for i in range(len(b))])

        def get_next(self):
            return next(self.batches, None)

    ort_int8 = folder / "ort_quantize_static_int8.onnx"
    quantize_static(str(fp32), str(ort_int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    ours = vitedge.create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    # vitedge's own FP32 file (channel-major attention): the float baseline a vitedge user deploys
    res, dynamic = calib[0].shape[-1], batch > 1
    ours_fp32 = vitedge.export(ours, folder / "vitedge_fp32.onnx", precision="fp32", dynamic_batch=dynamic,
                               resolution=res)
    # speed only: every point in INT8 (the precision plan's choices are measured on real data);
    # each file is quantized for the runtime that runs it, with the batch fixed at 1 as timm's export
    images = [torch.from_numpy(b) for b in calib]
    ours_files = {}
    for target in ("onnxruntime", "openvino"):
        qmodel = vitedge.quantize(ours, images, target=target, config=QuantConfig(method="trio", auto_float=False))
        check_float_glue(qmodel, images)  # bf16 glue on OpenVINO only if it changes no prediction, as by default
        ours_files[target] = vitedge.export(qmodel, folder / f"vitedge_int8_{target}.onnx", precision="int8",
                                            dynamic_batch=dynamic, resolution=res)
    # the latency plan: attention / depthwise points kept in float where that is faster here
    from vitedge.bench.latency_plan import latency_plan

    ratios = latency_plan(qmodel, resolution=res)
    glue = check_float_glue(qmodel, images)
    print(name, "latency plan:", ratios, qmodel.precision_plan.summary(), "float glue:", glue, flush=True)
    ours_files["openvino+plan"] = vitedge.export(qmodel, folder / "vitedge_int8_openvino_plan.onnx",
                                                 precision="int8", dynamic_batch=dynamic, resolution=res)
    anchors = {}
    if nncf_available()[0]:  # NNCF's INT8 of the same FP32 file and images, on OpenVINO
        for preset in NNCF_PRESETS:
            label = f"NNCF {nncf_version()} {preset} INT8 on OpenVINO"
            try:
                path = nncf_quantize(fp32, calib, folder / f"nncf_{preset}.xml", preset)
            except Exception as err:  # NNCF's own failure is a result of the comparison, not the end of it
                anchors[label] = ("error", f"nncf.quantize failed: {type(err).__name__}: {err}"[:200], "")
                continue
            anchors[label] = ("openvino", str(path), "int8")
    return {
        **anchors,
        "timm eager FP32": ("timm", name, "fp32"),
        "ORT FP32 (timm export)": ("onnxruntime", str(fp32), "fp32"),
        "ORT quantize_static INT8": ("onnxruntime", str(ort_int8), "int8"),
        "OpenVINO FP32": ("openvino", str(fp32), "fp32"),
        "OpenVINO bf16": ("openvino", str(fp32), "bf16"),
        "vitedge FP32 on ORT": ("onnxruntime", str(ours_fp32), "fp32"),
        "vitedge FP32 on OpenVINO": ("openvino", str(ours_fp32), "fp32"),
        "vitedge FP32 on OpenVINO bf16": ("openvino", str(ours_fp32), "bf16"),
        "vitedge INT8 (onnxruntime target) on ORT": ("onnxruntime", str(ours_files["onnxruntime"]), "int8"),
        "vitedge INT8 (onnxruntime target) on OpenVINO": ("openvino", str(ours_files["onnxruntime"]), "int8"),
        "vitedge INT8 (openvino target) on OpenVINO": ("openvino", str(ours_files["openvino"]), "int8"),
        "vitedge INT8 (openvino target, latency plan) on OpenVINO": ("openvino", str(ours_files["openvino+plan"]),
                                                                      "int8"),
    }


def paired_openvino(engines: dict[str, tuple[str, str, str]], threads: int, rounds: int, warmup: int,
                    res: int, batch: int = 1) -> dict[str, list[float]]:
    """Every OpenVINO engine in one process, timed in short blocks alternating across engines
    (:func:`vitedge.bench.paired.paired_latency`); each engine's block medians (ms) by label."""
    from vitedge.bench.paired import paired_latency
    from vitedge.deploy.runtimes import native_bf16

    chosen = {label: (path, precision) for label, (kind, path, precision) in engines.items()
              if kind == "openvino" and (precision != "bf16" or native_bf16())}
    # the same file may run at two precisions (FP32 and bf16): time each label from its own copy
    sources = []
    for label, (path, precision) in chosen.items():
        alias = Path(path).with_name(f"{Path(path).stem}.{precision}{Path(path).suffix}")
        if alias != Path(path) and not alias.exists():
            alias.symlink_to(Path(path).resolve())
            if Path(path).suffix == ".xml":
                alias.with_suffix(".bin").symlink_to(Path(path).with_suffix(".bin").resolve())
        sources.append((label, str(alias), precision))
    blocks = paired_latency("openvino", [(alias, precision) for _, alias, precision in sources], resolution=res,
                            threads=threads, rounds=rounds, block=15, warmup=warmup, batch=batch)
    return {label: blocks[alias] for label, alias, _ in sources}


def measure(engines: dict[str, tuple[str, str, str]], threads: int, runs: int, warmup: int, rounds: int,
            res: int, batch: int = 1) -> dict[str, dict[str, Any]]:
    """Median over ``rounds`` alternating rounds of each engine's median latency."""
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in engines}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for _ in range(rounds):
        for label, (kind, path, precision) in engines.items():
            if kind == "error":
                samples[label].append({"error": path})
                continue
            proc = subprocess.run([sys.executable, "-c", WORKER, kind, path, precision, str(threads), str(runs),
                                   str(warmup), str(res), str(batch)], capture_output=True, text=True, env=env)
            line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), None)
            if line is None:
                samples[label].append({"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]})
            else:
                samples[label].append(json.loads(line))
    results = {}
    for label, got in samples.items():
        good = [g for g in got if "median_ms" in g]
        results[label] = ({"median_ms": float(np.median([g["median_ms"] for g in good])),
                           "p90_ms": float(np.median([g["p90_ms"] for g in good]))} if good
                          else {"error": got[-1]["error"]})
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per engine (median taken)")
    p.add_argument("--calib", type=int, default=32, help="random calibration images for both INT8 paths")
    p.add_argument("--paired-rounds", type=int, default=40,
                   help="rounds of the paired OpenVINO comparison (all OpenVINO engines in one process)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=1, help="images per call (above 1: files with a dynamic batch)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    res = args.resolution
    calib = [rng.standard_normal((8, 3, res, res), dtype=np.float32) for _ in range(max(1, args.calib // 8))]
    table: dict[str, dict[str, Any]] = {}
    for name in args.models:
        engines = prepare(name, args.out, calib, args.batch)
        table[name] = measure(engines, args.threads, args.runs, args.warmup, args.rounds, res, args.batch)
        if args.paired_rounds:
            blocks = paired_openvino(engines, args.threads, args.paired_rounds, args.warmup, res, args.batch)
            for label, got in blocks.items():
                table[name][label]["paired_blocks_ms"] = got
        print(name, json.dumps(table[name]), flush=True)
    command = shlex.join([sys.executable, *sys.argv])
    (args.out / "results.json").write_text(json.dumps({"command": command, "threads": args.threads,
                                                        "resolution": res, "batch": args.batch,
                                                        "results": table}, indent=2))
    (args.out / "results.md").write_text(markdown(table, command, args.threads, res, args.batch))
    print(markdown(table, command, args.threads, res, args.batch))
    return 0


def markdown(table: dict[str, dict[str, Any]], command: str, threads: int, res: int = 224, batch: int = 1) -> str:
    labels = list(next(iter(table.values())))
    lines = ["| engine | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
    for label in labels:
        cells = []
        for name in table:
            r = table[name][label]
            cells.append(f"{r['median_ms']:.2f}" if "median_ms" in r else f"✗ {r['error']}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    checks = []
    for name, rows in table.items():
        ours = min((rows[k]["median_ms"] for k in rows if k.startswith("vitedge INT8") and "median_ms" in rows[k]),
                   default=None)
        if ours is None:
            continue
        ratios = {ref: rows[ref]["median_ms"] / ours for ref in ("ORT FP32 (timm export)", "ORT quantize_static INT8",
                                                               "OpenVINO bf16") if "median_ms" in rows[ref]}
        checks.append(f"- {name}: vitedge INT8 (best runtime) is " +
                      ", ".join(f"{v:.2f}× faster than {k}" for k, v in ratios.items()))
        paired = {k: rows[k]["paired_blocks_ms"] for k in rows if "paired_blocks_ms" in rows[k]}
        planned = "vitedge INT8 (openvino target, latency plan) on OpenVINO"
        ov_ours = planned if planned in paired else "vitedge INT8 (openvino target) on OpenVINO"
        nncf = [k for k in paired if k.startswith("NNCF")]
        from vitedge.bench.paired import paired_ratio

        if ov_ours in paired and nncf:
            best = min(nncf, key=lambda k: float(np.median(paired[k])))
            line = (f"  - on OpenVINO, paired in one process ({len(paired[ov_ours])} alternating rounds): {ov_ours} "
                    f"/ best NNCF ({best}) = {paired_ratio(paired, ov_ours, best):.2f} "
                    "(target ≤ 0.90), ")
            bf16 = "OpenVINO bf16"
            line += (f"/ OpenVINO bf16 = {paired_ratio(paired, ov_ours, bf16):.2f} (target ≤ 0.75), "
                     if bf16 in paired else "no OpenVINO bf16 on this CPU, ")
            own_bf16 = "vitedge FP32 on OpenVINO bf16"
            if own_bf16 in paired:
                line += f"/ {own_bf16} = {paired_ratio(paired, ov_ours, own_bf16):.2f}, "
            line += f"/ OpenVINO FP32 = {paired_ratio(paired, ov_ours, 'OpenVINO FP32'):.2f}"
            checks.append(line)
    return "\n".join([f"Batch {batch}, {res}², {threads} threads, median ms per call (median of alternating "
                      "rounds, each engine in its own process).", "", *lines, "", *checks, "",
                      f"Command: `{command}`", ""])


if __name__ == "__main__":
    raise SystemExit(main())
