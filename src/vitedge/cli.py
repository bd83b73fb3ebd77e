"""The ``vitedge`` command: a thin layer over the Python API.

Every user mistake surfaces as a :class:`VitedgeError`, printed as one line on stderr with a
non-zero exit; nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from vitedge.errors import VitedgeError
from vitedge.tables import Table
from vitedge.train.config import QAT_ALPHA, QAT_EMA, QAT_LR, QAT_STEP_LR_MULT, TrainConfig

app = typer.Typer(add_completion=False,
                  help="Compress EfficientViT models and deploy them on edge devices.")
console = Console()
PROG = "vitedge"
EXIT_USER_ERROR = 2  # every user mistake, usage errors included (the code click gives them)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    # Bare `vitedge`: the user wants the list of commands, a script that lost its verb must fail.
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help(), nl=False)  # rich help prints itself and returns ""
        raise typer.Exit(EXIT_USER_ERROR)


@app.command("models")
def models_command(pattern: Annotated[str, typer.Argument(help="substring filter")] = "") -> None:
    """List the registered model names."""
    from vitedge.models import list_models

    for name in list_models(pattern):
        console.print(name)


@app.command("profile")
def profile_command(
    model: Annotated[Optional[str], typer.Argument(help="model name or checkpoint path")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="profile every registered model")] = False,
    resolution: Annotated[Optional[int], typer.Option(
        min=1, help="input resolution (default: the model's)")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="classifier width for a model name")] = None,
    latency: Annotated[bool, typer.Option(help="also time PyTorch eager at batch 1")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for latency")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size for latency")] = 1,
    runs: Annotated[int, typer.Option(min=1, help="timed runs for latency")] = 10,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write results as JSON here")] = None,
    breakdown: Annotated[bool, typer.Option(
        "--breakdown", help="also profile the FP32 export per node on --runtime: time per operator kind "
                            "beside its roofline floor")] = False,
    breakdown_runs: Annotated[int, typer.Option(min=1, help="profiled runs for --breakdown")] = 50,
    runtime: Annotated[str, typer.Option(help="--breakdown: onnxruntime or openvino")] = "onnxruntime",
    plot: Annotated[Optional[Path], typer.Option(help="--breakdown: write the plot (PNG) here")] = None,
    markdown: Annotated[Optional[Path], typer.Option(
        help="--breakdown: write the tables (Markdown) here")] = None,
) -> None:
    """Params, MACs, weight and activation memory (and PyTorch latency) of models; with
    --breakdown, where the runtime spends the time, per operator kind, against the roofline."""
    from vitedge.bench.profile import profile_models, profile_table
    from vitedge.hardware.roofline import cpu_breakdown
    from vitedge.models import list_models
    from vitedge.models.checkpoint import resolve_model

    if all_models == (model is not None):
        raise VitedgeError("give either a MODEL (name or checkpoint) or --all")
    if (plot or markdown) and not breakdown:
        raise VitedgeError("--plot and --markdown belong to --breakdown; add --breakdown")
    names = list_models() if all_models else [model]
    results = profile_models(names, resolution=resolution, num_classes=num_classes, latency=latency,
                             threads=threads, batch_size=batch_size, runs=runs)
    breakdowns = [cpu_breakdown(resolve_model(name, num_classes=num_classes), resolution=resolution,
                                threads=threads or 2, runs=breakdown_runs, name=name, runtime=runtime)
                  for name in (names if breakdown else [])]
    for stats, bd in zip(results, breakdowns):
        stats["breakdown"] = bd.to_dict()
    table = profile_table(results, batch_size)
    console.print(table.rich())
    if breakdowns:
        _print_breakdowns(breakdowns, plot, markdown)
    if json_out is not None:
        from vitedge.io import write_text

        text = json.dumps(results, indent=2)
        write_text(json_out, text)
        console.print(f"wrote {json_out}")


def _print_breakdowns(breakdowns: list, plot: Path | None, markdown: Path | None) -> None:
    from vitedge.hardware.roofline import plot_breakdown
    from vitedge.io import write_text

    for bd in breakdowns:
        console.print(bd.table().rich())
        console.print("furthest from the floor: " + ", ".join(r.kind for r in bd.furthest_from_floor()))
    if plot is not None:
        console.print(f"wrote {plot_breakdown(breakdowns, plot)}")
    if markdown is not None:
        text = "\n".join(bd.to_markdown() for bd in breakdowns)
        console.print(f"wrote {write_text(markdown, text)}")


@app.command("hw")
def hw_command(
    model: Annotated[str, typer.Argument(help="model name, or a (pruned or quantized) vitedge checkpoint")],
    accelerator: Annotated[str, typer.Option(help="accelerator preset")] = "trio-zcu102",
    resolution: Annotated[Optional[int], typer.Option(
        min=1, help="input resolution (default: the model's)")] = None,
    set_params: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a preset parameter, e.g. --set ddr_gbps=4 --set replication=8")] = None,
    include_head: Annotated[bool, typer.Option(help="map the classifier head too")] = False,
    layers: Annotated[bool, typer.Option(help="print the per-layer table")] = False,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="write the estimate as JSON here")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="write the estimate (per-layer table, assumptions) "
                                                              "as Markdown here")] = None,
) -> None:
    """Estimate FPS, GOPS and MAC utilisation of a model on an FPGA accelerator (W8A8 cycle model)."""
    from vitedge.hardware.accelerator import estimate, get_accelerator
    from vitedge.io import write_text
    from vitedge.models.checkpoint import resolve_model

    cfg = get_accelerator(accelerator).with_overrides(**_parse_overrides(set_params or []))
    est = estimate(resolve_model(model), cfg, resolution=resolution, include_head=include_head)
    console.print(est.summary_table().rich())
    if layers:
        console.print(est.to_markdown(), markup=False, highlight=False)
    if json_out is not None:
        text = json.dumps(est.to_dict(), indent=2)
        console.print(f"wrote {write_text(json_out, text)}")
    if markdown is not None:
        text = est.to_markdown()
        console.print(f"wrote {write_text(markdown, text)}")


def _parse_overrides(items: list[str]) -> dict[str, float | int | bool]:
    """``["ddr_gbps=4", "pes=8", "strict_lanes=true"]`` → ``{"ddr_gbps": 4.0, "pes": 8, ...}``."""
    out: dict[str, float | int | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VitedgeError(f"--set takes KEY=VALUE (got {item!r})")
        if value.strip().lower() in ("true", "false"):
            out[key.strip()] = value.strip().lower() == "true"
            continue
        try:
            out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise VitedgeError(f"--set {key}: {value!r} is not a number") from None
    return out


@app.command("convert")
def convert_command(
    checkpoint: Annotated[Path, typer.Argument(help="timm or official .pth/.bin/.safetensors file")],
    model: Annotated[str, typer.Option(help="architecture the checkpoint holds, e.g. efficientvit_b0")],
    output: Annotated[Path, typer.Option("--output", "-o", help="vitedge .safetensors to write")],
) -> None:
    """Turn a timm or official checkpoint into a self-describing vitedge checkpoint."""
    from vitedge.models.checkpoint import load, save

    if output.suffix != ".safetensors":
        raise VitedgeError(f"--output must end in .safetensors (got {output.name})")
    net = load(checkpoint, model)
    save(net, output)
    console.print(f"wrote {output} ({net.arch['name']}, {net.num_classes} classes)")


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="vitedge .safetensors checkpoint")]) -> None:
    """Show the model config and extra information stored in a vitedge checkpoint."""
    from vitedge.io import read_metadata

    console.print_json(json.dumps(read_metadata(checkpoint)))


# `vitedge train` option → TrainConfig field. Defaults are the config's own (one source of truth).
_D = TrainConfig()
_TRAIN_FIELDS = {
    "model": "model", "data": "data.dataset", "data_dir": "data.root", "epochs": "epochs",
    "batch_size": "data.batch_size", "lr": "optim.lr", "img_size": "data.img_size", "out": "out",
    "teacher": "distill.teacher", "alpha": "distill.alpha", "temperature": "distill.temperature",
    "seed": "seed", "workers": "data.workers", "ema": "ema.decay", "warmup_epochs": "optim.warmup_epochs",
    "weight_decay": "optim.weight_decay", "label_smoothing": "optim.label_smoothing",
    "min_scale": "data.scale", "hflip": "data.hflip", "randaug": "data.randaug_ops",
    "crop_pct": "data.crop_pct", "train_split": "data.seg_train_split", "strict": "data.strict",
    "device": "device", "eval_every": "eval_every",
}


@app.command("train")
def train_command(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(
        help="model name (fresh weights) or vitedge checkpoint (fine-tune); optional with --resume")] = None,
    data: Annotated[str, typer.Option(help="fashion-mnist, cifar10, camvid, cityscapes or a folder")]
        = _D.data.dataset,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    epochs: Annotated[int, typer.Option(help="training epochs")] = _D.epochs,
    batch_size: Annotated[int, typer.Option(
        help="global batch size (split across torchrun processes)")] = _D.data.batch_size,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = _D.optim.lr,
    img_size: Annotated[Optional[int], typer.Option(help="input resolution (default: the model's)")] = None,
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, metrics, final model")] = Path(_D.out),
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its saved settings")] = False,
    teacher: Annotated[Optional[Path], typer.Option(help="vitedge checkpoint to distil from")] = None,
    alpha: Annotated[float, typer.Option(help="distillation weight of the KL term")] = _D.distill.alpha,
    temperature: Annotated[float, typer.Option(help="distillation temperature")] = _D.distill.temperature,
    seed: Annotated[int, typer.Option(help="seed of init, data order and augmentation")] = _D.seed,
    workers: Annotated[int, typer.Option(help="data-loader worker processes")] = _D.data.workers,
    ema: Annotated[Optional[float], typer.Option(help="EMA decay, e.g. 0.9998 (off if unset)")] = None,
    warmup_epochs: Annotated[float, typer.Option(help="linear warm-up epochs")] = _D.optim.warmup_epochs,
    weight_decay: Annotated[float, typer.Option(
        help="AdamW weight decay (not on norms/biases)")] = _D.optim.weight_decay,
    label_smoothing: Annotated[float, typer.Option(help="CE label smoothing")] = _D.optim.label_smoothing,
    min_scale: Annotated[float, typer.Option(help="smallest random-crop area share")] = _D.data.scale[0],
    hflip: Annotated[float, typer.Option(help="horizontal flip probability")] = _D.data.hflip,
    randaug: Annotated[int, typer.Option(help="RandAugment-lite ops per image")] = _D.data.randaug_ops,
    crop_pct: Annotated[Optional[float], typer.Option(help="eval centre-crop share (default: model)")] = None,
    train_split: Annotated[str, typer.Option(
        help="segmentation: the split trained on (CamVid: train or trainval)")] = _D.data.seg_train_split,
    strict: Annotated[bool, typer.Option(help="unreadable images are an error, not skipped")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda[:N] (default: CUDA if present)")] = None,
    eval_every: Annotated[int, typer.Option(
        help="test-set evaluation every N epochs (and after the last)")] = _D.eval_every,
) -> None:
    """Train or fine-tune a model (alone, or under `torchrun --nproc_per_node=N -m vitedge.cli train`)."""
    from vitedge.train import train
    from vitedge.train.checkpoint import STATE_FILE, read_train_meta

    # Only options typed on the command line override (compared by name: typer vendors click).
    given = {name: value for name, value in ctx.params.items() if name in _TRAIN_FIELDS and
             getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    changes = {_TRAIN_FIELDS[name]: _train_value(name, value) for name, value in given.items()}
    if resume:
        saved = TrainConfig.from_dict(json.loads(read_train_meta(out / STATE_FILE)["meta"])["config"])
        cfg = saved.with_overrides({**changes, "resume": True, "out": str(out)})
    else:
        if model is None:
            raise VitedgeError("give a MODEL (name or checkpoint) to train, or --resume with --out of a run")
        cfg = _D.with_overrides(changes)
    result = train(cfg)
    if result.history:
        from vitedge.train.tasks import describe

        console.print(f"{describe(result.metrics)}  → {cfg.out}/model.safetensors", highlight=False)


def _train_value(name: str, value: object) -> object:
    if name == "min_scale":
        return (value, 1.0)
    return str(value) if isinstance(value, Path) else value


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint (e.g. RUN/model.safetensors)")],
    data: Annotated[str, typer.Option(help="fashion-mnist, cifar10, camvid, cityscapes or a folder")]
        = _D.data.dataset,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    split: Annotated[str, typer.Option(help="train or test (test also finds val/; camvid/cityscapes: val)")]
        = "test",
    batch_size: Annotated[int, typer.Option(help="evaluation batch size")] = 256,
    workers: Annotated[int, typer.Option(help="data-loader worker processes")] = 0,
    strict: Annotated[bool, typer.Option(help="unreadable images are an error, not skipped")] = False,
    confusion: Annotated[Optional[Path], typer.Option(help="write the confusion matrix PNG here")] = None,
    overlays: Annotated[Optional[Path], typer.Option(
        help="segmentation: write image/label/prediction overlays of the first frames here (PNG)")]
        = None,
    overlay_count: Annotated[int, typer.Option(help="frames in the overlay PNG")] = 4,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="write all metrics as JSON here (- for stdout)")] = None,
) -> None:
    """Top-1, top-5 and per-class accuracy of a checkpoint (and its confusion matrix); on a
    segmentation dataset (camvid, cityscapes) mIoU, per-class IoU and pixel accuracy."""
    from vitedge.data.segmentation import SEG_DATASETS
    from vitedge.train import evaluate_checkpoint, save_confusion_png

    if data.lower() in SEG_DATASETS:
        _eval_segmentation(checkpoint, data, data_dir, split, batch_size, workers, overlays, overlay_count,
                           json_out)
        return
    metrics = evaluate_checkpoint(checkpoint, data, root=str(data_dir) if data_dir else None, split=split,
                                  batch_size=batch_size, workers=workers, strict=strict)
    if json_out is not None and str(json_out) == "-":
        print(json.dumps(metrics))
        return
    _print_per_class(f"{checkpoint.name} on {data} ({split}, {metrics['num_samples']} images)",
                     "accuracy (%)", metrics["per_class"])
    console.print(f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}",
                  highlight=False)
    if confusion is not None:
        save_confusion_png(metrics["confusion"], metrics["classes"], confusion,
                           title=f"{checkpoint.parent.name}/{checkpoint.name}: top-1 {metrics['top1']:.1f}%")
        console.print(f"wrote {confusion}")
    if json_out is not None:
        _write_json(metrics, json_out)


def _eval_segmentation(checkpoint: Path, data: str, data_dir: Path | None, split: str, batch_size: int,
                       workers: int, overlays: Path | None, overlay_count: int,
                       json_out: Path | None) -> None:
    from vitedge.data.segmentation import SegEvalTransform, build_seg_dataset
    from vitedge.models.checkpoint import load
    from vitedge.train.seg_evaluate import evaluate_seg_checkpoint, save_overlays

    metrics = evaluate_seg_checkpoint(checkpoint, data, root=data_dir, split=split,
                                      batch_size=min(batch_size, 16), workers=workers)
    if json_out is not None and str(json_out) == "-":
        print(json.dumps(metrics))
        return
    _print_per_class(f"{checkpoint.name} on {data} ({split}, {metrics['num_images']} images)", "IoU (%)",
                     metrics["per_class_iou"])
    console.print(f"mIoU {metrics['miou']:.2f}%  pixel accuracy {metrics['pixel_acc']:.2f}%  "
                  f"mean accuracy {metrics['mean_acc']:.2f}%", highlight=False)
    if overlays is not None:
        model = load(checkpoint)
        dataset = build_seg_dataset(data, data_dir, split, transform=SegEvalTransform(
            mean=tuple(model.data_config["mean"]), std=tuple(model.data_config["std"])))
        save_overlays(model, dataset, overlays, count=overlay_count,
                      title=f"{checkpoint.parent.name}: mIoU {metrics['miou']:.1f}% on {data} {split}")
        console.print(f"wrote {overlays}")
    if json_out is not None:
        _write_json(metrics, json_out)


def _print_per_class(title: str, column: str, values: dict[str, float]) -> None:
    console.print(Table.of_mapping(title, ("class", column), values).rich())


def _write_json(metrics: dict, path: Path) -> None:
    from vitedge.io import write_json

    write_json(path, metrics)
    console.print(f"wrote {path}")


@app.command("prune")
def prune_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the trained dense model")],
    ratio: Annotated[float, typer.Option(help="share of prunable channels removed, in [0, 1)")] = 0.4,
    criterion: Annotated[str, typer.Option(help="l2 (Frobenius), l1, taylor or random")] = "l2",
    scope: Annotated[str, typer.Option(help="layer (uniform ratio) or global ranking")] = "layer",
    round_to: Annotated[int, typer.Option(help="kept widths are multiples of this")] = 8,
    finetune_epochs: Annotated[int, typer.Option(help="fine-tuning epochs after pruning (0: none)")] = 0,
    distill: Annotated[bool, typer.Option(help="distil the fine-tuning from the unpruned model")] = False,
    data: Annotated[str, typer.Option(help="fashion-mnist, cifar10 or a folder")] = _D.data.dataset,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="input size (default: the checkpoint's)")] = None,
    lr: Annotated[float, typer.Option(help="fine-tuning peak learning rate")] = 5e-4,
    batch_size: Annotated[int, typer.Option(help="fine-tuning batch size")] = _D.data.batch_size,
    alpha: Annotated[float, typer.Option(help="distillation weight of the KL term")] = _D.distill.alpha,
    temperature: Annotated[float, typer.Option(help="distillation temperature")] = _D.distill.temperature,
    workers: Annotated[int, typer.Option(help="data-loader worker processes")] = _D.data.workers,
    seed: Annotated[int, typer.Option(help="seed of random scores and fine-tuning")] = _D.seed,
    out: Annotated[Path, typer.Option(help="folder for the pruned model and its report")] = Path("runs/prune"),
) -> None:
    """Prune a checkpoint, evaluate it, optionally fine-tune (distilled), evaluate again, save."""
    from vitedge.pruning import PruneConfig
    from vitedge.workflows.prune import DENSE_TEACHER, prune_checkpoint

    if finetune_epochs < 0:
        raise VitedgeError(f"--finetune-epochs must be >= 0 (got {finetune_epochs})")
    config = PruneConfig(ratio=ratio, criterion=criterion, scope=scope, round_to=round_to, seed=seed)
    train = _recipe_config(finetune_epochs, seed, data, data_dir, batch_size, workers, lr, {
        "data.img_size": img_size, "distill.teacher": DENSE_TEACHER if distill else None,
        "distill.alpha": alpha, "distill.temperature": temperature})
    result = prune_checkpoint(checkpoint, config, train=train, finetune=finetune_epochs > 0, out=out)
    _print_metrics(result.metrics, (("top1_dense", "top-1 dense"), ("top1_pruned", "top-1 pruned"),
                                    ("top1_bn_recalibrated", "top-1 BN re-estimated"),
                                    ("top1_finetuned", "top-1 fine-tuned")))
    m = result.metrics
    console.print(f"params {m['params_dense'] / 1e6:.3f}M → {m['params_pruned'] / 1e6:.3f}M, MACs "
                  f"{m['macs_dense'] / 1e6:.1f}M → {m['macs_pruned'] / 1e6:.1f}M  → {result.path}",
                  highlight=False)


@app.command("quantize")
def quantize_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the float model (dense or pruned)")],
    method: Annotated[str, typer.Option(help="trio, minmax, percentile or mse")] = "trio",
    calib: Annotated[int, typer.Option(help="calibration images from the training split")] = 1024,
    w_bits: Annotated[int, typer.Option(help="weight bits (2-16)")] = 8,
    a_bits: Annotated[int, typer.Option(help="activation bits (2-16)")] = 8,
    per_channel: Annotated[bool, typer.Option(help="one weight scale per output channel")] = True,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs after calibration (0: PTQ only)")] = 0,
    qat_lr: Annotated[float, typer.Option(help="QAT peak learning rate of the weights")] = QAT_LR,
    qat_step_lr_mult: Annotated[float, typer.Option(
        help="QAT: the learned step sizes train at --qat-lr times this")] = QAT_STEP_LR_MULT,
    qat_alpha: Annotated[float, typer.Option(
        help="QAT distillation weight (1: match the float model only, no label term)")] = QAT_ALPHA,
    qat_ema: Annotated[float, typer.Option(
        help="QAT: freeze an EMA of the weights and step sizes with this decay instead of the "
             "last step (0: off)")] = QAT_EMA,
    reconstruct: Annotated[int, typer.Option(
        help="post-training: learn the step sizes N steps on the calibration set against the float "
             "logits (weights fixed; 0: off)")] = 0,
    holdout: Annotated[int, typer.Option(
        help="other training images that score the precision plan (0: the calibration images)")] = 256,
    auto_float: Annotated[bool, typer.Option(
        help="keep in float the points this model cannot take in INT8, measured on the held-out images")] = True,
    keep_float: Annotated[Optional[list[str]], typer.Option(
        help="a point, kind (e.g. attn.num) or layer path to keep in float; repeatable")] = None,
    target: Annotated[str, typer.Option(
        help="the runtime to deploy on: openvino, onnxruntime or tensorrt (points where its int8 kernels "
             "fuse them), or simulation (every point of the Trio-ViT spec)")] = "simulation",
    latency_plan: Annotated[bool, typer.Option(
        help="target openvino/onnxruntime: time the attention and depthwise points in float on that runtime "
             "here and keep in float what runs faster so")] = True,
    data: Annotated[str, typer.Option(help="fashion-mnist, cifar10 or a folder")] = _D.data.dataset,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    batch_size: Annotated[int, typer.Option(help="evaluation / QAT batch size")] = _D.data.batch_size,
    workers: Annotated[int, typer.Option(help="data-loader worker processes")] = _D.data.workers,
    seed: Annotated[int, typer.Option(help="seed of the calibration subset and QAT")] = _D.seed,
    out: Annotated[Path, typer.Option(help="folder for the quantized model and its report")] = Path("runs/quantize"),
) -> None:
    """Quantize a checkpoint (PTQ, optionally QAT distilled from the float model), evaluate, save."""
    from vitedge.quantization import QuantConfig
    from vitedge.workflows.quantize import quantize_checkpoint

    if qat_epochs < 0:
        raise VitedgeError(f"--qat-epochs must be >= 0 (got {qat_epochs})")
    if reconstruct < 0:
        raise VitedgeError(f"--reconstruct must be >= 0 steps (got {reconstruct})")
    config = QuantConfig.for_target(target, method=method, w_bits=w_bits, a_bits=a_bits, per_channel=per_channel,
                                    reconstruct_iters=reconstruct, keep_float=tuple(keep_float or ()),
                                    auto_float=auto_float)
    train = _recipe_config(qat_epochs, seed, data, data_dir, batch_size, workers, qat_lr,
                           {"optim.warmup_epochs": 0.0, "optim.step_size_lr_mult": qat_step_lr_mult,
                            "distill.alpha": qat_alpha, "ema.decay": qat_ema or None})
    refine = None
    if latency_plan and target in ("openvino", "onnxruntime"):
        from vitedge.bench.latency_plan import latency_plan as plan_latency
        from vitedge.io import read_metadata

        trained_at = read_metadata(checkpoint)["extra"].get("data_config", {}).get("input_size")

        def refine(qmodel: Any) -> None:  # timed at the resolution the model was trained for
            plan_latency(qmodel, resolution=int((trained_at or qmodel.data_config["input_size"])[-1]))

    result = quantize_checkpoint(checkpoint, config, data=train.data, calib=calib, holdout=holdout,
                                 qat=train if qat_epochs > 0 else None, out=out, seed=seed, refine=refine)
    _print_metrics(result.metrics, (("top1_fp32", "top-1 FP32"), ("top1_int8", f"top-1 W{w_bits}A{a_bits} PTQ"),
                                    ("top1_qat", "top-1 after QAT")))
    console.print(f"precision plan: {result.metrics['precision_plan']}", highlight=False)
    if config.overflow_fix:
        console.print(f"target {config.target}: this CPU has no VNNI, so weights and signed matmul operands are on "
                      "7 bits (its int8 kernels saturate 8-bit pair sums; the file then computes what was scored)",
                      highlight=False)
    console.print(f"→ {result.path}", highlight=False)


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="vitedge checkpoint (float or quantized) or a model name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write (.onnx, .safetensors)")],
    format: Annotated[str, typer.Option("--format", help="deployment format: onnx or torch")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (int8: a quantized checkpoint)")] = "fp32",
    resolution: Annotated[Optional[int], typer.Option(help="input resolution (default: the model's)")] = None,
    batch_one: Annotated[bool, typer.Option(
        "--batch-one", help="fix the batch at 1 (ONNX): no run-time shape arithmetic, faster at batch 1 "
                            "(the usual edge deployment); the default keeps the batch dynamic")] = False,
) -> None:
    """Export a model for deployment (ONNX FP32/FP16/INT8 QDQ with preprocessing metadata)."""
    from vitedge.deploy import export
    from vitedge.io import read_metadata
    from vitedge.models.checkpoint import resolve_model

    extra = read_metadata(model)["extra"] if Path(model).is_file() else {}
    net = resolve_model(model)
    path = export(net, output, precision, format=format, resolution=resolution, classes=extra.get("classes"),
                  dynamic_batch=not batch_one, data_config=extra.get("data_config"))
    size = path.stat().st_size / 2**20
    console.print(f"wrote {path} ({format}, {precision}, {size:.2f} MiB)", highlight=False)


@app.command("bench")
def bench_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the float model")],
    int8: Annotated[Optional[Path], typer.Option(help="its quantized checkpoint (default: calibrate one)")] = None,
    data: Annotated[Optional[str], typer.Option(help="dataset for accuracy and calibration")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    eval_limit: Annotated[Optional[int], typer.Option(help="evaluate on the first N test images")] = None,
    calib: Annotated[int, typer.Option(help="calibration images when no --int8 is given")] = 512,
    runtime: Annotated[Optional[list[str]], typer.Option(help="runtimes to try (default: all)")] = None,
    batch_size: Annotated[list[int], typer.Option(help="batch sizes to time")] = [1, 8],  # noqa: B006
    threads: Annotated[int, typer.Option(help="CPU threads per runtime")] = 2,
    runs: Annotated[int, typer.Option(help="timed runs per measurement")] = 30,
    nncf: Annotated[bool, typer.Option(
        help="add the NNCF anchor rows (nncf.quantize on the same FP32 ONNX and calibration images, "
             "on OpenVINO)")] = True,
    latency_plan: Annotated[bool, typer.Option(
        help="INT8 quantized here: keep in float the attention / depthwise points that run faster so on "
             "each runtime (timed here)")] = True,
    out: Annotated[Path, typer.Option(help="folder for the exported files and bench.md/json")] = Path("runs/bench"),
) -> None:
    """Every runtime × precision: file size, accuracy, latency (median/p90), throughput — beside
    NNCF's INT8 on OpenVINO."""
    from vitedge.bench.deployment import bench_deployment, bench_markdown
    from vitedge.train.config import DataConfig

    data_cfg = DataConfig(dataset=data, root=str(data_dir) if data_dir else None) if data else None
    rows = bench_deployment(checkpoint, out=out, quantized=int8, data=data_cfg, eval_limit=eval_limit,
                            calib=calib, runtimes=runtime, batch_sizes=batch_size, threads=threads, runs=runs,
                            nncf_presets=("performance", "transformer") if nncf else (),
                            latency_plan=latency_plan)
    console.print(bench_markdown(rows, batch_size), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {out}/bench.md and bench.json")


@app.command("predict")
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="image files to classify")],
    model: Annotated[Path, typer.Option(help="vitedge checkpoint or exported .onnx file")],
    top: Annotated[int, typer.Option(help="how many classes to list per image")] = 5,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads")] = None,
) -> None:
    """Top-k class names (with probabilities) of image files, from a checkpoint or an ONNX export."""
    from vitedge.deploy.predict import load_predictor

    for path, ranked in load_predictor(model, threads=threads).predict(images, top=top):
        console.print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked), highlight=False,
                      soft_wrap=True)


@app.command("study")
def study_command(
    config: Annotated[Optional[Path], typer.Option(help="study YAML (see configs/study.yaml)")] = None,
    preset: Annotated[str, typer.Option(help="quick (the demo) or full (the CIFAR-10 study)")] = "quick",
    name: Annotated[Optional[str], typer.Option(help="run folder name under --out")] = None,
    task: Annotated[Optional[str], typer.Option(
        help="classification, or seg (a segmentation model on camvid/cityscapes; mIoU)")] = None,
    data: Annotated[Optional[str], typer.Option(
        help="fashion-mnist, cifar10, an image folder; camvid or cityscapes with --task seg")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the named dataset lives")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="trained vitedge checkpoint (skips training)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model to train when there is no checkpoint")] = None,
    out: Annotated[Optional[Path], typer.Option(help="runs folder (default runs)")] = None,
    threads: Annotated[Optional[int], typer.Option(help="runtime threads for latency and accuracy")] = None,
    show_config: Annotated[bool, typer.Option(help="print the resolved config as YAML and stop")] = False,
) -> None:
    """Run the whole study: baseline → prune + fine-tune → INT8 → ONNX → runtime → report.

    Re-running the same command resumes a killed study and skips every finished stage.
    """
    from vitedge.report import study_with_report
    from vitedge.study import load_study_config

    overrides = {"name": name, "task": task, "data.dataset": data,
                 "data.root": str(data_dir) if data_dir else None,
                 "checkpoint": str(checkpoint) if checkpoint else None, "model": model,
                 "out": str(out) if out else None, "deploy.threads": threads}
    base = load_study_config(config, preset=preset)
    if data is not None and data != base.data.dataset and name is None:
        overrides["name"] = f"{base.name}-{Path(data).name}"  # another dataset: another run folder
    if task == "seg" and model is None and "_seg_" not in base.model:
        overrides["model"] = "efficientvit_seg_b0"  # the preset's classifier cannot segment
    study = load_study_config(config, preset=preset, overrides=overrides)
    if show_config:
        import yaml

        typer.echo(yaml.safe_dump(study.to_dict(), sort_keys=False).rstrip())
        return
    result = study_with_report(study, log=lambda line: console.print(line, highlight=False, markup=False))
    console.print(f"report: {result.report} (+ report.html, results.json, results.csv, plots/)", highlight=False)


def _recipe_config(epochs: int, seed: int, data: str, data_dir: Path | None, batch_size: int, workers: int,
                   lr: float, more: dict) -> TrainConfig:
    """The data and fine-tuning settings of a compression recipe (epochs 0: data only)."""
    return _D.with_overrides({"epochs": max(1, epochs), "seed": seed, "data.dataset": data,
                              "data.root": str(data_dir) if data_dir else None, "data.batch_size": batch_size,
                              "data.workers": workers, "optim.lr": lr, **more})


def _print_metrics(metrics: dict, rows: tuple[tuple[str, str], ...]) -> None:
    name = "mIoU" if metrics.get("metric") == "miou" else "top-1"  # top1_* hold a seg model's mIoU
    values = {label.replace("top-1", name): float(metrics[key]) for key, label in rows if key in metrics}
    console.print(Table.of_mapping("", ("metric", "%"), values).rich())


def main() -> None:
    """Console-script entry point: one-line errors and a non-zero exit for user mistakes."""
    try:
        code = app(prog_name=PROG, standalone_mode=False)
    except VitedgeError as err:
        _print_error(str(err))
        sys.exit(EXIT_USER_ERROR)
    except typer.TyperException as err:
        # The parser's errors: typer vendors click, so they are not click's classes (and click is
        # not a dependency); usage errors carry exit code 2, anything else its own.
        _print_error(f"{err.format_message().rstrip('.')} — see {_command_path(err)} --help")
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(130)
    # Not standalone, typer returns the code of a typer.Exit (--help: 0, Ctrl-C: 130).
    if isinstance(code, int) and code:
        sys.exit(code)


def _print_error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _command_path(err: Exception) -> str:
    """``vitedge CMD`` for the command the bad arguments were given to (``vitedge`` if none)."""
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        return ctx.command_path
    # Some parser errors (an option missing its value) carry no context: read the command line.
    commands = {info.name for info in app.registered_commands}
    verb = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    return f"{PROG} {verb}" if verb in commands else PROG


if __name__ == "__main__":
    main()
