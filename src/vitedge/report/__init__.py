"""The study report: ``report.md``, ``report.html`` (self-contained), ``results.json``,
``results.csv`` and the plots under ``plots/``, all written atomically into the run folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vitedge.io import write_text
from vitedge.report.document import Document
from vitedge.report.environment import environment
from vitedge.report.plots import plot_accuracy_vs_latency, plot_accuracy_vs_macs
from vitedge.report.search import (
    kept_channels,
    plot_kept_channels,
    search_latency_table,
    search_record,
    search_summary,
)
from vitedge.report.tables import (
    Row,
    breakdown_table,
    deployment_table,
    pareto,
    pick,
    recommend,
    study_rows,
    study_tables,
)
from vitedge.study import StudyConfig, StudyResult, run_study
from vitedge.tables import Table

__all__ = ["Row", "breakdown_table", "pareto", "recommend", "study_rows", "study_tables", "study_with_report",
           "write_report"]


def study_with_report(config: StudyConfig, *, log: Callable[[str], None] = print) -> StudyResult:
    """Run (or resume) the study ``config`` describes, then write its report (``result.report``)."""
    result = run_study(config, log=log)
    result.report = write_report(result, log=log)
    log(f"study {config.name}: report in {result.report} ({result.seconds / 60:.1f} min)")
    return result


def write_report(result: StudyResult, *, log: Callable[[str], None] = print) -> Path:
    """Write every report file of a finished study; returns the Markdown report's path."""
    config, variants, run_dir, hardware = result.config, result.variants, result.run_dir, result.hardware
    every = study_rows(variants)  # every runtime × precision
    chosen = pick(every, config.report.max_drop)
    runtime = chosen.runtime  # Tables 1-3 and the plots show the recommended deployment's runtime
    rows = study_rows(variants, runtime)
    d = config.deploy
    task = config.task_object
    metric = task.label
    plots = run_dir / "plots"
    figures = [
        (plot_accuracy_vs_latency(rows, plots / "accuracy_vs_latency.png", runtime=runtime, threads=d.threads,
                                  batch=d.batch_size, metric=metric),
         "accuracy vs latency, Pareto front marked"),
        (plot_accuracy_vs_macs(rows, plots / "accuracy_vs_macs.png", metric), "accuracy vs MACs"),
    ]
    ranges = result.channel_ranges
    if ranges is not None:
        figures.append((Path(ranges["plot"]), f"per-channel input ranges of the dense model's first quantized "
                        f"convs ({ranges['runtime']} INT8 file), before and after the Trio-ViT transforms"))
    hardware = hardware or {}
    breakdown = hardware.get("breakdown")
    if breakdown:
        figures.append((Path(breakdown["plot"]),
                        "where ONNX Runtime spends the dense model's time, per operator kind, beside the "
                        "roofline floor"))

    doc = Document(f"vitedge study: {config.name}")
    p = config.pruning
    dense = variants[0]
    reference = "the dense FP32 model"
    same_budget = ""
    if "score_baseline" in dense.metrics:  # the dense model got the pruned models' fine-tuning too
        reference = "the dense FP32 model (fine-tuned with the same budget)"
        distilled = ", distilled from the baseline" if p.finetune.distill.teacher else ""
        same_budget = (f" The dense reference got the same fine-tuning budget as the pruned models "
                       f"({p.finetune.epochs} epochs at lr {p.finetune.lr:g}, the same crops{distilled}; "
                       f"{metric} "
                       f"{dense.metrics['score_baseline']:.2f} → {dense.metrics['score_fp32']:.2f} % in PyTorch), "
                       "so every Δ measures pruning, not extra training.")
    source = f"checkpoint `{config.checkpoint}`" if config.checkpoint else \
        f"trained here for {config.baseline.epochs} epochs"
    subset = ""
    if config.data.train_limit or config.data.eval_limit:
        subset = (f" (subsets: {config.data.train_limit or 'all'} training and {config.data.eval_limit or 'all'} "
                  "test images)")
    where = task.measured_at(config.data.img_size, d.seg_latency_size)
    distillation = " with distillation" if p.finetune.distill.teacher else ""
    doc.paragraph(f"{config.model} on {config.data.dataset} {where}{subset}; baseline "
                  f"{source}. Pruning: {p.criterion}, {p.scope} scope, fine-tuned "
                  f"{p.finetune.epochs} epochs{distillation}.{same_budget} "
                  f"INT8: {config.quantization.method} W{config.quantization.w_bits}A{config.quantization.a_bits}, "
                  f"{config.quantization.calib} calibration images"
                  f"{f', QAT {config.quantization.qat.epochs} epochs' if config.quantization.qat.epochs else ''}. "
                  f"Deployed as ONNX on {', '.join(sorted({r.runtime for r in every}))} "
                  f"({'every runtime installed here' if d.runtime == 'auto' else 'deploy.runtime'}; each INT8 file "
                  f"quantized for its runtime): accuracy on the test split measured on the runtime, latency batch "
                  f"{d.batch_size}, {d.threads} threads, median of {d.runs} runs alternated across all models of a "
                  f"runtime. Tables 1–3 show {runtime}, the runtime of the recommendation.")
    doc.heading("Recommendation")
    recommendation = recommend(every, config.report.max_drop, metric, reference)
    doc.paragraph(recommendation)
    doc.heading("Results")
    doc.table(deployment_table(every, chosen, metric))
    for table in study_tables(rows, variants, runtime, d.accelerator if hardware.get("fpga") else None,
                              metric, task.latency_sizes(None, d.seg_latency_size).get("_hi")):
        doc.table(table)
    if hardware.get("fpga_note"):
        doc.paragraph(f"No FPGA estimate: {hardware['fpga_note']}.")
    if breakdown:
        doc.table(breakdown_table(breakdown))
    searched = [v for v in variants if v.search is not None]
    search = None
    if searched:
        kept = kept_channels(variants)
        search = search_record(variants, kept)
        doc.heading("Searched pruning")
        for model in searched:
            doc.paragraph(search_summary(model, metric))
        latency = search_latency_table(variants, searched[0])
        if latency is not None:
            doc.table(latency)
        figures.append((plot_kept_channels(kept, plots / "kept_channels.png"),
                        "prunable channels kept per stage: dense, uniform and searched"))
    doc.heading("Plots")
    for path, caption in figures:
        doc.image(path, caption)
    if ranges is not None:
        doc.paragraph("Grid levels of one per-tensor INT8 scale that the median channel spans, before → after: "
                      f"{ranges['detail']}.")
    doc.heading("Environment")
    env = environment(d.threads)
    doc.pairs(env)
    doc.paragraph(f"Config: `{run_dir / 'config.json'}`; every artifact (checkpoints, ONNX files, stage "
                  "records) lies beside this report.")

    results = {"config": config.to_dict(), "environment": env, "metric": task.metric, "metric_label": metric,
               "rows": [r.to_dict() for r in every],
               "pareto": [r.label for r in pareto(every)],
               "recommendation": recommendation, "recommended": chosen.to_dict(),
               "breakdown": breakdown, "search": search}
    csv_text = Table("", list(every[0].to_dict()), [list(r.to_dict().values()) for r in every]).csv()
    markdown, page = doc.markdown(run_dir), doc.html()
    for name, text in (("results.json", json.dumps(results, indent=2)), ("results.csv", csv_text),
                       ("report.html", page), ("report.md", markdown)):
        write_text(run_dir / name, text)
    log(markdown)
    return run_dir / "report.md"

