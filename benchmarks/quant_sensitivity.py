"""Which quantization points hurt: the study's INT8 (Trio + conv outputs) with one kind of point at
a time left in float, scored on held-out *training* images (KL of the float logits, agreement with
the float predictions) beside the test top-1.

A sensitivity signal that a precision plan could use must come from training images: the test
split only reports what the choice did. Calibration and held-out images are disjoint random
subsets of the training split.

    python benchmarks/quant_sensitivity.py runs/b0-flowers17/model.safetensors \\
        --data ~/data/flowers17 --calib 512 --holdout 512 --out runs/sens_flowers17

Writes ``results.json`` and ``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vitedge
from vitedge.data import build_dataset, eval_transform
from vitedge.io import load_bundle, write_json, write_text
from vitedge.quantization import QuantConfig, count_kinds, point_report, quantizers
from vitedge.train import evaluate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="vitedge checkpoint of the trained float model")
    p.add_argument("--data", required=True, help="dataset name or folder")
    p.add_argument("--data-dir", help="where the registered dataset lives")
    p.add_argument("--calib", type=int, default=512, help="calibration images from the train split")
    p.add_argument("--holdout", type=int, default=512, help="other train images that score the points")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


@torch.no_grad()
def logits_of(model: torch.nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([model(b) for b in batches])


def score(qmodel: torch.nn.Module, reference: torch.Tensor, holdout: list[torch.Tensor],
          test: torch.utils.data.DataLoader) -> dict[str, float]:
    """KL(float ‖ quantized) per image and top-1 agreement on the held-out images; test top-1."""
    got = logits_of(qmodel, holdout)
    kl = F.kl_div(F.log_softmax(got, -1), F.log_softmax(reference, -1), log_target=True, reduction="batchmean")
    agree = (got.argmax(-1) == reference.argmax(-1)).float().mean()
    return {"holdout_kl": float(kl), "holdout_agree": 100 * float(agree),
            "test_top1": float(evaluate(qmodel, test)["top1"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.checkpoint)
    model, data_config, classes = bundle.model.eval(), bundle.data_config, bundle.classes
    transform = eval_transform(int(data_config["input_size"][-1]), data_config)
    train = build_dataset(args.data, args.data_dir, "train", transform=transform, classes=classes)
    test = build_dataset(args.data, args.data_dir, "test", transform=transform, classes=classes)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    if args.calib + args.holdout > len(train):
        sys.exit(f"error: --calib {args.calib} + --holdout {args.holdout} exceed the {len(train)} training images")

    def batches(indices: list[int]) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, indices), batch_size=64)
        return [images for images, _ in loader]

    calib, holdout = batches(order[:args.calib]), batches(order[args.calib:args.calib + args.holdout])
    test_loader = torch.utils.data.DataLoader(test, batch_size=256)
    reference = logits_of(model, holdout)
    qmodel = vitedge.quantize(model, calib, config=QuantConfig(method="trio", conv_outputs=True))
    points = list(quantizers(qmodel))
    kinds = count_kinds(point_report(qmodel))

    rows: list[dict[str, Any]] = [{"float": "nothing (FP32)", "points": 0,
                                   "test_top1": float(evaluate(model, test_loader)["top1"])},
                                  {"float": "none (all points INT8)", "points": 0,
                                   **score(qmodel, reference, holdout, test_loader)}]
    for kind in kinds:
        chosen = [q for _, q in points if q.kind == kind]
        if not chosen:  # a Trio transform's report row, not a point
            continue
        for q in chosen:
            q.fake_quant = False
        rows.append({"float": kind, "points": len(chosen), **score(qmodel, reference, holdout, test_loader)})
        for q in chosen:
            q.fake_quant = True
        print(f"{kind:24s} {rows[-1]}", flush=True)

    setup = {"checkpoint": str(args.checkpoint), "data": args.data, "calib": args.calib,
             "holdout": args.holdout, "seed": args.seed, "config": "trio + conv_outputs"}
    lines = ["| left in float | points | held-out KL | held-out agree % | test top-1 % |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        kl = f"{r['holdout_kl']:.4f}" if "holdout_kl" in r else ""
        agree = f"{r['holdout_agree']:.2f}" if "holdout_agree" in r else ""
        lines.append(f"| {r['float']} | {r['points']} | {kl} | {agree} | {r['test_top1']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"setup": setup, "rows": rows}, indent=1)
    write_text(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
