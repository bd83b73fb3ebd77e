"""Segmentation quantization ablation: mIoU of a trained segmentation model under variants of the
Trio-ViT W8A8 recipe, simulated in PyTorch (issue 8's diagnosis of the INT8 mIoU drop).

Rows: FP32; Trio with conv-output points (what ORT runs) and the spec's fixed log2-divisor window
−6…9; the same with the window slid up past saturation (the default since 2026-12-05); the window
at the calibration maximum; no log2 divisor; attention in float; 7-bit weights (exact ORT on
CPUs without VNNI); with ``--reconstruct N`` also W8A8 and W7A8 with step sizes learned for N
steps against the float logits. Calibration on ``--calib`` training frames (evaluation
transform), scored on the test split (``--eval-limit``: the first N frames). For ORT agreement
and the deployed mIoU run ``seg_agreement.py``.

Writes ``results.json`` and ``results.md`` to ``--out``; a re-run with the same ``--out`` keeps
the rows already measured there (:func:`vitedge.workflows.ablation.run_ladder`).

Example::

    python benchmarks/seg_quant_ablation.py runs/seg-camvid/b0-seg-camvid/model.safetensors \\
        --data camvid --data-dir ~/data/camvid --calib 64 --eval-limit 96 --out runs/seg_quant
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from vitedge.io import load_bundle, write_text
from vitedge.train.config import DataConfig
from vitedge.train.task_data import TaskData
from vitedge.workflows.ablation import run_ladder, seg_trio_ladder, select


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

    bundle = load_bundle(args.checkpoint)
    model = bundle.model.eval()
    data = DataConfig(dataset=args.data, root=args.data_dir, batch_size=4, eval_limit=args.eval_limit)
    task = TaskData(data, bundle.data_config, bundle.classes)
    calib = task.sample(args.calib, seed=0, batch_size=4)
    ladder = select(seg_trio_ladder(args.reconstruct), args.only.split(",") if args.only else None, keep=["FP32"])
    command = shlex.join([sys.executable, *sys.argv])
    # rows already measured on the same checkpoint, frames and calibration (an interrupted run) are kept
    setup = {k: str(getattr(args, k)) for k in ("checkpoint", "data", "data_dir", "calib", "eval_limit")}
    results = run_ladder(model, ladder, calib, lambda net: {"miou": task.score(net)}, path=args.out / "results.json",
                         setup=setup, meta={"checkpoint": args.checkpoint, "calib": args.calib, "command": command})
    fp32 = results[0]["miou"]
    lines = [f"{len(task.eval_set)} test frames, {args.calib} calibration frames", "",
             "| row | mIoU | Δ vs FP32 | s |", "|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['miou']:.2f} | {r['miou'] - fp32:+.2f} | "
              f"{r['seconds'] + r['score_seconds']:.0f} |" for r in results]
    lines += ["", f"Command: `{command}`", ""]
    write_text(args.out / "results.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
