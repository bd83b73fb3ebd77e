"""Segmentation deployment: mIoU of float PyTorch, the INT8 simulation and ONNX Runtime, and how
many pixels ORT labels as the simulation does, on a real test split (issue 8).

Quantizes a trained segmentation checkpoint (Trio-ViT by default, conv-output points on so ORT
runs integer convolutions), exports FP32 and INT8 QDQ ONNX at the test frames' size (sides rounded
to 32, e.g. CamVid 352×480), scores the whole test split four ways and reports mIoU of each, the
share of labelled pixels (at label size) where ORT INT8 and the simulation pick the same class,
the FP32 export's largest logit difference, and which ops ORT ran as integer kernels.
``--latency`` adds ORT FP32/INT8 batch-1 latency at the frame size and at 512×1024 (static
exports; per size one fresh process, runs alternated across FP32 and INT8).

Acceptance (issue 8): agreement ≥ 99 % of pixels; W8A8 mIoU drop ≤ 1.0 pt.

Example::

    python benchmarks/seg_agreement.py runs/seg-camvid/b0-seg-camvid/model.safetensors \\
        --data camvid --data-dir ~/data/camvid --calib 64 --latency --out runs/seg_agreement
    # smoke run on random weights (the numbers mean nothing; every code path runs)
    python benchmarks/seg_agreement.py --model efficientvit_seg_b0 --data camvid \\
        --data-dir ~/data/camvid --calib 4 --eval-limit 4 --out /tmp/seg_smoke
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import onnx
import torch

import vitedge
from vitedge.bench.deployment import latency_in_subprocess
from vitedge.data.segmentation import SEG_DATASETS
from vitedge.deploy import OnnxRuntime
from vitedge.io import load_bundle, write_json, write_text
from vitedge.quantization import QuantConfig
from vitedge.train.config import DataConfig
from vitedge.train.seg_metrics import IGNORE_INDEX, SegMetricCounts, predict
from vitedge.train.task_data import TaskData

ACCEPT_AGREEMENT = 99.0  # % of labelled pixels with the same class in ORT INT8 and the simulation
ACCEPT_MIOU_DROP = 1.0   # pt, simulated W8A8 vs FP32


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", nargs="?", help="vitedge segmentation checkpoint")
    p.add_argument("--model", help="smoke run on a randomly initialised model instead")
    p.add_argument("--data", required=True, help="camvid or cityscapes")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--method", default="trio")
    p.add_argument("--w-bits", type=int, default=8,
                   help="weight bits; 7 keeps ORT exact on AVX2 CPUs without VNNI (no int16 saturation)")
    p.add_argument("--calib", type=int, default=64, help="calibration frames from the training split")
    p.add_argument("--reconstruct", type=int, default=0,
                   help="after calibration, learn the step sizes for N steps on the calibration frames")
    p.add_argument("--eval-limit", type=int, help="first N test frames only")
    p.add_argument("--latency", action="store_true", help="also time ORT FP32 / INT8 at batch 1")
    p.add_argument("--runs", type=int, default=20, help="timed runs per file (--latency)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.model is None):
        p.error("give a CHECKPOINT or --model NAME (smoke run), not both")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    model, data_config, classes = _load(args)
    data = DataConfig(dataset=args.data, root=args.data_dir, batch_size=4, eval_limit=args.eval_limit)
    task = TaskData(data, data_config, classes)
    frame = tuple(task.eval_set[0][0].shape[-2:])
    config = QuantConfig(method=args.method, conv_outputs=True, w_bits=args.w_bits,
                         reconstruct_iters=args.reconstruct)
    start = time.perf_counter()
    qmodel = vitedge.quantize(model, task.sample(args.calib, seed=args.seed, batch_size=4), config=config)
    files = {"fp32": _export(model, args.out / "fp32.onnx", "fp32", frame, task.classes),
             "int8": _export(qmodel, args.out / "int8.onnx", "int8", frame, task.classes)}
    optimized = args.out / "int8.optimized.onnx"
    engines = {"onnxruntime fp32": OnnxRuntime(files["fp32"], threads=args.threads),
               "onnxruntime int8": OnnxRuntime(files["int8"], threads=args.threads,
                                               optimized_model_path=optimized)}
    prepare_s = time.perf_counter() - start

    counts = {k: SegMetricCounts(len(task.classes)) for k in ("fp32", "simulated", *engines)}
    same = labelled = 0
    fp32_gap = 0.0
    with torch.no_grad():
        for images, masks in task.loader():
            logits = {"fp32": model(images), "simulated": qmodel(images)}
            logits.update({k: torch.from_numpy(e(images.numpy())) for k, e in engines.items()})
            for name, out in logits.items():
                counts[name].update(out, masks)
            fp32_gap = max(fp32_gap, float((logits["onnxruntime fp32"] - logits["fp32"]).abs().max()))
            valid = masks != IGNORE_INDEX
            sim, ort = predict(logits["simulated"], masks.shape[-2:]), predict(logits["onnxruntime int8"],
                                                                              masks.shape[-2:])
            same += int((sim == ort)[valid].sum())
            labelled += int(valid.sum())
    miou = {k: c.summary(task.classes)["miou"] for k, c in counts.items()}
    ops = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    result: dict[str, Any] = {
        "checkpoint": args.checkpoint or f"{args.model} (random weights)", "frames": counts["fp32"].images,
        "frame": list(frame), "config": config.to_dict(), "miou": miou,
        "per_class_iou_int8": counts["onnxruntime int8"].summary(task.classes)["per_class_iou"],
        "pixel_agreement": 100.0 * same / max(labelled, 1), "fp32_onnx_max_abs_diff": fp32_gap,
        "integer_ops": {k: v for k, v in ops.items() if k.startswith("QLinear") or "Integer" in k},
        "float_convs": ops.get("Conv", 0) + ops.get("FusedConv", 0), "prepare_s": prepare_s,
        "command": shlex.join([sys.executable, *sys.argv]),
    }
    if args.latency:
        result["latency_ms"] = _latency(model, qmodel, frame, task.classes, args)
    lines = _markdown(result)
    write_json(args.out / "results.json", result)
    write_text(args.out / "results.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any], list[str] | None]:
    if args.checkpoint:
        bundle = load_bundle(args.checkpoint)
        return bundle.model.eval(), bundle.data_config, bundle.classes
    classes = SEG_DATASETS[args.data.lower()](args.data_dir, "test").classes
    model = vitedge.create_model(args.model, num_classes=len(classes)).eval()
    return model, dict(model.data_config), classes


def _export(model: torch.nn.Module, path: Path, precision: str, size: tuple[int, int],
            classes: list[str], dynamic_batch: bool = True) -> Path:
    return vitedge.export(model, path, precision=precision, resolution=size, classes=classes,
                          dynamic_batch=dynamic_batch)


def _latency(model: torch.nn.Module, qmodel: torch.nn.Module, frame: tuple[int, int], classes: list[str],
             args: argparse.Namespace) -> dict[str, float]:
    """Median batch-1 latency (ms) of ORT FP32 and INT8 at the frame size and at 512×1024: per size
    one fresh process, runs alternated across the two files so drift on a noisy machine hits both."""
    latency = {}
    for size in (frame, (512, 1024)):
        files = {precision: _export(net, args.out / f"latency_{precision}_{size[0]}x{size[1]}.onnx", precision,
                                    size, classes, dynamic_batch=False)  # batch 1: no run-time shape arithmetic
                 for precision, net in (("fp32", model), ("int8", qmodel))}
        measured = latency_in_subprocess("onnxruntime", [(path, precision) for precision, path in files.items()],
                                         batch=1, resolution=size, threads=args.threads, runs=args.runs, warmup=1)
        latency.update({f"{precision} {size[0]}×{size[1]}": measured[str(path)]["median_ms"]
                        for precision, path in files.items()})
    return latency


def _markdown(r: dict[str, Any]) -> list[str]:
    m = r["miou"]
    drop = m["fp32"] - m["simulated"]
    ok = r["pixel_agreement"] >= ACCEPT_AGREEMENT and drop <= ACCEPT_MIOU_DROP
    lines = [
        ("| frames | size | mIoU FP32 | FP32 ONNX | INT8 simulated | INT8 ORT | pixel agreement | "
         "QLinearConv | float convs |"),
        "|---|---|---|---|---|---|---|---|---|",
        (f"| {r['frames']} | {r['frame'][0]}×{r['frame'][1]} | {m['fp32']:.2f} | "
         f"{m['onnxruntime fp32']:.2f} | {m['simulated']:.2f} | {m['onnxruntime int8']:.2f} | "
         f"{r['pixel_agreement']:.2f} % | "
         f"{r['integer_ops'].get('QLinearConv', 0)} | {r['float_convs']} |"), "",
        f"FP32 ONNX vs PyTorch: max |Δ logit| {r['fp32_onnx_max_abs_diff']:.2e}.", ""]
    if "latency_ms" in r:
        lines += ["| ORT, batch 1 | " + " | ".join(r["latency_ms"]) + " |",
                  "|---|" + "---|" * len(r["latency_ms"]),
                  "| median ms | " + " | ".join(f"{v:.1f}" for v in r["latency_ms"].values()) + " |", ""]
    lines += [(f"Acceptance (pixel agreement ≥ {ACCEPT_AGREEMENT} %, W8A8 mIoU drop ≤ {ACCEPT_MIOU_DROP} pt): "
               f"{'PASS' if ok else 'FAIL'} (drop {drop:.2f} pt)"), "", f"Command: `{r['command']}`", ""]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
