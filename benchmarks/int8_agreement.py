"""INT8 deployment agreement: what ONNX Runtime runs vs what vitedge simulates, on a real test set.

Quantizes a trained float checkpoint (``--method``, ``--calib`` training images, conv-output
points on by default so ORT runs integer convolutions), exports the INT8 QDQ ONNX, then
classifies the whole test split three ways — float PyTorch, the fake-quant simulation, ONNX
Runtime on the exported file — and reports top-1 of each, the share of images whose top-1
prediction is the same in simulation and ORT, and which ORT ops ran as integer kernels.

``--openvino`` also runs the INT8 file on OpenVINO (its agreement with the simulation is
reported the same way), ``--fp16`` the FP16 export on ONNX Runtime (agreement with FP32 PyTorch).

Writes ``results.json`` and ``results.md`` to ``--out``. Acceptance (issue 6): agreement
≥ 99.5 % and |top-1 ORT − top-1 simulation| ≤ 0.2 pt.

Example::

    python benchmarks/int8_agreement.py runs/baselines/b0-cifar10/model.safetensors \\
        --data cifar10 --data-dir data/cifar10 --out runs/int8_agreement_b0
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import vitedge
from vitedge.deploy import OnnxRuntime
from vitedge.quantization import QuantConfig

ACCEPT_AGREEMENT = 99.5  # % of test images with the same top-1 class
ACCEPT_TOP1_GAP = 0.2    # pt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--method", default="trio")
    p.add_argument("--calib", type=int, default=1024)
    p.add_argument("--no-conv-outputs", action="store_true", help="leave conv outputs unquantized")
    p.add_argument("--eval-limit", type=int, help="first N test images only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--openvino", action="store_true", help="also run the INT8 file on OpenVINO")
    p.add_argument("--fp16", action="store_true", help="also run the FP16 export on ONNX Runtime")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vitedge.io import read_metadata
    from vitedge.train.config import DataConfig
    from vitedge.train.task_data import TaskData

    model = vitedge.load(args.checkpoint).eval()
    extra = read_metadata(args.checkpoint)["extra"]
    task = TaskData(DataConfig(dataset=args.data, root=args.data_dir),
                    {**model.data_config, **extra.get("data_config", {})}, extra.get("classes"))
    config = QuantConfig(method=args.method, conv_outputs=not args.no_conv_outputs)
    start = time.perf_counter()
    qmodel = vitedge.quantize(model, task.sample(args.calib, seed=args.seed), config=config)
    args.out.mkdir(parents=True, exist_ok=True)
    path = vitedge.export(qmodel, args.out / "int8.onnx", precision="int8", classes=task.classes)
    optimized = args.out / "int8.optimized.onnx"
    runtime = OnnxRuntime(path, threads=args.threads, optimized_model_path=optimized)
    quantize_s = time.perf_counter() - start
    extra_engines = {}  # name -> (engine, the PyTorch predictions it should agree with)
    if args.openvino:
        from vitedge.deploy import OpenVinoRuntime

        extra_engines["openvino int8"] = (OpenVinoRuntime(path, threads=args.threads, precision="int8"), "simulated")
    if args.fp16:
        fp16 = vitedge.export(model, args.out / "fp16.onnx", precision="fp16", classes=task.classes)
        extra_engines["onnxruntime fp16"] = (OnnxRuntime(fp16, threads=args.threads), "fp32")

    dataset = task.eval_set
    if args.eval_limit:
        dataset = torch.utils.data.Subset(dataset, range(min(args.eval_limit, len(dataset))))
    preds = {"fp32": [], "simulated": [], "onnxruntime": [], **{k: [] for k in extra_engines}}
    labels = []
    with torch.no_grad():
        for images, targets in torch.utils.data.DataLoader(dataset, batch_size=128):
            preds["fp32"].append(model(images).argmax(1).numpy())
            preds["simulated"].append(qmodel(images).argmax(1).numpy())
            preds["onnxruntime"].append(runtime(images.numpy()).argmax(1))
            for name, (engine, _) in extra_engines.items():
                preds[name].append(engine(images.numpy()).argmax(1))
            labels.append(targets.numpy())
    y = np.concatenate(labels)
    p_ = {k: np.concatenate(v) for k, v in preds.items()}
    top1 = {k: float(100 * (v == y).mean()) for k, v in p_.items()}
    agreement = float(100 * (p_["simulated"] == p_["onnxruntime"]).mean())
    import onnx

    ops = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    integer = {k: v for k, v in ops.items() if k.startswith("QLinear") or "Integer" in k}
    result = {
        "checkpoint": args.checkpoint, "images": int(len(y)), "config": config.to_dict(), "top1": top1,
        "agreement": agreement, "top1_gap": abs(top1["onnxruntime"] - top1["simulated"]),
        "integer_ops": integer, "float_convs": ops.get("Conv", 0) + ops.get("FusedConv", 0),
        "onnx_mib": path.stat().st_size / 2**20, "quantize_export_s": quantize_s,
        "other_engines": {name: {"top1": top1[name], "reference": ref,
                                 "agreement": float(100 * (p_[name] == p_[ref]).mean())}
                          for name, (_, ref) in extra_engines.items()},
        "command": shlex.join([sys.executable, *sys.argv]),
    }
    ok = agreement >= ACCEPT_AGREEMENT and result["top1_gap"] <= ACCEPT_TOP1_GAP
    lines = [
        "| images | top-1 FP32 | top-1 INT8 simulated | top-1 INT8 ORT | agreement | QLinearConv | float convs |",
        "|---|---|---|---|---|---|---|",
        f"| {len(y)} | {top1['fp32']:.2f} | {top1['simulated']:.2f} | {top1['onnxruntime']:.2f} | "
        f"{agreement:.2f} % | {integer.get('QLinearConv', 0)} | {result['float_convs']} |",
        "",
        *(["| engine | top-1 | agrees with | agreement |", "|---|---|---|---|"] + [
            f"| {name} | {r['top1']:.2f} | {r['reference']} | {r['agreement']:.2f} % |"
            for name, r in result["other_engines"].items()] if extra_engines else []),
        "",
        f"Acceptance (agreement ≥ {ACCEPT_AGREEMENT} %, |Δ top-1| ≤ {ACCEPT_TOP1_GAP} pt): "
        f"{'PASS' if ok else 'FAIL'}", "", f"Command: `{result['command']}`", ""]
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
