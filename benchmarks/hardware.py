"""Hardware cost models against their references (issue 9).

1. The Trio-ViT FPGA accelerator model with its published defaults: peak GOPS, and FPS / GOPS /
   MAC utilisation of B1 at 224/256/288 and B2 at 224 beside the authors' early cycle model
   scaled to 2,048 multipliers (≈ 800 / 617 / 476 / 263 FPS); a 40 %-pruned B1 (cycle ratio vs
   MAC ratio); a memory-starved configuration (DDR bandwidth cut) and how many layers turn
   memory-bound.
2. The CPU breakdown of B1 and M0 on ONNX Runtime and on OpenVINO (each profiled in a fresh
   process): the share of the end-to-end latency the per-node times account for (acceptance
   ≥ 90 %), time per operator kind beside its roofline floor, and the three kinds furthest from it.

Writes ``results.json``, ``results.md`` and ``breakdown.png`` to ``--out``.

Example::

    python benchmarks/hardware.py --out runs/hardware --threads 2 --runs 200
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import vitedge
from vitedge.hardware.accelerator import estimate, get_accelerator
from vitedge.hardware.roofline import cpu_breakdown, measure_peaks, plot_breakdown
from vitedge.io import atomic_write

# The authors' early cycle model scaled to (8×8 + 8×8) × 16 at 200 MHz (the spec's arithmetic).
REFERENCE_FPS = {
    ("efficientvit_b1", 224): 800.0,
    ("efficientvit_b1", 256): 617.0,
    ("efficientvit_b1", 288): 476.0,
    ("efficientvit_b2", 224): 263.0,
}
ACCEPT_FPS_REL = 0.10
ACCEPT_UTIL = (0.90, 0.97)
ACCEPT_ACCOUNTED = 0.90


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=200, help="profiled ORT runs per model")
    p.add_argument("--breakdown-models", default="efficientvit_b1,efficientvit_m0")
    p.add_argument("--breakdown-runtimes", default="onnxruntime,openvino")
    p.add_argument("--starved-ddr-gbps", type=float, default=0.5)
    args = p.parse_args(argv)
    command = "python benchmarks/hardware.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    start = time.perf_counter()

    cfg = get_accelerator("trio-zcu102")
    fpga = []
    for (name, res), ref in REFERENCE_FPS.items():
        s = estimate(vitedge.create_model(name), cfg, resolution=res).summary()
        s.update(
            reference_fps=ref, deviation=s["fps"] / ref - 1, ok=abs(s["fps"] / ref - 1) <= ACCEPT_FPS_REL
        )
        fpga.append(s)
        print(
            f"{name} @{res}: {s['fps']:.1f} FPS (ref {ref:.0f}, {100 * s['deviation']:+.1f} %), "
            f"{s['gops']:.1f} GOPS, util {100 * s['mac_utilisation']:.1f} %",
            flush=True,
        )
    b1 = vitedge.create_model("efficientvit_b1")
    dense = estimate(b1, cfg)
    pruned = estimate(vitedge.prune(b1, ratio=0.4, criterion="l2"), cfg)
    prune_row = {
        "ratio": 0.4,
        "fps_dense": dense.fps,
        "fps_pruned": pruned.fps,
        "mac_ratio": pruned.macs / dense.macs,
        "cycle_ratio": pruned.cycles / dense.cycles,
    }
    starved_cfg = cfg.with_overrides(ddr_gbps=args.starved_ddr_gbps)
    starved = estimate(b1, starved_cfg)
    starved_row = {
        "ddr_gbps": args.starved_ddr_gbps,
        "fps": starved.fps,
        "memory_bound_layers": len(starved.memory_bound_layers),
        "layers": len(starved.layers),
        "default_memory_bound_layers": len(dense.memory_bound_layers),
    }

    peaks = measure_peaks(args.threads)
    breakdowns = []
    for runtime, name in itertools.product(
        args.breakdown_runtimes.split(","), args.breakdown_models.split(",")
    ):
        bd = cpu_breakdown(
            vitedge.create_model(name), threads=args.threads, runs=args.runs, peaks=peaks, runtime=runtime
        )
        print(
            f"{name} on {runtime}: nodes {bd.node_ms:.3f} ms of {bd.latency_ms:.3f} ms = "
            f"{100 * bd.accounted:.1f} %; furthest from the floor: "
            f"{', '.join(r.kind for r in bd.furthest_from_floor())}",
            flush=True,
        )
        breakdowns.append(bd)
    plot = plot_breakdown(breakdowns, args.out / "breakdown.png")

    results = {
        "command": command,
        "seconds": time.perf_counter() - start,
        "accelerator": cfg.name,
        "peak_gops": cfg.peak_gops,
        "fpga": fpga,
        "pruned": prune_row,
        "starved": starved_row,
        "b1_util_ok": ACCEPT_UTIL[0] <= dense.utilisation <= ACCEPT_UTIL[1],
        "assumptions": dense.assumptions,
        "peaks": breakdowns[0].peaks.__dict__ if breakdowns else None,
        "breakdowns": [bd.to_dict() for bd in breakdowns],
    }
    text = json.dumps(results, indent=2)
    atomic_write(args.out / "results.json", lambda tmp: Path(tmp).write_text(text))
    markdown = _markdown(results, breakdowns, plot)
    atomic_write(args.out / "results.md", lambda tmp: Path(tmp).write_text(markdown))
    print(markdown)
    ok = (
        all(r["ok"] for r in fpga)
        and results["b1_util_ok"]
        and all(bd.accounted >= ACCEPT_ACCOUNTED for bd in breakdowns if bd.runtime == "onnxruntime")
    )
    return 0 if ok else 1


def _markdown(results: dict, breakdowns: list, plot: Path) -> str:
    lines = [
        f"Peak of the default array: {results['peak_gops']:.1f} GOPS.",
        "",
        "| model | res | FPS | reference FPS | deviation | GOPS | MAC util % | GOPS/DSP | within 10 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["fpga"]:
        lines.append(
            f"| {r['model']} | {r['resolution'][0]} | {r['fps']:.1f} | {r['reference_fps']:.0f} | "
            f"{100 * r['deviation']:+.1f} % | {r['gops']:.1f} | {100 * r['mac_utilisation']:.1f} | "
            f"{r['gops_per_dsp']:.3f} | {'✓' if r['ok'] else '✗'} |"
        )
    pr, st = results["pruned"], results["starved"]
    lines += [
        "",
        f"B1 pruned 40 % (L2): {pr['fps_pruned']:.1f} FPS vs {pr['fps_dense']:.1f} dense; cycles "
        f"{pr['cycle_ratio']:.3f}× for MACs {pr['mac_ratio']:.3f}×. DDR cut to {st['ddr_gbps']:g} GB/s: "
        f"{st['memory_bound_layers']} of {st['layers']} layers memory-bound (default: "
        f"{st['default_memory_bound_layers']}), {st['fps']:.1f} FPS.",
        "",
    ]
    for bd in breakdowns:
        lines.append(bd.to_markdown())
    lines += [f"Plot: `{plot.name}`.", "", f"Command: `{results['command']}` ({results['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
