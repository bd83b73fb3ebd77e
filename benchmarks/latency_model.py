"""How well the latency model predicts: per model, runtime and precision, measure the per-stage
table (:mod:`vitedge.bench.latency_model`), then time ``--configs`` random per-stage pruning
configurations and compare each with its prediction. Target: median absolute error ≤ 10 %.

Writes ``results.json`` (every table and every configuration) and ``results.md``.

Example::

    python benchmarks/latency_model.py --models efficientvit_b0 --runtimes onnxruntime openvino \\
        --precisions fp32 int8 --resolution 224 --configs 20 --out runs/latency_model
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from vitedge.bench.latency_model import DEFAULT_RATIOS, check_table, machine_fingerprint, measure_table
from vitedge.io import write_json, write_text
from vitedge.models.checkpoint import resolve_model
from vitedge.pruning.pruner import stage_names
from vitedge.tables import Table

ACCEPT_ERROR = 0.10  # median absolute error, a share of the measured latency


def random_configs(stages: list[str], ratios: tuple[float, ...], count: int,
                   seed: int) -> list[dict[str, float]]:
    """``count`` configurations, each stage pruned by a grid ratio or left dense (seeded)."""
    rng = random.Random(seed)
    choices = (0.0, *ratios)
    configs = []
    while len(configs) < count:
        config = {stage: r for stage in stages if (r := rng.choice(choices)) > 0}
        if config and config not in configs:
            configs.append(config)
    return configs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["efficientvit_b0"], help="names or checkpoints")
    p.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS))
    p.add_argument("--configs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage-widths", action="store_true",
                   help="prune a Microsoft model's residual stage widths with their stage (as the search does)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, *sys.argv])
    results: list[dict[str, Any]] = []
    for spec in args.models:
        model = resolve_model(spec, num_classes=10).eval()
        name = Path(spec).stem if Path(spec).is_file() else spec
        configs = random_configs(stage_names(model), tuple(args.ratios), args.configs, args.seed)
        for runtime in args.runtimes:
            for precision in args.precisions:
                widths = "_sw" if args.stage_widths else ""
                cache = args.out / "tables" / f"{name}_{runtime}_{precision}_{args.resolution}{widths}.json"
                table = measure_table(model, runtime=runtime, precision=precision, resolution=args.resolution,
                                      name=name, threads=args.threads, ratios=args.ratios, runs=args.runs,
                                      rounds=args.rounds, cache=cache,
                                      stage_widths=args.stage_widths)
                checked = check_table(model, table, configs, runs=args.runs, rounds=args.rounds)
                results.append({"model": name, "runtime": runtime, "precision": precision,
                                "table": table.to_dict(), **checked})
                print(f"{name} {runtime} {precision}: median |error| {checked['median_abs_error']:.1%} over "
                      f"{len(configs)} configurations (dense drift {checked['dense_drift']:+.1%})")
                write_json(args.out / "results.json", {"command": command, "machine": machine_fingerprint(),
                                                       "results": results}, indent=1)
    table = Table("", ["model", "runtime", "precision", "dense ms", "configs", "median |error|",
                       "max |error|", f"≤ {ACCEPT_ERROR:.0%}"],
                  [[r["model"], r["runtime"], r["precision"], f"{r['table']['dense_ms']:.2f}",
                    str(len(r["rows"])),
                    f"{r['median_abs_error']:.1%}", f"{max(abs(x['error']) for x in r['rows']):.1%}",
                    "✓" if r["median_abs_error"] <= ACCEPT_ERROR else "✗"] for r in results])
    text = f"Machine: {machine_fingerprint()}\n\n{table.markdown()}\n\nCommand: `{command}`\n"
    write_text(args.out / "results.md", text)
    print(f"wrote {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
