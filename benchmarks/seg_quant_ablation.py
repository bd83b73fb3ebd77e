"""Segmentation quantization ablation: mIoU of a trained segmentation model under variants of the
Trio-ViT W8A8 recipe, simulated in PyTorch (issue 8's diagnosis of the INT8 mIoU drop).

Rows: FP32; Trio with conv-output points (what ORT runs) and the spec's fixed log2-divisor window
−6…9; the same with the window slid up past saturation (the default since 2026-12-05); the window
at the calibration maximum; no log2 divisor; attention in float; 7-bit weights (exact ORT on
CPUs without VNNI); with ``--reconstruct N`` also W8A8 and W7A8 with step sizes learned for N
steps against the float logits. Calibration on ``--calib`` training frames (evaluation
transform), scored on the test split (``--eval-limit``: the first N frames). For ORT agreement
and the deployed mIoU run ``seg_agreement.py``.

Writes ``results.json`` and ``results.md`` to ``--out``.

Example::

    python benchmarks/seg_quant_ablation.py runs/seg-camvid/b0-seg-camvid/model.safetensors \\
        --data camvid --data-dir ~/data/camvid --calib 64 --eval-limit 96 --out runs/seg_quant
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import vitedge
from vitedge.io import atomic_write, read_metadata
from vitedge.quantization import QuantConfig, TrioConfig
from vitedge.train.config import DataConfig
from vitedge.train.task_data import TaskData


def rows(reconstruct: int = 0) -> dict[str, QuantConfig | None]:
    trio = lambda **kw: QuantConfig(method="trio", conv_outputs=True, **kw)  # noqa: E731
    learned = {f"Trio W{b}A8 + step sizes learned on the calibration frames ({reconstruct} steps)":
               trio(w_bits=b, reconstruct_iters=reconstruct) for b in (8, 7)} if reconstruct else {}
    return {
        "FP32": None,
        "Trio W8A8, spec's fixed divisor window −6…9": trio(trio=TrioConfig(divisor_slide=False)),
        "Trio W8A8, window slid up past saturation (default)": trio(),
        "Trio W8A8, window at the calibration max": trio(trio=TrioConfig(divisor_exp_min=None)),
        "Trio W8A8 without log2 divisor": trio(trio=TrioConfig(log2_divisor=False)),
        "Trio W8A8, attention in float": trio(attention=False),
        "Trio W7A8 (default window)": trio(w_bits=7),
        **learned,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="vitedge segmentation checkpoint")
    p.add_argument("--data", required=True, help="camvid or cityscapes")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--calib", type=int, default=64, help="calibration frames from the training split")
    p.add_argument("--eval-limit", type=int, help="first N test frames only")
    p.add_argument("--reconstruct", type=int, default=0,
                   help="also rows with step sizes learned for this many steps (W8A8 and W7A8)")
    p.add_argument("--only", help="comma-separated substrings: run the rows whose name contains one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    model = vitedge.load(args.checkpoint).eval()
    extra = read_metadata(args.checkpoint)["extra"]
    data = DataConfig(dataset=args.data, root=args.data_dir, batch_size=4, eval_limit=args.eval_limit)
    task = TaskData(data, {**model.data_config, **extra.get("data_config", {})}, extra.get("classes"))
    calib = task.sample(args.calib, seed=0, batch_size=4)
    results = []
    only = args.only.split(",") if args.only else None
    for name, config in rows(args.reconstruct).items():
        if only and name != "FP32" and not any(o in name for o in only):
            continue
        start = time.perf_counter()
        net = model if config is None else vitedge.quantize(model, calib, config=config)
        results.append({"name": name, "config": None if config is None else config.to_dict(),
                        "miou": task.score(net), "seconds": time.perf_counter() - start})
        print(f"{name:55s} mIoU {results[-1]['miou']:6.2f}  ({results[-1]['seconds']:.0f} s)", flush=True)
    fp32 = results[0]["miou"]
    lines = [f"{len(task.eval_set)} test frames, {args.calib} calibration frames", "",
             "| row | mIoU | Δ vs FP32 | s |", "|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['miou']:.2f} | {r['miou'] - fp32:+.2f} | {r['seconds']:.0f} |"
              for r in results]
    command = shlex.join([sys.executable, *sys.argv])
    lines += ["", f"Command: `{command}`", ""]
    report = {"checkpoint": args.checkpoint, "calib": args.calib, "rows": results, "command": command}
    atomic_write(args.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    atomic_write(args.out / "results.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
