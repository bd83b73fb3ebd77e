"""How much top-1 a model loses on its test split to *any* perturbation the size of INT8, so that an
INT8 Δ can be read against it: on a small test split (flowers17: 272 images, 1 pt = 2.7 images) a
model with many near-ties flips predictions under the smallest change, and a Δ of −1 pt can be
noise rather than damage.

For one ``--checkpoint`` and ``--data``, on the test split, against the float model:

- each *kind* of quantization point alone in INT8 (everything else in float), quantized for
  ``--target`` with default settings but no precision plan: KL of the logits, changed
  predictions, Δ top-1 — which kinds hurt;
- the weights alone in INT8 (every activation in float);
- the float model with uniform noise of ±½ INT8 step (per output channel, symmetric 8-bit) added
  to every weight, ``--seeds`` draws: the spread of Δ a perturbation of that size gives by chance;
- the weights rounded to bf16.

Writes ``results.json`` and ``results.md`` under ``--out``.

Example::

    python benchmarks/int8_noise_floor.py --checkpoint runs/b0-flowers17/model.safetensors \\
        --data data/flowers17 --out runs/noise-floor
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from vitedge.io import write_results
from vitedge.tables import Table


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim >= 2]  # conv and linear weights


def measure(checkpoint: str, data: str, data_dir: str | None, target: str, calib: int, seeds: int,
            threads: int) -> dict[str, Any]:
    import vitedge
    from vitedge.io import load_bundle
    from vitedge.quantization import QuantConfig, quantizers
    from vitedge.quantization.plan import companions, predictions, score_logits
    from vitedge.train.config import DataConfig
    from vitedge.train.task_data import TaskData

    torch.set_num_threads(threads)
    bundle = load_bundle(checkpoint)
    model = bundle.model.eval()
    task = TaskData(DataConfig(dataset=data, root=data_dir), bundle.data_config, bundle.classes)
    batches = list(task.loader())
    labels = torch.cat([y for _, y in batches])

    def logits(m: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([predictions(m(x)) for x, _ in batches])

    reference = logits(model)
    float_top1 = 100.0 * float((reference.argmax(-1) == labels.reshape(-1)).float().mean())

    def row(got: torch.Tensor) -> dict[str, float]:
        score = score_logits(got, reference)
        top1 = 100.0 * float((got.argmax(-1) == labels.reshape(-1)).float().mean())
        return {"kl": score.kl, "changed": int((got.argmax(-1) != reference.argmax(-1)).sum()),
                "delta": top1 - float_top1}

    config = dataclasses.replace(QuantConfig.for_target(target, method="trio"), auto_float=False)
    qmodel = vitedge.quantize(model, task.sample(calib), config=config).eval()
    live = [q for _, q in quantizers(qmodel) if q.fake_quant]
    kinds: dict[str, list[Any]] = {}
    for q in live:
        kinds.setdefault(q.kind, []).append(q)

    # a point whose float state needs another in float (K^T1 under a float denominator) is quantized
    # with that one, as the product only builds that state
    needed_by = {id(c): den for den_id, needs in companions(qmodel).items() for c in needs
                 for den in live if id(den) == den_id}

    def only(chosen: list[Any]) -> dict[str, float]:
        chosen = chosen + [needed_by[id(q)] for q in chosen if id(q) in needed_by]
        for q in live:
            q.fake_quant = any(q is c for c in chosen)
        try:
            return row(logits(qmodel))
        finally:
            for q in live:
                q.fake_quant = True

    result: dict[str, Any] = {"checkpoint": checkpoint, "data": data, "target": target,
                              "test_images": int(reference.shape[0]), "float_top1": float_top1,
                              "int8_everything": row(logits(qmodel)),
                              "kinds": {kind: {"points": len(qs), **only(qs)} for kind, qs in sorted(kinds.items())}}
    draws = []
    for seed in range(seeds):
        noisy = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for w in _weights(noisy):
                step = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
                w.add_((torch.rand(w.shape, generator=generator) - 0.5) * step.view(-1, *[1] * (w.ndim - 1)))
        draws.append(row(logits(noisy)))
    result["weight_noise"] = draws
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for w in _weights(rounded):
            w.copy_(w.bfloat16().float())
    result["bf16_weights"] = row(logits(rounded))
    return result


def markdown(r: dict[str, Any], command: str) -> str:
    def cells(v: dict[str, float]) -> list[str]:
        return [f"{v['kl']:.4f}", str(v["changed"]), f"{v['delta']:+.2f}"]

    rows = [["everything in INT8", "–", *cells(r["int8_everything"])]]
    rows += [[f"only `{kind}` in INT8" + (" (with its denominator)" if kind == "attn.ksum" else ""),
              str(v["points"]), *cells(v)] for kind, v in r["kinds"].items()]
    noise = r["weight_noise"]
    if noise:
        deltas = [d["delta"] for d in noise]
        rows.append([f"weights + INT8-size noise ({len(noise)} draws: mean Δ, range)", "–",
                     f"{statistics.mean(d['kl'] for d in noise):.4f}",
                     f"{min(d['changed'] for d in noise)}–{max(d['changed'] for d in noise)}",
                     f"{statistics.mean(deltas):+.2f} ({min(deltas):+.2f}…{max(deltas):+.2f})"])
    rows.append(["weights rounded to bf16", "–", *cells(r["bf16_weights"])])
    table = Table("", ["perturbation (test split)", "points", "KL", "changed predictions", "Δ top-1 pt"], rows)
    return "\n".join([f"{r['checkpoint']} on {r['data']}: float top-1 {r['float_top1']:.2f} % on "
                      f"{r['test_images']} test images (1 image = {100 / r['test_images']:.2f} pt); INT8 for "
                      f"{r['target']}, no precision plan.", "", table.markdown(heading=""),
                      f"Command: `{command}`", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="a dataset name or folder (as vitedge's --data)")
    p.add_argument("--data-dir", default=None, help="where a named dataset lives")
    p.add_argument("--target", default="onnxruntime", choices=("onnxruntime", "openvino", "simulation"))
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--seeds", type=int, default=8, help="draws of INT8-size weight noise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    result = measure(args.checkpoint, args.data, args.data_dir, args.target, args.calib, args.seeds, args.threads)
    command = shlex.join([sys.executable, *sys.argv])
    text = markdown(result, command)
    write_results(args.out, {"command": command, **result}, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
