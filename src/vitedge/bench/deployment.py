"""``vitedge bench``: one model on every runtime × precision this machine has — file size,
accuracy, latency at each batch size (median / p90) and throughput — as one table, with a ✗ and
the reason for every combination that cannot run.

The rows come from :data:`vitedge.deploy.RUNTIMES`. Accuracy is measured in this process;
every latency in a fresh process (:mod:`vitedge.bench.latency_worker`), so no engine's threads
slow another's.

Example::

    rows = bench_deployment("runs/b0/model.safetensors", out="runs/bench",
                            data=DataConfig(dataset="cifar10", root="data/cifar10"), eval_limit=2000)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vitedge.bench.float_glue import check_float_glue
from vitedge.bench.latency_plan import latency_plan
from vitedge.bench.nncf_anchor import nncf_available, nncf_quantize, nncf_version
from vitedge.deploy import RUNTIMES, export, get_runtime, load_runtime
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle, write_text
from vitedge.quantization import QuantConfig, is_quantized, load_quantized, quantize, replan, save_quantized
from vitedge.quantization.config import TARGETS
from vitedge.train.task_data import TaskData
from vitedge.train.tasks import task_scored_by
from vitedge.workers import run_json_worker

if TYPE_CHECKING:
    from vitedge.train.config import DataConfig

__all__ = ["bench_deployment", "bench_markdown", "latency_in_subprocess", "runtime_score"]


def bench_deployment(
    checkpoint: str | os.PathLike,
    *,
    out: str | os.PathLike,
    quantized: str | os.PathLike | None = None,
    data: DataConfig | None = None,
    eval_limit: int | None = None,
    calib: int = 512,
    runtimes: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8),
    threads: int = 2,
    runs: int = 30,
    warmup: int = 5,
    nncf_presets: Sequence[str] = ("performance", "transformer"),
    latency_plan: bool = True,
) -> list[dict[str, Any]]:
    """Benchmark the float ``checkpoint`` (and its INT8 version: ``quantized``, or quantized here
    with the Trio-ViT engine on ``calib`` training images of ``data``, once per runtime for that
    runtime's target, so each runs the graph it fuses) on every runtime.

    Returns one row per runtime × precision, then one per NNCF preset in ``nncf_presets`` (the
    anchor: ``nncf.quantize`` on the same FP32 ONNX file and the same ``calib`` images, run on
    OpenVINO; ✗ with the reason when nncf or openvino is missing); the ``quantizer`` column
    says whose INT8 each row is. With ``latency_plan``, each INT8 model quantized here also keeps in
    float the attention or depthwise points that run faster so on its runtime
    (:mod:`vitedge.bench.latency_plan`). Writes ``bench.json`` and ``bench.md`` to ``out``.
    """

    if any(b < 1 for b in batch_sizes) or runs < 1 or threads < 1:
        raise VitedgeError("batch sizes, runs and threads must all be at least 1")
    specs = [get_runtime(name) for name in runtimes] if runtimes else list(RUNTIMES)
    for spec in specs if runtimes else ():  # asked for by name: it must run (all of them: a ✗ row)
        ok, why = spec.available()
        if not ok:
            raise VitedgeError(f"runtime {spec.name} is not available: {why}")
    out_dir = Path(out)
    checkpoint = Path(checkpoint)
    bundle = load_bundle(checkpoint)
    model, extra, data_config = bundle.model, bundle.extra, bundle.data_config
    resolution = int(data_config["input_size"][-1])
    task = None
    if data is not None:
        task = TaskData(data, data_config, extra.get("classes"))

    calib_batches = task.sample(calib) if task is not None else []  # vitedge's and NNCF's INT8 alike
    # the precision plan scores on other training images, as `vitedge quantize` does
    holdout = task.sample(256, skip=calib) if task is not None and quantized is None else []
    # each runtime runs the INT8 graph quantized for it (or the one given, whatever its target)
    targets = {spec.name: _int8_target(spec.name) for spec in specs if "int8" in spec.precisions
               and spec.available()[0]}
    qmodels, int8_reason = _int8_models(model, quantized, task, calib_batches, out_dir, set(targets.values()),
                                        resolution if latency_plan else None, threads, holdout)
    files: dict[tuple[str, str], Path | str] = {("torch", "fp32"): checkpoint}
    for precision in ("fp32", "fp16"):
        files["onnx", precision] = export(model, out_dir / f"model_{precision}.onnx", precision,
                                          classes=task.classes if task else extra.get("classes"),
                                          data_config=extra.get("data_config"))
    int8_files: dict[str, Path] = {}
    for target, qmodel in qmodels.items():
        name = "model_int8.onnx" if quantized else f"model_int8_{target}.onnx"
        int8_files[target] = export(qmodel, out_dir / name, "int8",
                                    classes=task.classes if task else extra.get("classes"),
                                    data_config=extra.get("data_config"))

    rows = []
    for spec in specs:
        for precision in spec.precisions:
            row: dict[str, Any] = {"runtime": spec.name, "precision": precision, "ok": False,
                                   "quantizer": "vitedge" if precision == "int8" else ""}
            rows.append(row)
            ok, why = spec.available()
            if precision == "int8":
                target = "given" if quantized else targets.get(spec.name, "")
                qmodel = qmodels.get(target)
                if qmodel is not None:
                    row["quantizer"] = f"vitedge ({qmodel.quant_config.target} target)"
                artifact: Path | str = int8_reason if qmodel is None else (
                    (Path(quantized) if quantized else out_dir / f"int8_{target}.safetensors")
                    if spec.format == "torch" else int8_files[target])
            else:
                qmodel = None
                artifact = files.get((spec.format, spec.file_precision(precision)), "no such file")
            if not ok or not isinstance(artifact, Path):
                row["reason"] = why or str(artifact)
                continue
            model_for = qmodel if precision == "int8" else model  # torch runs a model
            _measure(row, spec.name, model_for, artifact, precision, task, eval_limit, list(batch_sizes),
                     resolution, threads, runs, warmup)
    if any(spec.name == "openvino" for spec in specs):
        fp32 = files["onnx", "fp32"]
        calib_images = [b.numpy() for b in calib_batches]
        for preset in nncf_presets:
            rows.append(_nncf_row(preset, fp32, calib_images, out_dir, task, eval_limit, list(batch_sizes),
                                  resolution, threads, runs, warmup))
    text = json.dumps({"checkpoint": str(checkpoint), "resolution": resolution, "threads": threads,
                       "batch_sizes": list(batch_sizes), "rows": rows}, indent=2)
    write_text(out_dir / "bench.json", text)
    markdown = bench_markdown(rows, batch_sizes)
    write_text(out_dir / "bench.md", markdown)
    return rows


def _measure(row: dict[str, Any], runtime: str, model: torch.nn.Module | None, artifact: Path, precision: str,
             task: Any, eval_limit: int | None, batch_sizes: list[int], resolution: int, threads: int, runs: int,
             warmup: int) -> None:
    """Fill ``row`` with the size, score (when there is data) and latencies of ``artifact``."""
    row["file"], row["size_mib"] = str(artifact), _file_mib(artifact)
    try:
        if task is not None:
            found: dict[str, float] = {}
            row["metric"] = task.metric
            row["score"] = runtime_score(runtime, model, artifact, precision, task, eval_limit, threads,
                                         agreement=found if precision == "int8" else None)
            if "agreement" in found:  # how often the runtime predicts what the simulation does
                row["sim_agreement"] = found["agreement"]
        row["latency"] = _latencies(runtime, artifact, precision, batch_sizes, resolution, threads, runs, warmup)
    except VitedgeError as err:
        row["reason"] = str(err)
        return
    row["ok"] = True


def _file_mib(path: Path) -> float:
    """Size of a model file; an OpenVINO IR counts its ``.bin`` too."""
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size / 2**20


def _nncf_row(preset: str, fp32: Path | str, calib_images: list[np.ndarray], out_dir: Path, task: Any,
              eval_limit: int | None, batch_sizes: list[int], resolution: int, threads: int, runs: int,
              warmup: int) -> dict[str, Any]:
    """The NNCF anchor row for ``preset``: its INT8 IR on OpenVINO."""
    row: dict[str, Any] = {"runtime": "openvino", "precision": "int8", "ok": False, "quantizer": f"NNCF {preset}"}
    ok, why = nncf_available()
    if not ok:
        row["reason"] = why
        return row
    row["quantizer"] = f"NNCF {nncf_version()} {preset}"
    if not isinstance(fp32, Path):
        row["reason"] = f"no FP32 ONNX file: {fp32}"
        return row
    if not calib_images:
        row["reason"] = "no calibration images: pass --data"
        return row
    try:
        artifact = nncf_quantize(fp32, calib_images, out_dir / f"nncf_{preset}.xml", preset)
    except VitedgeError as err:
        row["reason"] = str(err)
        return row
    except Exception as err:  # NNCF's own failures: the anchor row says so instead of ending the bench
        row["reason"] = f"nncf.quantize failed: {str(err).splitlines()[0][:160]}"
        return row
    _measure(row, "openvino", None, artifact, "int8", task, eval_limit, batch_sizes, resolution, threads, runs,
             warmup)
    return row


def bench_markdown(rows: list[dict[str, Any]], batch_sizes: Sequence[int]) -> str:
    """The table of :func:`bench_deployment` rows (latency in ms, median / p90); ``quantizer``
    says whose INT8 a row runs (vitedge's or an NNCF preset's, with NNCF's version); ``= sim``
    how often a vitedge INT8 file predicts on the runtime what its PyTorch simulation predicts."""
    metric = next((r["metric"] for r in rows if "metric" in r), "top1")
    head = ["runtime", "precision", "quantizer", "ok", "size MiB", f"{task_scored_by(metric).label} %", "= sim %"]
    head += [f"b{b} ms (p90)" for b in batch_sizes] + [f"b{batch_sizes[-1]} img/s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["runtime"], r["precision"], r.get("quantizer", ""), "✓" if r["ok"] else "✗",
                 f"{r['size_mib']:.2f}" if "size_mib" in r else "", f"{r['score']:.2f}" if "score" in r else "",
                 f"{r['sim_agreement']:.2f}" if "sim_agreement" in r else ""]
        lat = r.get("latency") or []
        cells += [f"{x['median_ms']:.2f} ({x['p90_ms']:.2f})" for x in lat] or [""] * len(batch_sizes)
        cells += [f"{lat[-1]['throughput']:.0f}" if lat else "", r.get("reason", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _int8_target(runtime: str) -> str:
    """The quantization target whose graph ``runtime`` runs (PyTorch runs ONNX Runtime's, which
    the simulation matches bit for bit)."""
    return runtime if runtime in TARGETS else "onnxruntime"


def _int8_models(model: torch.nn.Module, quantized: str | os.PathLike | None, task: Any,
                 calib_batches: list[torch.Tensor], out_dir: Path, targets: set[str],
                 plan_resolution: int | None = None, threads: int = 2,
                 holdout: list[torch.Tensor] | None = None) -> tuple[dict[str, torch.nn.Module], str]:
    """The INT8 model of each target (``{"given": model}`` when ``quantized`` is passed), or the
    reason there is none; with ``plan_resolution``, CPU targets get a latency plan timed there."""
    if quantized is not None:
        qmodel = load_quantized(quantized)
        if not is_quantized(qmodel):
            raise VitedgeError(f"{quantized} is not a quantized checkpoint; make one with `vitedge quantize`")
        return {"given": qmodel}, ""
    if task is None:
        return {}, "no INT8 model: pass --int8 QUANTIZED_CKPT, or --data to calibrate one"
    qmodels = {}
    for target in sorted(targets):
        qmodel = quantize(model, calib_batches, config=QuantConfig.for_target(target, method="trio"),
                          holdout=holdout or None)
        if plan_resolution is not None and target in ("openvino", "onnxruntime"):
            latency_plan(qmodel, resolution=plan_resolution, threads=threads)
            if holdout:
                replan(qmodel, model, holdout)
        check_float_glue(qmodel, holdout or calib_batches, threads=threads)
        save_quantized(qmodel, out_dir / f"int8_{target}.safetensors", extra={"classes": task.classes})
        qmodels[target] = qmodel
    return qmodels, ""


@torch.no_grad()
def runtime_score(runtime: str, model: torch.nn.Module | None, artifact: Path, precision: str, task: Any,
                  eval_limit: int | None, threads: int, agreement: dict[str, float] | None = None) -> float:
    """The score (percent: the task's metric, top-1 or mIoU) of ``artifact`` (or ``model``, for
    the torch runtime) on ``task``'s (a TaskData) test split. With ``agreement`` (a dict) and ``model`` for a
    runtime other than torch, also the percentage of images (pixels) on which the runtime predicts
    what ``model`` (the PyTorch simulation of the file) predicts, stored under ``"agreement"``."""
    engine = load_runtime(runtime, model if runtime == "torch" else artifact, precision=precision,
                          threads=threads)
    reference = model if agreement is not None and runtime != "torch" and model is not None else None
    dataset = task.eval_set
    if eval_limit:
        dataset = torch.utils.data.Subset(dataset, range(min(eval_limit, len(dataset))))
    same = seen = 0

    def compare(images: torch.Tensor, outputs: np.ndarray) -> None:
        nonlocal same, seen
        if reference is not None:
            expected = reference.eval()(images).argmax(dim=1).numpy()
            same += int((outputs.argmax(axis=1) == expected).sum())
            seen += expected.size

    scorer = task.task.scorer(task.classes)
    try:
        for images, targets in torch.utils.data.DataLoader(dataset, batch_size=task.task.eval_batch):
            outputs = engine(images.numpy())
            compare(images, outputs)
            scorer.update(torch.from_numpy(outputs), targets)
        return scorer.score()
    finally:
        if reference is not None and seen:
            agreement["agreement"] = 100.0 * same / seen


def _latencies(runtime: str, artifact: Path, precision: str, batches: Sequence[int], resolution: int,
               threads: int, runs: int, warmup: int) -> list[dict[str, Any]]:
    """The latency of ``artifact`` at each batch size, measured in one fresh process."""
    result = _run_worker(runtime, [(artifact, precision)], batches=batches, resolution=resolution,
                         threads=threads, runs=runs, warmup=warmup)
    return [result["batches"][str(b)][str(artifact)] for b in batches]


def latency_in_subprocess(runtime: str, sources: Sequence[tuple[str | os.PathLike, str]], *, batch: int,
                          resolution: int | tuple[int, int], threads: int, runs: int,
                          warmup: int) -> dict[str, dict[str, Any]]:
    """Latency of each ``(file, precision)`` on ``runtime``, measured in one fresh process with
    the runs alternated across the files; keyed by the file path as given."""
    result = _run_worker(runtime, sources, batches=[batch], resolution=resolution, threads=threads, runs=runs,
                         warmup=warmup)
    return result["batches"][str(batch)]


def _run_worker(runtime: str, sources: Sequence[tuple[str | os.PathLike, str]], *, batches: Sequence[int],
                resolution: int | tuple[int, int], threads: int, runs: int, warmup: int) -> dict[str, Any]:
    """Run :mod:`vitedge.bench.latency_worker` once and return its JSON line."""
    cmd = [sys.executable, "-m", "vitedge.bench.latency_worker", "--runtime", runtime,
           "--resolution", str(resolution) if isinstance(resolution, int) else "{}x{}".format(*resolution),
           "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    for batch in batches:
        cmd += ["--batch", str(batch)]
    for path, precision in sources:
        cmd += ["--source", str(path), "--precision", precision]
    return run_json_worker(cmd, threads, f"the {runtime} latency run")
