"""Pruning study: accuracy, size and real-runtime latency of a model pruned at several ratios.

For each ratio (criterion ``--criterion``) and each extra criterion at ``--compare-ratio``: prune
the checkpoint, evaluate top-1 right after pruning, fine-tune ``--finetune-epochs`` (distilled
from the unpruned model with ``--distill``), evaluate again; then params, MACs, PyTorch eager
latency and ONNX Runtime FP32 latency, each runtime timed in one fresh process with the runs
alternated across every model (:func:`vitedge.bench.deployment.latency_in_subprocess`), so all
models see the same machine load. Ratio 0 goes through the same fine-tuning: it is the
equal-budget reference the accuracy drops are measured against.

Writes ``results.json`` and ``results.md`` (tables, acceptance checks, the command) to ``--out``,
plus each pruned model (``<criterion>_p<ratio>/model.safetensors``). Each pruned model is a
cached stage (:class:`vitedge.workflows.stages.Stage`, as in the study pipeline): a re-run with the
same ``--out`` and settings reuses every finished model, a killed fine-tuning resumes from its
last epoch, and a model whose settings changed is redone.

Examples::

    # the study (issue 4): B0 trained on CIFAR-10
    python benchmarks/prune_study.py runs/b0_cifar10/model.safetensors --data cifar10 \
        --data-dir data/cifar10 --finetune-epochs 10 --distill --out runs/prune_study_b0
    # cost only (random weights, no data): params, MACs and latency per ratio
    python benchmarks/prune_study.py --model efficientvit_b0 --out runs/prune_cost_b0
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vitedge
from vitedge.bench.deployment import latency_in_subprocess
from vitedge.io import write_json, write_text
from vitedge.pruning import PruneConfig
from vitedge.train import DataConfig, DistillConfig, EMAConfig, OptimConfig, TrainConfig
from vitedge.train.checkpoint import STATE_FILE
from vitedge.workflows.prune import DENSE_TEACHER, PRUNED_FILE, prune_checkpoint
from vitedge.workflows.stages import Stage, file_digest

# Issue 4 sets these limits for EfficientViT-B0 only; other models get the table without checks.
ACCEPT = {"macs_40": 0.6, "ort_40": 0.75, "drop_20": 1.0, "drop_40": 2.5}
ACCEPT_MODEL = "efficientvit_b0"


@dataclass(frozen=True)
class Run:
    """One pruned model of the study."""

    criterion: str
    ratio: float

    @property
    def name(self) -> str:
        return f"{self.criterion}_p{round(self.ratio * 100)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", help="vitedge checkpoint of the trained dense model")
    p.add_argument("--model", help="cost-only study of a randomly initialised model (no checkpoint)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the --model (cost only)")
    p.add_argument("--data", help="dataset name or folder (omit for a cost-only study)")
    p.add_argument("--data-dir", help="where the registered dataset lives")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6])
    p.add_argument("--criterion", default="l2")
    p.add_argument("--compare", nargs="*", default=["taylor", "random"],
                   help="criteria compared with --criterion at --compare-ratio")
    p.add_argument("--compare-ratio", type=float, default=0.4)
    p.add_argument("--scope", default="layer", choices=["layer", "global"])
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--no-compare-finetune", dest="compare_finetune", action="store_false",
                   help="evaluate the --compare criteria right after pruning only (saves their fine-tuning)")
    p.add_argument("--min-scale", type=float, default=0.5,
                   help="fine-tuning random-resized-crop minimum area (short budgets want mild crops)")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak learning rate")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="weight EMA during fine-tuning (e.g. 0.999); the averaged weights are "
                        "evaluated and saved")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (median reported)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.model is None):
        p.error("give a CHECKPOINT or --model NAME (cost only), not both")
    if args.data is None and args.finetune_epochs:
        p.error("--finetune-epochs needs --data")
    return args


def train_config(args: argparse.Namespace, out: Path) -> TrainConfig:
    return TrainConfig(
        epochs=max(1, args.finetune_epochs), seed=args.seed, out=str(out),
        data=DataConfig(dataset=args.data, root=args.data_dir, batch_size=args.batch_size,
                        workers=args.workers, scale=(args.min_scale, 1.0)),
        optim=OptimConfig(lr=args.lr, warmup_epochs=min(1.0, args.finetune_epochs / 10)),
        distill=DistillConfig(teacher=DENSE_TEACHER if args.distill else None),
        ema=EMAConfig(decay=args.ema_decay))


def prune_stage(args: argparse.Namespace, checkpoint: Path, run: Run) -> tuple[dict[str, Any], nn.Module]:
    """One pruned model of the study and its row, from the stage cache when it finished before."""
    folder = args.out / run.name
    config = PruneConfig(ratio=run.ratio, criterion=run.criterion, scope=args.scope, round_to=args.round_to,
                         seed=args.seed)
    finetune = args.finetune_epochs > 0 and (run.criterion == args.criterion or args.compare_finetune)
    data = {k: getattr(args, k) for k in ("data", "data_dir", "batch_size")} if args.data else None
    training = {k: getattr(args, k) for k in ("finetune_epochs", "min_scale", "distill", "lr", "ema_decay")}
    stage = Stage(folder, {"checkpoint": file_digest(checkpoint), "pruning": asdict(config), "data": data,
                           "finetune": training if finetune else None})
    row = stage.cached()
    if row is not None:
        print(f"{run.name}: reusing {folder / PRUNED_FILE}", flush=True)
        return row, vitedge.load(folder / PRUNED_FILE)
    (folder / PRUNED_FILE).unlink(missing_ok=True)  # saved just before an interruption
    train = None
    if args.data:  # a fine-tuning killed mid-way resumes from its last epoch
        train = train_config(args, folder / "finetune")
        train = train.replace(resume=(folder / "finetune" / STATE_FILE).is_file())
    result = prune_checkpoint(checkpoint, config, train=train, finetune=finetune, out=folder)
    print(f"{run.name}: {json.dumps({k: v for k, v in result.metrics.items() if k != 'config'})}", flush=True)
    return stage.done({"criterion": run.criterion, "ratio": run.ratio, **result.metrics}), result.model


def latency_ms(runtime: str, files: dict[str, Path], args: argparse.Namespace, size: tuple[int, ...],
               ) -> dict[str, float]:
    """Median batch-1 latency of each file on ``runtime``: one fresh process, runs alternated
    across the files so a load spike on the (shared) machine hits every model instead of one."""
    measured = latency_in_subprocess(runtime, [(path, "fp32") for path in files.values()], batch=1,
                                     resolution=size[-1], threads=args.threads, runs=args.runs,
                                     warmup=args.warmup)
    return {name: measured[str(path)]["median_ms"] for name, path in files.items()}


def ort_latency_ms(models: dict[str, nn.Module], args: argparse.Namespace, size: tuple[int, ...], *,
                   workdir: Path, dynamic_batch: bool) -> dict[str, float]:
    """ONNX Runtime FP32 on the CPU, each model exported by ``vitedge.export`` (what deploys: BN
    folded; batch dynamic, or fixed at 1 as an edge deployment would)."""
    files = {name: vitedge.export(model, workdir / f"{name}.onnx", "fp32", resolution=size[-1],
                                  dynamic_batch=dynamic_batch) for name, model in models.items()}
    return latency_ms("onnxruntime", files, args, size)


def study(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint
    if checkpoint is None:  # cost only: a random model stands in for the trained one
        model = vitedge.create_model(args.model, num_classes=args.num_classes)
        checkpoint = vitedge.save(model, args.out / "dense_random.safetensors")
    compare = [c for c in args.compare if c != args.criterion and (args.data or c != "taylor")]
    runs = [Run(args.criterion, r) for r in args.ratios]
    runs += [Run(c, args.compare_ratio) for c in compare]  # taylor needs data: skipped cost-only

    rows: dict[str, dict[str, Any]] = {}
    models: dict[str, nn.Module] = {"dense": vitedge.load(checkpoint)}
    for run in runs:
        rows[run.name], models[run.name] = prune_stage(args, Path(checkpoint), run)

    size = tuple(models["dense"].data_config["input_size"])
    files = {"dense": Path(checkpoint), **{name: args.out / name / PRUNED_FILE for name in rows}}
    eager = latency_ms("torch", files, args, size)
    with tempfile.TemporaryDirectory() as tmp:  # batch fixed at 1 (the acceptance's graph) / dynamic batch
        (Path(tmp) / "static").mkdir()
        (Path(tmp) / "dynamic").mkdir()
        ort_ms = ort_latency_ms(models, args, size, workdir=Path(tmp) / "static", dynamic_batch=False)
        ort_dyn_ms = ort_latency_ms(models, args, size, workdir=Path(tmp) / "dynamic", dynamic_batch=True)
    dense_cost = vitedge.profile(models["dense"])
    for name, row in rows.items():
        row["torch_ms"], row["ort_ms"], row["ort_dyn_ms"] = eager[name], ort_ms[name], ort_dyn_ms[name]
        row["torch_x"] = eager[name] / eager["dense"]
        row["ort_x"] = ort_ms[name] / ort_ms["dense"]
        row["ort_dyn_x"] = ort_dyn_ms[name] / ort_dyn_ms["dense"]
        row["params_x"] = row["params_pruned"] / dense_cost["params"]
        row["macs_x"] = row["macs_pruned"] / dense_cost["macs"]
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "checkpoint": str(checkpoint), "input_size": list(size), "threads": args.threads,
        "runs": args.runs, "scope": args.scope, "round_to": args.round_to,
        "finetune_epochs": args.finetune_epochs, "distill": args.distill, "ema_decay": args.ema_decay,
        "dense": {"params": dense_cost["params"], "macs": dense_cost["macs"],
                  "torch_ms": eager["dense"], "ort_ms": ort_ms["dense"], "ort_dyn_ms": ort_dyn_ms["dense"]},
        "model": models["dense"].arch["name"],
        "rows": rows,
        "acceptance": acceptance(rows, args) if models["dense"].arch["name"] == ACCEPT_MODEL else {},
        "torch": torch.__version__, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def acceptance(rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The issue's numeric acceptance checks that this study can evaluate (None: not measured)."""
    main = {row["ratio"]: row for row in rows.values() if row["criterion"] == args.criterion}
    checks: dict[str, Any] = {}
    if 0.4 in main:
        checks["macs_40_le_0.6x"] = main[0.4]["macs_x"] <= ACCEPT["macs_40"]
        checks["ort_40_le_0.75x"] = main[0.4]["ort_x"] <= ACCEPT["ort_40"]
    if 0.0 in main and "score_finetuned" in main[0.0]:
        ref = main[0.0]["score_finetuned"]
        for r, key in ((0.2, "drop_20"), (0.4, "drop_40")):
            if r in main:
                checks[f"{key}_le_{ACCEPT[key]}pt"] = ref - main[r]["score_finetuned"] <= ACCEPT[key]
    random_row = rows.get(Run("random", args.compare_ratio).name)
    crit_row = main.get(args.compare_ratio)
    if random_row and crit_row and "score_pruned" in crit_row:
        checks[f"{args.criterion}_beats_random_before_finetune"] = \
            crit_row["score_pruned"] > random_row["score_pruned"]
        if "score_bn_recalibrated" in crit_row:
            checks[f"{args.criterion}_beats_random_after_bn_reestimation"] = \
                crit_row["score_bn_recalibrated"] > random_row["score_bn_recalibrated"]
    return checks


def markdown(report: dict[str, Any]) -> str:
    d = report["dense"]
    lines = [
        (f"Checkpoint `{report['checkpoint']}`, input {report['input_size']}, scope "
         f"{report['scope']}, round_to {report['round_to']}, fine-tuning "
         f"{report['finetune_epochs']} epochs{' with distillation' if report['distill'] else ''}"
         f"{', weight EMA ' + str(report['ema_decay']) if report.get('ema_decay') else ''}. "
         f"Latency: batch 1, {report['threads']} threads, median of {report['runs']} runs "
         f"(runs alternated across models in one process, per runtime). ORT: `vitedge.export` FP32 "
         f"graphs with the batch fixed at 1 (as an edge deployment ships them; the acceptance's "
         f"graph) and with a dynamic batch axis (\"dyn\")."),
        "",
        (f"Dense: {d['params'] / 1e6:.3f} M params, {d['macs'] / 1e6:.1f} M MACs, PyTorch "
         f"{d['torch_ms']:.2f} ms, ONNX Runtime {d['ort_ms']:.2f} ms (dyn {d['ort_dyn_ms']:.2f} ms)."),
        "",
        ("| criterion | ratio | params (M) | ×dense | MACs (M) | ×dense | top-1 pruned | + BN re-est. "
         "| top-1 fine-tuned | PyTorch ms | ×dense | ORT ms | ×dense | ORT dyn ms | ×dense |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"].values():
        scores = [f"{row[k]:.2f}" if k in row else "–" for k in ("score_pruned", "score_bn_recalibrated",
                                                                 "score_finetuned")]
        lines.append(
            f"| {row['criterion']} | {row['ratio']:.0%} | {row['params_pruned'] / 1e6:.3f} | "
            f"{row['params_x']:.3f} | {row['macs_pruned'] / 1e6:.1f} | {row['macs_x']:.3f} | "
            f"{scores[0]} | {scores[1]} | {scores[2]} | {row['torch_ms']:.2f} | {row['torch_x']:.3f} | "
            f"{row['ort_ms']:.2f} | {row['ort_x']:.3f} | {row['ort_dyn_ms']:.2f} | {row['ort_dyn_x']:.3f} |")
    if report["acceptance"]:
        lines += ["", f"Acceptance (issue 4's limits for {ACCEPT_MODEL}): " + ", ".join(
            f"{k} {'✅' if v else '❌'}" for k, v in report["acceptance"].items())]
    lines += ["", "```", report["command"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = study(args)
    write_json(args.out / "results.json", report)
    text = markdown(report)
    write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
