"""INT8 accuracy measured on the runtimes themselves: FP32, vitedge INT8 quantized for each runtime
(default settings: Trio-ViT PTQ, the measured precision plan, the overflow fix where the CPU needs
it), and NNCF's INT8 on the same calibration images — every top-1 computed by the runtime that
deploys the file, beside the PyTorch simulation and how often the two predict the same class.

For each ``--run NAME=CHECKPOINT:DATA[:DATA_DIR]``:

- FP32 on ONNX Runtime and OpenVINO;
- vitedge INT8, ``target="onnxruntime"`` on ONNX Runtime and ``target="openvino"`` on OpenVINO,
  calibrated on ``--calib`` training images, the precision plan scored on ``--holdout`` other
  training images; with ``--latency-plan`` also the latency plan (the attention and depthwise
  points kept in float where that runs faster on this machine, then the accuracy plan again):
  all that ``vitedge quantize`` does by default;
- NNCF's ``nncf.quantize`` (performance and transformer presets) of the FP32 file on the same
  calibration images, on OpenVINO.

A segmentation checkpoint (CamVid) is scored by mIoU on whole test frames, exported at their size.
Writes ``results.json`` and ``results.md``. Accuracy only: latency is ``deploy_speed.py``'s job.

Example::

    python benchmarks/int8_on_runtime.py --out runs/int8_on_runtime \\
        --run flowers17=runs/b0-flowers17/model.safetensors:data/flowers17
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from vitedge.io import write_results
from vitedge.tables import Table

RUNTIMES = ("onnxruntime", "openvino")


def measure(name: str, checkpoint: str, data: str, data_dir: str | None, out: Path, calib: int, holdout: int,
            eval_limit: int | None, threads: int, runtimes: tuple[str, ...] = RUNTIMES,
            nncf: bool = True, latency_plan: bool = False) -> dict[str, Any]:
    import vitedge
    from vitedge.bench.deployment import runtime_score
    from vitedge.bench.float_glue import check_float_glue
    from vitedge.bench.nncf_anchor import NNCF_PRESETS, nncf_available, nncf_quantize, nncf_version
    from vitedge.io import load_bundle
    from vitedge.quantization import QuantConfig
    from vitedge.quantization.plan import replan
    from vitedge.train.config import DataConfig
    from vitedge.train.task_data import TaskData
    from vitedge.workflows.recipes import latency_refiner

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(checkpoint)
    model, extra = bundle.model, bundle.extra
    task = TaskData(DataConfig(dataset=data, root=data_dir, eval_limit=eval_limit), bundle.data_config,
                    bundle.classes)
    calib_batches, held_out = task.sample(calib), task.sample(holdout, skip=calib)
    size = task.frame  # a segmentation model runs on whole frames: export at their size (classifiers: None)
    fp32 = vitedge.export(model, folder / "fp32.onnx", classes=task.classes, data_config=extra.get("data_config"),
                          resolution=size)
    row: dict[str, Any] = {"checkpoint": checkpoint, "data": data, "test_images": len(task.eval_set),
                           "fp32_torch": task.score(model)}
    for runtime in runtimes:
        row[f"fp32_{runtime}"] = runtime_score(runtime, None, fp32, "fp32", task, None, threads)
        start = time.perf_counter()
        config = QuantConfig.for_target(runtime, method="trio")
        qmodel = vitedge.quantize(model, calib_batches, config=config, holdout=held_out or None)
        refine = latency_refiner(checkpoint, runtime) if latency_plan else None
        if refine is not None:  # as `vitedge quantize` does by default
            refine(qmodel)
            if held_out:
                replan(qmodel, model, held_out)
        glue = check_float_glue(qmodel, held_out or calib_batches, threads=threads)  # as `vitedge quantize`
        seconds = time.perf_counter() - start
        path = vitedge.export(qmodel, folder / f"int8_{runtime}.onnx", "int8", classes=task.classes,
                              data_config=extra.get("data_config"), resolution=size)
        agreement: dict[str, float] = {}
        row[f"vitedge_{runtime}"] = {
            "score": runtime_score(runtime, qmodel, path, "int8", task, None, threads, agreement=agreement),
            "score_sim": task.score(qmodel), "agreement": agreement.get("agreement"),
            "overflow_fix": config.overflow_fix, "plan": qmodel.precision_plan.summary(), "float_glue": glue,
            "quantize_s": round(seconds, 1)}
        print(name, runtime, row[f"vitedge_{runtime}"], flush=True)
    ok, why = nncf_available()
    for preset in NNCF_PRESETS if nncf else ():
        if not ok:
            row[f"nncf_{preset}"] = {"error": why}
            continue
        try:
            ir = nncf_quantize(fp32, [b.numpy() for b in calib_batches], folder / f"nncf_{preset}.xml", preset)
            row[f"nncf_{preset}"] = {"score": runtime_score("openvino", None, ir, "int8", task, None, threads),
                                     "version": nncf_version()}
        except Exception as err:  # NNCF's own failure is a result of the comparison
            row[f"nncf_{preset}"] = {"error": f"{type(err).__name__}: {err}"[:160]}
        print(name, preset, row[f"nncf_{preset}"], flush=True)
    return row


def markdown(results: dict[str, dict[str, Any]], command: str) -> str:
    def fp32(r: dict[str, Any], runtime: str) -> str:
        return f"{r[f'fp32_{runtime}']:.2f}" if f"fp32_{runtime}" in r else "–"

    def ours(r: dict[str, Any], runtime: str) -> str:
        v = r.get(f"vitedge_{runtime}")
        return "–" if v is None else f"{v['score']:.2f} ({v['score'] - r['fp32_torch']:+.2f}; {v['agreement']:.1f})"

    def nncf(r: dict[str, Any], preset: str) -> str:
        v = r.get(f"nncf_{preset}")
        if v is None:
            return "–"
        return f"{v['score']:.2f} ({v['score'] - r['fp32_torch']:+.2f})" if "score" in v else f"✗ {v['error']}"

    table = Table("", ["model (test images)", "FP32 ORT", "FP32 OV", "vitedge INT8 ORT (= sim %)",
                       "vitedge INT8 OV (= sim %)", "NNCF performance OV", "NNCF transformer OV"],
                  [[f"{name} ({r['test_images']})", fp32(r, "onnxruntime"), fp32(r, "openvino"),
                    ours(r, "onnxruntime"), ours(r, "openvino"), nncf(r, "performance"), nncf(r, "transformer")]
                   for name, r in results.items()])
    plans = [f"- {name}, {rt}: {r[f'vitedge_{rt}']['plan']}" for name, r in results.items()
             for rt in RUNTIMES if f"vitedge_{rt}" in r]
    return "\n".join(["Top-1 % (mIoU % for segmentation) on the runtime (Δ pt against FP32; % of predictions "
                      "equal to the simulation).", "", table.markdown(heading=""), "Precision plans:", *plans, "",
                      f"Command: `{command}`", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, help="NAME=CHECKPOINT:DATA[:DATA_DIR] (repeatable)")
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--holdout", type=int, default=256)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of " + ",".join(RUNTIMES))
    p.add_argument("--no-nncf", action="store_true", help="leave out the NNCF rows")
    p.add_argument("--latency-plan", action="store_true",
                   help="also the latency plan, timed here (all that `vitedge quantize` does by default)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    results = {}
    for spec in args.run:
        name, _, rest = spec.partition("=")
        checkpoint, data, *data_dir = rest.split(":")
        results[name] = measure(name, checkpoint, data, data_dir[0] if data_dir else None, args.out, args.calib,
                                args.holdout, args.eval_limit, args.threads,
                                tuple(args.runtimes.split(",")), not args.no_nncf, args.latency_plan)
    command = shlex.join([sys.executable, *sys.argv])
    text = markdown(results, command)
    write_results(args.out, {"command": command, "results": results}, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
