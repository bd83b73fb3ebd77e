"""Segmentation pruning: prune a trained EfficientViT-Seg checkpoint, fine-tune it distilled from
the dense model on the same data recipe it was trained with, and report mIoU, params and MACs
(issue 8: 20 % pruning + fine-tuning loses ≤ 2.0 pt mIoU).

The fine-tuning repeats ``train_seg_camvid.py``'s data recipe (CamVid train + val, random rescale
0.5–2.0, square crops, flips) at a lower peak learning rate, with logit distillation (α 0.5, T 4)
from the unpruned model; the test split is scored whole-frame before pruning, right after it,
after re-estimating BatchNorm statistics, and after fine-tuning.

Example::

    python benchmarks/seg_prune.py /work/seg-run/b0-seg-camvid/model.safetensors \\
        --camvid-dir /work/data/camvid --ratio 0.2 --epochs 20 --out /work/seg-run/prune20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from vitedge.bench.profile import profile
from vitedge.errors import VitedgeError
from vitedge.io import atomic_write
from vitedge.models.checkpoint import load
from vitedge.pruning import PruneConfig
from vitedge.train import DataConfig, DistillConfig, OptimConfig, TrainConfig
from vitedge.workflows.prune import DENSE_TEACHER, prune_checkpoint

ACCEPT_DROP = 2.0  # pt mIoU, 20 % pruning + fine-tuning vs the dense model (issue 8)
CITYSCAPES_LIKE = (1024, 2048)  # the published MACs' input size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="trained segmentation checkpoint (vitedge safetensors)")
    p.add_argument("--camvid-dir", type=Path, required=True)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--criterion", default="l2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, help="smoke runs: first N training frames only")
    p.add_argument("--eval-limit", type=int, help="smoke runs: first N test frames only")
    p.add_argument("--bn-images", type=int, default=256, help="frames that re-estimate BatchNorm statistics")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = TrainConfig(
        epochs=args.epochs, seed=args.seed, device="cpu", eval_every=args.eval_every,
        data=DataConfig(dataset="camvid", root=str(args.camvid_dir), img_size=args.crop,
                        batch_size=args.batch, seg_scale=(0.5, 2.0), seg_train_split="trainval",
                        train_limit=args.train_limit, eval_limit=args.eval_limit),
        optim=OptimConfig(lr=args.lr, warmup_epochs=1.0, weight_decay=0.05, clip_grad=1.0, min_lr=1e-6),
        distill=DistillConfig(teacher=DENSE_TEACHER, alpha=0.5, temperature=4.0))
    start = time.perf_counter()
    try:
        config = PruneConfig(ratio=args.ratio, criterion=args.criterion, seed=args.seed,
                             bn_images=args.bn_images)
        result = prune_checkpoint(args.checkpoint, config, train=train, out=args.out)
    except VitedgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = result.metrics
    dense_large, pruned_large = _macs_at_cityscapes(load(args.checkpoint)), _macs_at_cityscapes(result.model)
    command = "python benchmarks/seg_prune.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    drop = m["score_dense"] - m["score_finetuned"]
    row = {"ratio": args.ratio, "criterion": args.criterion, "epochs": args.epochs,
           "miou_dense": m["score_dense"], "miou_pruned": m["score_pruned"],
           "miou_bn_recalibrated": m.get("score_bn_recalibrated"), "miou_finetuned": m["score_finetuned"],
           "drop": drop, "accept_drop": ACCEPT_DROP,
           "params_dense": m["params_dense"], "params_pruned": m["params_pruned"],
           "macs_1024x2048_dense": dense_large, "macs_1024x2048_pruned": pruned_large,
           "seconds": time.perf_counter() - start, "command": command}
    text = json.dumps(row, indent=2)
    atomic_write(args.out / "seg_prune.json", lambda tmp: Path(tmp).write_text(text))
    ok = "✓" if drop <= ACCEPT_DROP else "✗"
    md = ("| ratio | params (M) | GMACs 1024×2048 | mIoU dense | pruned | + BN re-est. | fine-tuned "
          "| drop |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| {args.ratio:.0%} | {m['params_dense'] / 1e6:.3f} → {m['params_pruned'] / 1e6:.3f} | "
          f"{dense_large / 1e9:.2f} → {pruned_large / 1e9:.2f} | {m['score_dense']:.2f} | "
          f"{m['score_pruned']:.2f} | {m.get('score_bn_recalibrated', float('nan')):.2f} | "
          f"{m['score_finetuned']:.2f} | {drop:.2f} ≤ {ACCEPT_DROP} {ok} |\n\n"
          f"{args.epochs} distilled epochs, {row['seconds'] / 60:.0f} min. Command: `{command}`\n")
    atomic_write(args.out / "seg_prune.md", lambda tmp: Path(tmp).write_text(md))
    print(md)
    return 0


def _macs_at_cityscapes(model: torch.nn.Module) -> int:
    """MACs at 1024×2048, counted at 64×128 and scaled: every op of these models grows with H·W
    (tests/test_seg_models.py checks that), and a full-size trace would take minutes here."""
    small = (64, 128)
    saved = model.data_config["input_size"]
    model.data_config["input_size"] = (3, *small)
    try:
        macs = profile(model)["macs"]
    finally:
        model.data_config["input_size"] = saved
    return macs * (CITYSCAPES_LIKE[0] // small[0]) * (CITYSCAPES_LIKE[1] // small[1])


if __name__ == "__main__":
    sys.exit(main())
