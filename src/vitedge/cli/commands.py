"""The commands: each parses its options, calls one library function and renders the result.
Each imports what it runs when it runs, so ``vitedge --help`` stays quick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vitedge.cli import render
from vitedge.cli.options import (
    DEFAULTS,
    Alpha,
    BatchSize,
    Calib,
    Data,
    DataDir,
    ImgSize,
    JsonOrStdout,
    JsonOut,
    LatencyPlan,
    LearningRate,
    Markdown,
    OptionalData,
    Out,
    ResolutionAlias,
    Runs,
    Seed,
    StageEpochs,
    Strict,
    Temperature,
    Threads,
    Workers,
    pick_img_size,
    typed,
)
from vitedge.errors import VitedgeError
from vitedge.train.config import QAT_ALPHA, QAT_EMA, QAT_LR, QAT_STEP_LR_MULT

PROG = "vitedge"
EXIT_USER_ERROR = 2  # every user mistake, usage errors included (the code click gives them)

app = typer.Typer(add_completion=False,
                  help="Compress EfficientViT models and deploy them on edge devices.")


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
        render.line(name)


@app.command("profile")
def profile_command(
    model: Annotated[str | None, typer.Argument(help="model name or checkpoint path")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="profile every registered model")] = False,
    img_size: ImgSize = None,
    resolution: ResolutionAlias = None,
    num_classes: Annotated[int | None, typer.Option(help="classifier width for a model name")] = None,
    latency: Annotated[bool, typer.Option(help="also time PyTorch eager at batch 1")] = True,
    threads: Threads = None,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size for latency")] = 1,
    runs: Runs = 10,
    json_out: JsonOut = None,
    breakdown: Annotated[bool, typer.Option(
        "--breakdown", help="also profile the FP32 export per node on --runtime: time per operator kind "
                            "beside its roofline floor")] = False,
    breakdown_runs: Annotated[int, typer.Option(min=1, help="profiled runs for --breakdown")] = 50,
    runtime: Annotated[str, typer.Option(help="--breakdown: onnxruntime or openvino")] = "onnxruntime",
    plot: Annotated[Path | None, typer.Option(help="--breakdown: write the plot (PNG) here")] = None,
    markdown: Markdown = None,
) -> None:
    """Params, MACs, weight and activation memory (and PyTorch latency) of models; with
    --breakdown, where the runtime spends the time, per operator kind, against the roofline."""
    from vitedge.workflows.profile import furthest_from_floor, profile_report

    if all_models == (model is not None):
        raise VitedgeError("give either a MODEL (name or checkpoint) or --all")
    if (plot or markdown) and not breakdown:
        raise VitedgeError("--plot and --markdown belong to --breakdown; add --breakdown")
    report = profile_report(None if all_models else [model], resolution=pick_img_size(img_size, resolution),
                            num_classes=num_classes, latency=latency, threads=threads, batch_size=batch_size,
                            runs=runs, breakdown=breakdown, breakdown_runs=breakdown_runs, runtime=runtime)
    render.table(report.table())
    for bd in report.breakdowns:
        render.table(bd.table())
        render.line(furthest_from_floor(bd))
    for path in report.save(plot=plot, markdown=markdown, json_path=json_out):
        render.wrote(path)


@app.command("hw")
def hw_command(
    model: Annotated[str, typer.Argument(help="model name, or a (pruned or quantized) vitedge checkpoint")],
    accelerator: Annotated[str, typer.Option(help="accelerator preset")] = "trio-zcu102",
    img_size: ImgSize = None,
    resolution: ResolutionAlias = None,
    set_params: Annotated[list[str] | None, typer.Option(
        "--set", help="override a preset parameter, e.g. --set ddr_gbps=4 --set replication=8")] = None,
    include_head: Annotated[bool, typer.Option(help="map the classifier head too")] = False,
    layers: Annotated[bool, typer.Option(help="print the per-layer table")] = False,
    json_out: JsonOut = None,
    markdown: Markdown = None,
) -> None:
    """Estimate FPS, GOPS and MAC utilisation of a model on an FPGA accelerator (W8A8 cycle model)."""
    from vitedge.workflows.accelerator import estimate_on_accelerator

    est = estimate_on_accelerator(model, accelerator, resolution=pick_img_size(img_size, resolution),
                                  overrides=set_params or [], include_head=include_head)
    render.table(est.summary_table())
    if layers:
        render.line(est.to_markdown())
    if json_out is not None:
        render.write_text(json_out, json.dumps(est.to_dict(), indent=2))
    if markdown is not None:
        render.write_text(markdown, est.to_markdown())


@app.command("convert")
def convert_command(
    checkpoint: Annotated[Path, typer.Argument(help="timm or official .pth/.bin/.safetensors file")],
    model: Annotated[str, typer.Option(help="architecture the checkpoint holds, e.g. efficientvit_b0")],
    output: Annotated[Path, typer.Option("--output", "-o", help="vitedge .safetensors to write")],
) -> None:
    """Turn a timm or official checkpoint into a self-describing vitedge checkpoint."""
    from vitedge.workflows.export import convert_checkpoint

    net = convert_checkpoint(checkpoint, model, output)
    render.wrote(output, f"{net.arch['name']}, {net.num_classes} classes")


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="vitedge .safetensors checkpoint")]) -> None:
    """Show the model config and extra information stored in a vitedge checkpoint."""
    from vitedge.io import read_metadata

    render.console.print_json(json.dumps(read_metadata(checkpoint)))


@app.command("train")
def train_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="model name (fresh weights) or vitedge checkpoint (fine-tune); optional with --resume")] = None,
    data: Data = DEFAULTS.data.dataset,
    data_dir: DataDir = None,
    epochs: Annotated[int, typer.Option(help="training epochs")] = DEFAULTS.epochs,
    batch_size: BatchSize = DEFAULTS.data.batch_size,
    lr: LearningRate = DEFAULTS.optim.lr,
    img_size: ImgSize = None,
    resolution: ResolutionAlias = None,
    out: Out = Path(DEFAULTS.out),
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its saved settings")] = False,
    teacher: Annotated[Path | None, typer.Option(help="vitedge checkpoint to distil from")] = None,
    alpha: Alpha = DEFAULTS.distill.alpha,
    temperature: Temperature = DEFAULTS.distill.temperature,
    seed: Seed = DEFAULTS.seed,
    workers: Workers = DEFAULTS.data.workers,
    ema: Annotated[float | None, typer.Option(help="EMA decay, e.g. 0.9998 (off if unset)")] = None,
    warmup_epochs: Annotated[float, typer.Option(help="linear warm-up epochs")] = DEFAULTS.optim.warmup_epochs,
    weight_decay: Annotated[float, typer.Option(
        help="AdamW weight decay (not on norms/biases)")] = DEFAULTS.optim.weight_decay,
    label_smoothing: Annotated[float, typer.Option(help="CE label smoothing")] = DEFAULTS.optim.label_smoothing,
    min_scale: Annotated[float, typer.Option(help="smallest random-crop area share")] = DEFAULTS.data.scale[0],
    hflip: Annotated[float, typer.Option(help="horizontal flip probability")] = DEFAULTS.data.hflip,
    randaug: Annotated[int, typer.Option(help="RandAugment-lite ops per image")] = DEFAULTS.data.randaug_ops,
    crop_pct: Annotated[float | None, typer.Option(help="eval centre-crop share (default: model)")] = None,
    train_split: Annotated[str, typer.Option(
        help="segmentation: the split trained on (CamVid: train or trainval)")] = DEFAULTS.data.seg_train_split,
    strict: Strict = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda[:N] (default: CUDA if present)")] = None,
    eval_every: Annotated[int, typer.Option(
        help="test-set evaluation every N epochs (and after the last)")] = DEFAULTS.eval_every,
) -> None:
    """Train or fine-tune a model (alone, or under `torchrun --nproc_per_node=N -m vitedge.cli train`)."""
    from vitedge.workflows.training import train_from_options

    options = typed(ctx)  # only the options typed on the command line override
    options.pop("resume", None)
    outcome = train_from_options(options, resume=resume, out=out)
    summary = outcome.summary()
    if summary is not None:
        render.line(summary)


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint (e.g. RUN/model.safetensors)")],
    data: Data = DEFAULTS.data.dataset,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="train or test (test also finds val/; camvid/cityscapes: val)")]
        = "test",
    batch_size: BatchSize = 256,
    workers: Workers = 0,
    strict: Strict = False,
    confusion: Annotated[Path | None, typer.Option(help="write the confusion matrix PNG here")] = None,
    overlays: Annotated[Path | None, typer.Option(
        help="segmentation: write image/label/prediction overlays of the first frames here (PNG)")]
        = None,
    overlay_count: Annotated[int, typer.Option(help="frames in the overlay PNG")] = 4,
    json_out: JsonOrStdout = None,
) -> None:
    """Top-1, top-5 and per-class accuracy of a checkpoint (and its confusion matrix); on a
    segmentation dataset (camvid, cityscapes) mIoU, per-class IoU and pixel accuracy."""
    from vitedge.workflows.evaluate import evaluate_on_dataset

    to_stdout = json_out is not None and str(json_out) == "-"
    result = evaluate_on_dataset(checkpoint, data, root=data_dir, split=split, batch_size=batch_size,
                                 workers=workers, strict=strict, confusion=None if to_stdout else confusion,
                                 overlays=None if to_stdout else overlays, overlay_count=overlay_count)
    if to_stdout:
        print(json.dumps(result.metrics))
        return
    render.table(result.table())
    render.line(result.summary)
    for path in result.written:
        render.wrote(path)
    if json_out is not None:
        render.write_json(json_out, result.metrics)


@app.command("prune")
def prune_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the trained dense model")],
    ratio: Annotated[float, typer.Option(help="share of prunable channels removed, in [0, 1)")] = 0.4,
    criterion: Annotated[str, typer.Option(help="l2 (Frobenius), l1, taylor or random")] = "l2",
    scope: Annotated[str, typer.Option(help="layer (uniform ratio) or global ranking")] = "layer",
    round_to: Annotated[int, typer.Option(help="kept widths are multiples of this")] = 8,
    stage_widths: Annotated[bool, typer.Option(
        help="also cut each stage's residual width (Microsoft M models)")] = False,
    drop_block: Annotated[list[str] | None, typer.Option(
        help="remove whole blocks first, STAGE:I[,J] (repeatable; B/L: body blocks, I ≥ 1), e.g. stages.2:1")] = None,
    finetune_epochs: StageEpochs = 0,
    distill: Annotated[bool, typer.Option(help="distil the fine-tuning from the unpruned model")] = False,
    data: Data = DEFAULTS.data.dataset,
    data_dir: DataDir = None,
    img_size: ImgSize = None,
    resolution: ResolutionAlias = None,
    lr: LearningRate = 5e-4,
    batch_size: BatchSize = DEFAULTS.data.batch_size,
    alpha: Alpha = DEFAULTS.distill.alpha,
    temperature: Temperature = DEFAULTS.distill.temperature,
    workers: Workers = DEFAULTS.data.workers,
    seed: Seed = DEFAULTS.seed,
    out: Out = Path("runs/prune"),
) -> None:
    """Prune a checkpoint, evaluate it, optionally fine-tune (distilled), evaluate again, save."""
    from vitedge.pruning import PruneConfig
    from vitedge.workflows.prune import DENSE_TEACHER, prune_checkpoint
    from vitedge.workflows.recipes import prune_summary, prune_table
    from vitedge.workflows.training import recipe_config

    config = PruneConfig(ratio=ratio, criterion=criterion, scope=scope, round_to=round_to, stage_widths=stage_widths,
                         drop_blocks=_block_drops(drop_block or []), seed=seed)
    train = recipe_config(finetune_epochs, seed=seed, data=data, root=data_dir, batch_size=batch_size,
                          workers=workers, lr=lr, more={
                              "data.img_size": pick_img_size(img_size, resolution),
                              "distill.teacher": DENSE_TEACHER if distill else None,
                              "distill.alpha": alpha, "distill.temperature": temperature})
    result = prune_checkpoint(checkpoint, config, train=train, finetune=finetune_epochs > 0, out=out)
    render.table(prune_table(result))
    render.line(prune_summary(result))


def _block_drops(specs: list[str]) -> dict[str, list[int]] | None:
    """``["stages.2:1,2"]`` → ``{"stages.2": [1, 2]}``; a malformed one is a usage error."""
    drops: dict[str, list[int]] = {}
    for spec in specs:
        stage, _, blocks = spec.partition(":")
        try:
            drops.setdefault(stage, []).extend(int(b) for b in blocks.split(","))
        except ValueError:
            raise VitedgeError(f"--drop-block {spec!r}: write STAGE:I[,J], e.g. stages.2:1") from None
    return drops or None


@app.command("quantize")
def quantize_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the float model (dense or pruned)")],
    method: Annotated[str, typer.Option(help="trio, minmax, percentile or mse")] = "trio",
    calib: Calib = 1024,
    w_bits: Annotated[int, typer.Option(help="weight bits (2-16)")] = 8,
    a_bits: Annotated[int, typer.Option(help="activation bits (2-16)")] = 8,
    per_channel: Annotated[bool, typer.Option(help="one weight scale per output channel")] = True,
    qat_epochs: StageEpochs = 0,
    qat_lr: Annotated[float, typer.Option(help="QAT peak learning rate of the weights")] = QAT_LR,
    qat_step_lr_mult: Annotated[float, typer.Option(
        help="QAT: the learned step sizes train at --qat-lr times this")] = QAT_STEP_LR_MULT,
    qat_alpha: Annotated[float, typer.Option(
        help="QAT distillation weight (1: match the float model only, no label term)")] = QAT_ALPHA,
    qat_ema: Annotated[float, typer.Option(
        help="QAT: freeze an EMA of the weights and step sizes with this decay instead of the "
             "last step (0: off)")] = QAT_EMA,
    reconstruct: Annotated[int, typer.Option(help=(
        "post-training: learn the step sizes N steps on the calibration set against the float "
        "logits (weights fixed; 0: off)"))] = 0,
    holdout: Annotated[int, typer.Option(
        help="other training images that score the precision plan (0: the calibration images)")] = 256,
    auto_float: Annotated[bool, typer.Option(
        help="keep in float the points this model cannot take in INT8, measured on the held-out images")] = True,
    keep_float: Annotated[list[str] | None, typer.Option(
        help="a point, kind (e.g. attn.num) or layer path to keep in float; repeatable")] = None,
    target: Annotated[str, typer.Option(
        help="the runtime to deploy on: openvino, onnxruntime or tensorrt (points where its int8 kernels "
             "fuse them), or simulation (every point of the Trio-ViT spec)")] = "simulation",
    latency_plan: LatencyPlan = True,
    data: Data = DEFAULTS.data.dataset,
    data_dir: DataDir = None,
    batch_size: BatchSize = DEFAULTS.data.batch_size,
    workers: Workers = DEFAULTS.data.workers,
    seed: Seed = DEFAULTS.seed,
    out: Out = Path("runs/quantize"),
) -> None:
    """Quantize a checkpoint (PTQ, optionally QAT distilled from the float model), evaluate, save."""
    from vitedge.quantization import QuantConfig
    from vitedge.workflows.quantize import quantize_checkpoint
    from vitedge.workflows.recipes import latency_refiner, quantize_notes, quantize_table
    from vitedge.workflows.training import recipe_config

    config = QuantConfig.for_target(target, method=method, w_bits=w_bits, a_bits=a_bits, per_channel=per_channel,
                                    reconstruct_iters=reconstruct, keep_float=tuple(keep_float or ()),
                                    auto_float=auto_float)
    train = recipe_config(qat_epochs, seed=seed, data=data, root=data_dir, batch_size=batch_size,
                          workers=workers, lr=qat_lr, more={
                              "optim.warmup_epochs": 0.0, "optim.step_size_lr_mult": qat_step_lr_mult,
                              "distill.alpha": qat_alpha, "ema.decay": qat_ema or None})
    result = quantize_checkpoint(checkpoint, config, data=train.data, calib=calib, holdout=holdout,
                                 qat=train if qat_epochs > 0 else None, out=out, seed=seed,
                                 refine=latency_refiner(checkpoint, target) if latency_plan else None)
    render.table(quantize_table(result, config))
    for note in quantize_notes(result, config):
        render.line(note)


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="vitedge checkpoint (float or quantized) or a model name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write (.onnx, .safetensors)")],
    format: Annotated[str, typer.Option("--format", help="deployment format: onnx or torch")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (int8: a quantized checkpoint)")] = "fp32",
    img_size: ImgSize = None,
    resolution: ResolutionAlias = None,
    batch_one: Annotated[bool, typer.Option(
        "--batch-one", help="fix the batch at 1 (ONNX): no run-time shape arithmetic, faster at batch 1 "
                            "(the usual edge deployment); the default keeps the batch dynamic")] = False,
) -> None:
    """Export a model for deployment (ONNX FP32/FP16/INT8 QDQ with preprocessing metadata)."""
    from vitedge.workflows.export import export_checkpoint

    path = export_checkpoint(model, output, precision, format=format, resolution=pick_img_size(img_size, resolution),
                             dynamic_batch=not batch_one)
    render.wrote(path, f"{format}, {precision}, {path.stat().st_size / 2**20:.2f} MiB")


@app.command("bench")
def bench_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the float model")],
    int8: Annotated[Path | None, typer.Option(help="its quantized checkpoint (default: calibrate one)")] = None,
    data: OptionalData = None,
    data_dir: DataDir = None,
    eval_limit: Annotated[int | None, typer.Option(help="evaluate on the first N test images")] = None,
    calib: Calib = 512,
    runtime: Annotated[list[str] | None, typer.Option(help="runtimes to try (default: all)")] = None,
    batch_size: Annotated[list[int], typer.Option(help="batch sizes to time")] = [1, 8],  # noqa: B006
    threads: Threads = 2,
    runs: Runs = 30,
    nncf: Annotated[bool, typer.Option(
        help="add the NNCF anchor rows (nncf.quantize on the same FP32 ONNX and calibration images, "
             "on OpenVINO)")] = True,
    latency_plan: LatencyPlan = True,
    out: Out = Path("runs/bench"),
) -> None:
    """Every runtime × precision: file size, accuracy, latency (median/p90), throughput — beside
    NNCF's INT8 on OpenVINO."""
    from vitedge.bench.deployment import bench_markdown
    from vitedge.workflows.bench import bench_checkpoint

    rows = bench_checkpoint(checkpoint, out=out, quantized=int8, data=data, root=data_dir, eval_limit=eval_limit,
                            calib=calib, runtimes=runtime, batch_sizes=batch_size, threads=threads, runs=runs,
                            nncf=nncf, latency_plan=latency_plan)
    render.line(bench_markdown(rows, batch_size), wrap=False)
    render.wrote(f"{out}/bench.md and bench.json")


@app.command("search")
def search_command(
    checkpoint: Annotated[Path, typer.Argument(help="vitedge checkpoint of the trained dense model")],
    runtime: Annotated[str, typer.Option(help="onnxruntime or openvino: where the model will run")] = "openvino",
    precision: Annotated[str, typer.Option(
        help="int8 (quantized for the runtime), fp32, or bf16 (OpenVINO on a CPU with native bf16)")] = "int8",
    latency_ms: Annotated[float | None, typer.Option(help="the budget: milliseconds at batch 1")] = None,
    speedup: Annotated[float | None, typer.Option(
        help="the budget: times faster than the dense FP32 model on the runtime (with --match-uniform: than "
             "the uniform model)")] = None,
    match_uniform: Annotated[float | None, typer.Option(
        help="the budget: as fast as uniform pruning at this grid ratio (measured in the latency table)")] = None,
    max_macs: Annotated[float | None, typer.Option(
        help="also keep at most this share of the dense model's MACs, e.g. 0.6")] = None,
    ratio: Annotated[list[float] | None, typer.Option(
        help="a per-stage pruning ratio of the grid (repeatable; default 0.2 0.4 0.6)")] = None,
    finetune_epochs: StageEpochs = 0,
    lr: LearningRate = 5e-4,
    data: Data = DEFAULTS.data.dataset,
    data_dir: DataDir = None,
    img_size: ImgSize = None,
    batch_size: BatchSize = DEFAULTS.data.batch_size,
    workers: Workers = DEFAULTS.data.workers,
    images: Annotated[int, typer.Option(min=1, help="held-out training images that score each cut")] = 256,
    calib: Calib = 256,
    threads: Annotated[int, typer.Option(min=1, help="runtime threads")] = 1,
    runs: Runs = 50,
    stage_widths: Annotated[bool, typer.Option(
        help="also prune each stage's residual width (Microsoft M models; MIT models have none)")] = True,
    depth: Annotated[bool, typer.Option(
        help="also search how many whole blocks each stage keeps")] = True,
    seed: Seed = DEFAULTS.seed,
    out: Out = Path("runs/search"),
) -> None:
    """Search per-stage pruning under a latency budget measured on the runtime, then fine-tune
    (distilled), quantize for the runtime, export and time the winner beside the dense model."""
    from vitedge.bench.latency_model import DEFAULT_RATIOS
    from vitedge.workflows.prune import DENSE_TEACHER
    from vitedge.workflows.search import SearchRequest, search_checkpoint
    from vitedge.workflows.training import recipe_config

    train = recipe_config(finetune_epochs, seed=seed, data=data, root=data_dir, batch_size=batch_size,
                          workers=workers, lr=lr, more={"data.img_size": img_size,
                                                         "distill.teacher": DENSE_TEACHER})
    request = SearchRequest(checkpoint, train.data, runtime, precision, latency_ms=latency_ms, speedup=speedup,
                            match_ratio=match_uniform, max_macs=max_macs, ratios=tuple(ratio or DEFAULT_RATIOS),
                            finetune=train if finetune_epochs > 0 else None, images=images, threads=threads,
                            runs=runs, seed=seed, stage_widths=stage_widths, depth=depth, out=out)
    run = search_checkpoint(request, calib=calib, log=lambda text: render.line(text))
    render.line(run.summary())
    render.wrote(out / "search.json")


@app.command("predict")
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="image files to classify")],
    model: Annotated[Path, typer.Option(help="vitedge checkpoint or exported .onnx file")],
    top: Annotated[int, typer.Option(help="how many classes to list per image")] = 5,
    threads: Threads = None,
) -> None:
    """Top-k class names (with probabilities) of image files, from a checkpoint or an ONNX export."""
    from vitedge.deploy.predict import load_predictor

    for path, ranked in load_predictor(model, threads=threads).predict(images, top=top):
        render.line(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked), wrap=False)


@app.command("study")
def study_command(
    config: Annotated[Path | None, typer.Option(help="study YAML (see configs/study.yaml)")] = None,
    preset: Annotated[str, typer.Option(help="quick (the demo) or full (the CIFAR-10 study)")] = "quick",
    name: Annotated[str | None, typer.Option(help="run folder name under --out")] = None,
    task: Annotated[str | None, typer.Option(
        help="classification, or seg (a segmentation model on camvid/cityscapes; mIoU)")] = None,
    data: OptionalData = None,
    data_dir: DataDir = None,
    checkpoint: Annotated[Path | None, typer.Option(help="trained vitedge checkpoint (skips training)")] = None,
    model: Annotated[str | None, typer.Option(help="model to train when there is no checkpoint")] = None,
    out: Annotated[Path | None, typer.Option(help="runs folder (default runs)")] = None,
    threads: Threads = None,
    show_config: Annotated[bool, typer.Option(help="print the resolved config as YAML and stop")] = False,
) -> None:
    """Run the whole study: baseline → prune + fine-tune → INT8 → ONNX → runtime → report.

    Re-running the same command resumes a killed study and skips every finished stage.
    """
    from vitedge.report import study_with_report
    from vitedge.study import load_study_config
    from vitedge.workflows.study_options import study_overrides

    base = load_study_config(config, preset=preset)
    study = load_study_config(config, preset=preset, overrides=study_overrides(
        base.name, base.data.dataset, base.model, name=name, task=task, data=data, root=data_dir,
        checkpoint=checkpoint, model=model, out=out, threads=threads))
    if show_config:
        import yaml

        typer.echo(yaml.safe_dump(study.to_dict(), sort_keys=False).rstrip())
        return
    result = study_with_report(study, log=render.line)
    render.line(f"report: {result.report} (+ report.html, results.json, results.csv, plots/)")
