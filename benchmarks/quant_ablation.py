"""Quantization ablation: top-1 of a trained model under each step of the Trio-ViT recipe.

Rows (each a :class:`~vitedge.quantization.QuantConfig`): FP32; W8A8 per-tensor min-max;
+ per-channel weights; + channel-wise migration; + filter-wise shifting; + log2 divisor;
Trio (MSE ranges, all transforms); W4A8 Trio; and ``+ QAT``: ``--qat-epochs`` epochs of LSQ
fine-tuning, distilled from the FP32 model, starting from the best W8A8 PTQ row (needs a
checkpoint; listed as not run otherwise). Calibration uses ``--calib`` training images (seeded
random subset) with the evaluation transform — no augmentation — and never the test split.

Writes to ``--out``: ``results.json`` (every row with its config, top-1/top-5 and drop against
FP32), ``results.md`` (the table, the acceptance check and the command), ``points.md`` (every
quantization point of the best W8A8 row, with scale and range) and ``channel_ranges.png``
(per-channel input ranges before/after migration and shifting). A re-run with the same ``--out``
keeps the rows already measured there (:func:`vitedge.workflows.ablation.run_ladder`).

Examples::

    # the ablation (issue 5): B0 trained on CIFAR-10
    python benchmarks/quant_ablation.py runs/b0_cifar10/model.safetensors --data cifar10 \
        --data-dir data/cifar10 --calib 1024 --out runs/quant_b0
    # smoke run on random weights (the numbers mean nothing; every code path runs)
    python benchmarks/quant_ablation.py --model efficientvit_b0 --data fashion-mnist --img-size 64 \
        --calib 64 --eval-limit 256 --out runs/quant_smoke
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vitedge
from vitedge.data import build_dataset, eval_transform
from vitedge.io import load_bundle, write_text
from vitedge.quantization import QuantConfig, plot_channel_ranges, point_report, report_markdown
from vitedge.train import DataConfig, TrainConfig, evaluate
from vitedge.train.checkpoint import STATE_FILE
from vitedge.train.config import (
    QAT_ALPHA,
    QAT_EMA,
    QAT_LR,
    QAT_STEP_LR_MULT,
    DistillConfig,
    EMAConfig,
    OptimConfig,
)
from vitedge.workflows.ablation import Step, finished_steps, run_ladder, select, trio_ladder, write_results
from vitedge.workflows.quantize import quantize_checkpoint

ACCEPT_W8A8_DROP = 0.5  # pt top-1, best W8A8 PTQ vs FP32 (issue 5)
ACCEPT_QAT_DROP = 0.2   # pt top-1, W8A8 after QAT vs FP32
QAT_ROW = "+ QAT (distilled from FP32)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", help="vitedge checkpoint of the trained float model")
    p.add_argument("--model", help="smoke run on a randomly initialised model (no checkpoint)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the --model")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--data", required=True, help="dataset name or folder (train split calibrates, test evaluates)")
    p.add_argument("--data-dir", help="where the registered dataset lives")
    p.add_argument("--calib", type=int, default=1024, help="calibration images from the train split")
    p.add_argument("--calib-batch", type=int, default=64)
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", nargs="*", help="run only rows whose name contains one of these")
    p.add_argument("--qat-epochs", type=int, default=0, help="QAT epochs from the best W8A8 PTQ row")
    p.add_argument("--qat-lr", type=float, default=QAT_LR, help="QAT peak learning rate of the weights")
    p.add_argument("--qat-step-lr-mult", type=float, default=QAT_STEP_LR_MULT,
                   help="the learned step sizes train at --qat-lr times this")
    p.add_argument("--qat-alpha", type=float, default=QAT_ALPHA,
                   help="distillation weight in QAT (1: match the FP32 model only, no labels)")
    p.add_argument("--qat-ema", type=float, default=QAT_EMA,
                   help="QAT: freeze an EMA of the weights and step sizes with this decay instead of the "
                        "last step (0: off)")
    p.add_argument("--qat-min-scale", type=float, default=0.5,
                   help="smallest random-resized-crop area in QAT (the baseline's last stage used 0.5; "
                        "the trainer's default 0.08 is a from-scratch augmentation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.model is None):
        p.error("give a CHECKPOINT or --model NAME (smoke run), not both")
    return args


def load_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], list[str] | None]:
    """The float model, its preprocessing config and its class names."""
    if args.checkpoint:
        bundle = load_bundle(args.checkpoint)
        model, data_config, classes = bundle.model, bundle.data_config, bundle.classes
    else:
        kwargs = {"img_size": args.img_size} if args.img_size and args.model.startswith("efficientvit_m") else {}
        model = vitedge.create_model(args.model, num_classes=args.num_classes, **kwargs)
        data_config, classes = dict(model.data_config), None
    if args.img_size:
        data_config["input_size"] = (*data_config["input_size"][:-2], args.img_size, args.img_size)
    return model.eval(), data_config, classes


def loaders(args: argparse.Namespace, data_config: dict[str, Any], classes: list[str] | None,
            ) -> tuple[list[torch.Tensor], torch.utils.data.DataLoader]:
    size = int(data_config["input_size"][-1])
    transform = eval_transform(size, data_config)
    train = build_dataset(args.data, args.data_dir, "train", transform=transform, classes=classes)
    test = build_dataset(args.data, args.data_dir, "test", transform=transform, classes=classes)
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(train), generator=g)[: args.calib].tolist()
    calib_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, pick), batch_size=args.calib_batch,
                                               num_workers=args.workers)
    calib = [images for images, _ in calib_loader]
    if args.eval_limit:
        test = torch.utils.data.Subset(test, range(min(args.eval_limit, len(test))))
        test.classes = getattr(test.dataset, "classes", None)
    return calib, torch.utils.data.DataLoader(test, batch_size=args.batch_size, num_workers=args.workers)


def markdown(results: list[dict[str, Any]], command: str) -> str:
    fp32 = next((r["top1"] for r in results if r["name"] == "FP32"), None)
    lines = ["| row | top-1 | top-5 | Δ top-1 vs FP32 | quantize s |", "|---|---|---|---|---|"]
    for r in results:
        if r.get("pending"):
            lines.append(f"| {r['name']} | pending | | | |")
            continue
        drop = "" if fp32 is None or r["name"] == "FP32" else f"{r['top1'] - fp32:+.2f}"
        top5 = "–" if r["top5"] is None else f"{r['top5']:.2f}"
        lines.append(f"| {r['name']} | {r['top1']:.2f} | {top5} | {drop} | {r['seconds']:.1f} |")
    w8a8 = [r for r in results if r.get("w8a8") and not r.get("pending") and not r.get("qat")]
    qat = next((r for r in results if r.get("qat") and not r.get("pending")), None)
    checks = []
    if fp32 is not None and w8a8:
        best = max(w8a8, key=lambda r: r["top1"])
        ok = fp32 - best["top1"] <= ACCEPT_W8A8_DROP
        checks.append(f"- best W8A8 PTQ ({best['name']}) loses {fp32 - best['top1']:.2f} pt "
                      f"(target ≤ {ACCEPT_W8A8_DROP}): {'PASS' if ok else 'FAIL'}")
    if fp32 is not None and qat is not None:
        ok = fp32 - qat["top1"] <= ACCEPT_QAT_DROP
        checks.append(f"- W8A8 after {qat['qat_epochs']} QAT epoch(s) loses {fp32 - qat['top1']:.2f} pt "
                      f"(target ≤ {ACCEPT_QAT_DROP}): {'PASS' if ok else 'FAIL'}")
    return "\n".join(["# Quantization ablation", "", *lines, "", *checks, "", f"Command: `{command}`", ""])


def qat_row(args: argparse.Namespace, config: QuantConfig | None, previous: dict[str, Any] | None) -> dict[str, Any]:
    """``+ QAT``: the best W8A8 PTQ config, calibrated the same way, then LSQ fine-tuning
    distilled from the FP32 checkpoint (vitedge.workflows.quantize.quantize_checkpoint).
    ``previous``: this row from an interrupted run on the same setup, kept if it matches; a QAT
    run that stopped part-way resumes from its last epoch."""
    name = QAT_ROW
    if args.qat_epochs <= 0 or args.checkpoint is None or config is None:
        return {"name": name, "pending": True, "note": "not run: pass a checkpoint and --qat-epochs N"}
    setup = {"qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr, "qat_min_scale": args.qat_min_scale,
             "qat_step_lr_mult": args.qat_step_lr_mult, "qat_alpha": args.qat_alpha,
             "qat_ema": args.qat_ema}
    same = previous and previous.get("config") == config.to_dict()
    if same and all(previous.get(k) == v for k, v in setup.items()):
        return previous
    data = DataConfig(dataset=args.data, root=args.data_dir, img_size=args.img_size,
                      batch_size=min(args.batch_size, 128), workers=args.workers,
                      scale=(args.qat_min_scale, 1.0))
    qat = TrainConfig(epochs=args.qat_epochs, seed=args.seed, data=data,
                      optim=OptimConfig(lr=args.qat_lr, warmup_epochs=0.0,
                                        step_size_lr_mult=args.qat_step_lr_mult),
                      distill=DistillConfig(alpha=args.qat_alpha), ema=EMAConfig(decay=args.qat_ema or None),
                      resume=(args.out / "qat" / "qat" / STATE_FILE).exists())
    start = time.perf_counter()
    result = quantize_checkpoint(args.checkpoint, config, data=data, calib=args.calib, qat=qat,
                                 out=args.out / "qat", seed=args.seed)
    metrics = result.metrics
    return {"name": name, "w8a8": True, "qat": True, "top1": metrics["score_qat"], "top5": None,
            "seconds": time.perf_counter() - start, "config": config.to_dict(),
            "ptq_top1": metrics["score_int8"], **setup}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model, data_config, classes = load_model(args)
    calib, test_loader = loaders(args, data_config, classes)
    chosen = select(trio_ladder(), args.rows)
    command = shlex.join([sys.executable, *sys.argv])
    # rows already measured with the same config (an interrupted run) are kept, not recomputed
    setup = {k: str(getattr(args, k)) for k in ("checkpoint", "model", "data", "data_dir", "img_size", "calib",
                                                 "eval_limit", "seed")}
    path = args.out / "results.json"
    previous_qat = finished_steps(path, setup).get(QAT_ROW)
    best: dict[str, Any] = {}  # the best W8A8 PTQ row so far: top1, config, net (None if kept)

    def after_step(step: Step, results: list[dict[str, Any]], net: nn.Module | None) -> None:
        write_text(args.out / "results.md", markdown(results, command))
        top1 = results[-1]["top1"]
        if step.config is not None and step.tags["w8a8"] and top1 > best.get("top1", -1.0):
            best.update(top1=top1, config=step.config, net=net)

    def score(net: nn.Module) -> dict[str, Any]:
        metrics = evaluate(net, test_loader)
        return {"top1": metrics["top1"], "top5": metrics["top5"]}

    results = run_ladder(model, chosen, calib, score, path=path, setup=setup, meta={"command": command},
                         on_step=after_step)
    results.append(qat_row(args, best.get("config"), previous_qat))
    write_results(path, setup, results, {"command": command})
    write_text(args.out / "results.md", markdown(results, command))
    if best:
        net = best["net"] if best["net"] is not None else vitedge.quantize(model, calib, config=best["config"])
        write_text(args.out / "points.md", report_markdown(point_report(net)))
    trio = next((s for s in chosen if s.config is not None and s.config.transforms.migration), None)
    if trio is not None:
        qmodel = vitedge.quantize(model, calib, config=trio.config)
        plot_channel_ranges(qmodel, calib[0][:32], args.out / "channel_ranges.png")
    print(f"wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
