"""`vitedge study`: config validation before any work, a miniature study end to end, caching,
and a study killed during fine-tuning that resumes to the same numbers."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vitedge.errors import VitedgeError
from vitedge.report import study_with_report
from vitedge.study import StudyConfig, load_study_config
from vitedge.study.config import PRESETS
from vitedge.study.pipeline import deployment_matrix, run_study

REPO = Path(__file__).resolve().parents[1]

# a study small enough for the suite: 1 ratio, tiny subsets, 32 px
MINI = {"data.train_limit": 400, "data.eval_limit": 120, "data.img_size": 32, "baseline.epochs": 1,
        "pruning.ratios": [0.4], "quantization.calib": 16, "deploy.runs": 3, "deploy.warmup": 1,
        "deploy.threads": 1, "data.batch_size": 32,
        # a latency plan decides by timing, which differs run to run: the resumed study below must
        # reproduce the first one's numbers (the plan itself: test_quant_targets, the seg study)
        "quantization.latency_plan": False}


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _own_fields(cls, prefix=""):
    """The knobs the study itself defines (the composed components document theirs)."""
    hints = typing.get_type_hints(cls)
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    for f in dataclasses.fields(cls):
        if f.name in inherited:
            continue
        if dataclasses.is_dataclass(hints[f.name]) and hints[f.name].__module__ == cls.__module__:
            yield from _own_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _keys(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_documented_config_names_every_knob_and_equals_the_quick_preset():
    documented = set(_keys(yaml.safe_load((REPO / "configs" / "study.yaml").read_text())))
    assert documented <= set(_fields(StudyConfig))  # the file names real knobs only ...
    own = set(_own_fields(StudyConfig))
    sections = {key.rsplit(".", 1)[0] for key in documented if "." in key} | {k.split(".")[0] for k in documented}
    assert own <= documented | sections, own - documented - sections  # ... and every one the study adds
    assert {"pruning.finetune.epochs", "quantization.qat.epochs", "quantization.method"} <= documented
    assert load_study_config(REPO / "configs" / "study.yaml") == load_study_config(preset="quick")
    assert load_study_config(REPO / "configs" / "study-cifar10.yaml") == load_study_config(preset="full")
    assert set(PRESETS) == {"quick", "full"}


@pytest.mark.parametrize("text, message", [
    ("pruning:\n  ratioss: [0.2]\n", "unknown study setting 'pruning.ratioss': did you mean 'pruning.ratios'?"),
    ("pruning:\n  ratio: 0.2\n", "pruning: ratio is set per variant"),
    ("pruning:\n  finetune_epochs: 2\n", "did you mean 'pruning.finetune'?"),
    ("baseline:\n  epochs: many\n", "baseline.epochs: input should be a valid integer, got 'many'"),
    ("pruning:\n  ratios: [0.4, 1.2]\n", "pruning: ratio must be a number in [0, 1), got 1.2"),
    ("pruning:\n  criterion: hessian\n", "pruning: unknown pruning criterion"),
    ("quantization:\n  a_bits: 1\n", "quantization: a_bits"),
    ("quantization:\n  qat:\n    ema: {decay: 1.0}\n", "quantization.qat.ema: EMA decay must be in (0, 1)"),
    ("quantization:\n  target: openvino\n", "target is set per runtime"),
    ("data:\n  img_size: '64'\n", "data.img_size: input should be a valid integer, got '64'"),
    ("deploy:\n  runtime: tflite\n", "unknown runtime 'tflite'"),
    ("modle: efficientvit_b0\n", "did you mean 'model'?"),
    ("pruning:\n  mode: auto\n", "pruning.mode must be uniform or search"),
    ("pruning:\n  search:\n    budget: fast\n", "uniform:RATIO/TIMES, speedup:TIMES or latency:MS"),
    ("pruning:\n  search:\n    budget: uniform:0.4/0\n", "must be uniform:RATIO, uniform:RATIO/TIMES"),
    ("pruning:\n  search:\n    budget: speedup:2/1.5\n", "must be uniform:RATIO, uniform:RATIO/TIMES"),
    ("pruning:\n  compare: [l2]\n", "pruning.compare ['l2'] must list other criteria than pruning.criterion (l2)"),
    ("pruning:\n  compare: [hessian]\n", "pruning: unknown pruning criterion 'hessian'"),
    ("pruning:\n  search:\n    budget: uniform:0.3\n", "0.3 is not a ratio of search.grid [0.2, 0.4, 0.6]"),
    ("pruning:\n  search:\n    precision: fp16\n", "search.precision must be fp32, bf16 or int8"),
    ("pruning:\n  search:\n    compare_budgets: [uniform:0.4]\n", "repeats a budget"),
    ("pruning:\n  search:\n    compare_budgets: [speedup:2, speedup:2]\n", "repeats a budget"),
    ("pruning:\n  search:\n    compare_budgets: [uniform:0.5]\n", "'uniform:0.5': 0.5 is not a ratio of search.grid"),
    ("pruning:\n  search:\n    compare_budgets: uniform:0.2\n", "search.compare_budgets: input should be a valid"),
    ("model: efficientvit_b9\n", "efficientvit_b9"),
    ("- just a list\n", "must be a mapping"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(VitedgeError) as err:
        load_study_config(path)
    assert message in str(err.value)


@pytest.mark.parametrize("budget, keywords", [
    ("uniform:0.4", {"match_ratio": 0.4}),
    ("uniform:0.4/1.25", {"match_ratio": 0.4, "speedup": 1.25}),  # 1.25× faster than uniform 40 %
    ("speedup:2", {"speedup": 2.0}),
    ("latency:1.5", {"latency_ms": 1.5}),
])
def test_a_search_budget_reads_as_the_search_request_keywords(budget, keywords):
    from vitedge.study.config import SearchPlan

    assert SearchPlan(budget=budget).budget_args() == keywords
    assert SearchPlan(compare_budgets=(budget,) if budget != "uniform:0.4" else ()).budget_args(budget) == keywords


@pytest.mark.parametrize("budget, label", [
    ("uniform:0.4", "uniform 40%"), ("uniform:0.4/1.25", "1.25× uniform 40%"), ("speedup:2", "2× dense"),
    ("latency:1.5", "1.5 ms")])
def test_a_budget_names_its_searched_row(budget, label):
    from vitedge.study.config import budget_label

    assert budget_label(budget) == label


def test_bad_config_fails_in_the_cli_before_any_work(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("data:\n  dataset: cifar10\n  root: /nonexistent/cifar\n")
    proc = subprocess.run([sys.executable, "-m", "vitedge.cli", "study", "--config", str(path),
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_show_config_prints_the_resolved_yaml(monkeypatch, capsys, tmp_path):
    from test_cli import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "study", "--preset", "full", "--data-dir", str(tmp_path),
                             "--threads", "1", "--show-config")
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["data"] == {**shown["data"], "dataset": "cifar10", "root": str(tmp_path), "img_size": 96}
    assert shown["deploy"]["threads"] == 1 and shown["name"] == "cifar10-b0"


def _mini(tmp_path, name="mini", **extra):
    return load_study_config(overrides={**MINI, "name": name, "out": str(tmp_path / "runs"), **extra})


# the study as a user's process runs it, on one thread so that two runs compute bit-identical
# numbers: the killed-and-resumed run below must end where the uninterrupted one (the fixture) did
_STUDY_SCRIPT = ("import sys, json; from vitedge.study import load_study_config; "
                 "from vitedge.report import study_with_report; "
                 "study_with_report(load_study_config(overrides=json.loads(sys.argv[1])), log=lambda l: None)")
_ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
_FINETUNE = {"pruning.finetune.epochs": 2}  # two epochs: the kill lands between them


def _study_process(config: StudyConfig) -> list[str]:
    overrides = {**MINI, **_FINETUNE, "name": config.name, "out": config.out}
    return [sys.executable, "-c", _STUDY_SCRIPT, json.dumps(overrides)]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    config = _mini(tmp_path_factory.mktemp("study"), **_FINETUNE)
    subprocess.run(_study_process(config), env=_ONE_THREAD, check=True, timeout=900)
    return config


def test_miniature_study_writes_every_artifact(finished_study):
    run = finished_study.run_dir
    for name in ("report.md", "report.html", "results.json", "results.csv", "config.json",
                 "plots/accuracy_vs_latency.png", "plots/accuracy_vs_macs.png", "plots/channel_ranges.png",
                 "hardware/breakdown.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    report = (run / "report.md").read_text()
    for title in ("Table 1 — pruning", "Table 2 — quantization", "Table 3 — pruning + INT8", "Recommendation",
                  "Deployment matrix", "Environment", "onnxruntime", "est. FPGA FPS (trio-zcu102)", "CPU breakdown",
                  "Furthest from"):
        assert title in report
    results = json.loads((run / "results.json").read_text())
    rows = results["rows"]
    # deploy.runtime auto: every variant on every runtime × precision here, each measured there
    matrix = deployment_matrix(finished_study)
    assert "onnxruntime" in matrix and (importlib.util.find_spec("openvino") is None) == ("openvino" not in matrix)
    expected = {(v, runtime, p) for v in ("dense", "l2_p40") for runtime, ps in matrix.items() for p in ps}
    assert {(r["variant"], r["runtime"], r["precision"]) for r in rows} == expected
    # the recommendation is the fastest deployment within max_drop of the dense FP32 model, and says where
    ref = min((r for r in rows if r["variant"] == "dense" and r["precision"] == "fp32"), key=lambda r: r["latency_ms"])
    within = [r for r in rows if r["score"] >= ref["score"] - finished_study.report.max_drop]
    best = min(within, key=lambda r: r["latency_ms"])
    assert results["recommended"] == best
    assert f"Tables 1–3 show {best['runtime']}" in report
    if len(matrix) > 1:
        assert f"Runtime: {best['runtime']}, the fastest of" in results["recommendation"]
    # each INT8 file is the graph quantized for its runtime
    from vitedge.deploy import read_onnx_metadata

    for runtime in matrix:
        path = run / "export" / f"dense_int8_{runtime}" / "model.onnx"
        assert read_onnx_metadata(path)["vitedge.quant_target"] == runtime
    rows = [r for r in rows if r["runtime"] == best["runtime"]]
    by = {(r["variant"], r["precision"]): r for r in rows}
    assert by["l2_p40", "fp32"]["macs"] < by["dense", "fp32"]["macs"]
    assert by["dense", "int8"]["size_mib"] < 0.5 * by["dense", "fp32"]["size_mib"]  # int8 weights in the file
    assert all(0 <= r["score"] <= 100 and r["latency_ms"] > 0 for r in rows)
    # the accelerator model: INT8 rows only, and the pruned model is estimated faster
    assert by["dense", "fp32"]["fpga_fps"] is None
    assert by["l2_p40", "int8"]["fpga_fps"] > by["dense", "int8"]["fpga_fps"] > 0
    breakdown = json.loads((run / "results.json").read_text())["breakdown"]
    assert breakdown["latency_ms"] > 0 and len(breakdown["furthest_from_floor"]) == 3
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html  # self-contained


def test_rerun_with_the_same_config_does_no_work(finished_study):
    config = finished_study
    stamps = {p: p.stat().st_mtime_ns for p in config.run_dir.rglob("stage.json")}
    start = time.perf_counter()
    second = study_with_report(config, log=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in config.run_dir.rglob("stage.json")} == stamps
    assert time.perf_counter() - start < 60
    # the recorded stages give back the first run's numbers
    rows = json.loads((config.run_dir / "results.json").read_text())["rows"]
    recorded = {(r["variant"], r["runtime"], r["precision"]): (r["score"], r["latency_ms"], r["size_mib"])
                for r in rows}
    assert {(v.name, runtime, precision): (rt["score"], rt["latency"]["median_ms"], rt["size_mib"])
            for v in second.variants for runtime, by_precision in v.deployments.items()
            for precision, rt in by_precision.items()} == recorded


def _accuracies(run: Path) -> list[tuple]:
    rows = json.loads((run / "results.json").read_text())["rows"]
    return sorted((r["variant"], r["runtime"], r["precision"], r["score"], r["score_torch"]) for r in rows)


def test_study_killed_during_finetuning_resumes_to_the_same_numbers(finished_study, tmp_path):
    study = _mini(tmp_path, name="killed", **_FINETUNE)
    proc = subprocess.Popen(_study_process(study), env=_ONE_THREAD)
    state = study.run_dir / "prune" / "l2_p40" / "finetune" / "train_state.safetensors"
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "the fine-tuning never wrote its first epoch checkpoint"
    proc.send_signal(signal.SIGKILL)  # after fine-tuning epoch 1 of 2
    proc.wait()
    assert not (study.run_dir / "report.md").exists()
    subprocess.run(_study_process(study), env=_ONE_THREAD, check=True, timeout=900)
    assert _accuracies(study.run_dir) == _accuracies(finished_study.run_dir)
    # stronger than accuracies of a tiny model: the resumed fine-tuning ends in the same weights
    weights = [load_file(c.run_dir / "prune" / "l2_p40" / "model.safetensors")
               for c in (study, finished_study)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _stage(folder: Path) -> dict:
    return json.loads((folder / "stage.json").read_text())


def test_dense_reference_gets_the_pruned_models_finetuning_budget(finished_study):
    from vitedge.io import read_metadata
    from vitedge.workflows.stages import file_digest

    run = finished_study.run_dir
    reference, pruned = _stage(run / "dense_finetune"), _stage(run / "prune" / "l2_p40")
    baseline = _stage(run / "baseline")["result"]
    # ratio 0 through the pruned models' recipe: the same settings, from the same baseline
    assert reference["key"] == {**pruned["key"], "ratio": 0.0}
    configs = [json.loads((stage / "finetune" / "metrics.json").read_text())["config"]
               for stage in (run / "dense_finetune", run / "prune" / "l2_p40")]
    assert configs[0]["epochs"] == 2 and configs[0]["distill"]["teacher"] == "dense"
    assert {**configs[0], "out": None} == {**configs[1], "out": None}  # epochs, lr, crops, distillation
    assert configs[0]["model"] == baseline["checkpoint"]
    tuned = load_file(reference["result"]["checkpoint"])
    before = load_file(baseline["checkpoint"])
    assert not all(torch.equal(tuned[k], before[k]) for k in tuned)
    # the dense rows, its INT8 and the recommendation's reference are that model, not the baseline
    results = json.loads((run / "results.json").read_text())
    dense_fp32 = [r for r in results["rows"] if r["variant"] == "dense" and r["precision"] == "fp32"]
    assert dense_fp32 and all(r["score_torch"] == reference["result"]["score_fp32"] for r in dense_fp32)
    for runtime in deployment_matrix(finished_study):
        quantized = run / "quantize" / "dense" / runtime / "model.safetensors"
        assert read_metadata(quantized)["extra"]["source"] == reference["result"]["checkpoint"]
    assert _stage(run / "export" / "dense_fp32")["key"]["source"] == file_digest(reference["result"]["checkpoint"])
    report = (run / "report.md").read_text()
    assert "The dense reference got the same fine-tuning budget as the pruned models (2 epochs" in report
    assert f"{baseline['score']:.2f} → {reference['result']['score_fp32']:.2f} %" in report
    assert "fine-tuned with the same budget" in results["recommendation"]


def _photo_folder(root: Path, classes=("cat", "dog", "fox"), per_split={"train": 30, "test": 10}) -> Path:
    """A tiny image folder of non-square photos (class = a tint), where the crop changes the pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 56, 3)).astype(np.float32)
                pixels[..., c] = 0.5 * pixels[..., c] + 120
                pixels[8:32, 12:44] = 255 - pixels[8:32, 12:44]  # a centre unlike the border
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_every_artifact_records_the_studys_preprocessing_and_eval_agrees(tmp_path, monkeypatch, capsys):
    """A checkpoint trained elsewhere with other preprocessing: the study's crop and size are the ones
    every checkpoint and ONNX file it writes records, so `vitedge eval` and `vitedge predict` on them
    give the report's numbers. Without fine-tuning the dense reference is the baseline itself."""
    from test_cli import run_cli

    import vitedge
    from vitedge.deploy import read_onnx_metadata
    from vitedge.io import read_metadata

    photos = _photo_folder(tmp_path / "photos")
    own = {"input_size": [3, 64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_pct": 0.6,
           "interpolation": "bilinear"}
    torch.manual_seed(0)
    given = vitedge.save(vitedge.create_model("efficientvit_b0", num_classes=3), tmp_path / "given.safetensors",
                         extra={"classes": ["cat", "dog", "fox"], "data_config": own})
    config = _mini(tmp_path, name="given", **{
        "data.dataset": str(photos), "checkpoint": str(given), "data.crop_pct": 1.0, "pruning.finetune.epochs": 0,
        "deploy.runtime": "onnxruntime", "deploy.breakdown": False})
    config = dataclasses.replace(config, deploy=dataclasses.replace(config.deploy, accelerator=None))
    study_with_report(config, log=lambda line: None)
    run = config.run_dir
    expected = {**own, "input_size": [3, 32, 32], "crop_pct": 1.0}  # the checkpoint's, the study's on top
    checkpoints = [p for p in run.rglob("*.safetensors") if "state" not in p.name]
    assert len(checkpoints) == 4  # baseline copy, pruned, both INT8
    for path in checkpoints:
        assert read_metadata(path)["extra"]["data_config"] == expected, path
    onnx_files = sorted(run.rglob("*.onnx"))
    assert len(onnx_files) == 4
    for path in onnx_files:
        assert read_onnx_metadata(path)["vitedge.preprocessing"] == expected, path
    assert not (run / "dense_finetune").exists()  # no fine-tuning: nothing to give the dense model
    assert "The dense reference got the same fine-tuning budget" not in (run / "report.md").read_text()

    rows = {(r["variant"], r["precision"]): r for r in json.loads((run / "results.json").read_text())["rows"]}
    assert rows["dense", "fp32"]["score_torch"] == _stage(run / "baseline")["result"]["score"]
    # `vitedge eval` on each FP32 checkpoint the study exported gives the report's PyTorch number
    for variant, checkpoint in (("dense", run / "baseline" / "model.safetensors"),
                                ("l2_p40", run / "prune" / "l2_p40" / "model.safetensors")):
        code, out, err = run_cli(monkeypatch, capsys, "eval", str(checkpoint), "--data", str(photos), "--json", "-")
        assert code == 0, err
        assert json.loads(out)["top1"] == pytest.approx(rows[variant, "fp32"]["score_torch"], abs=1e-9)
    # `vitedge predict` on every test image with the exported FP32 file gives the report's FP32 number
    images = sorted((photos / "test").rglob("*.png"))
    for variant in ("dense", "l2_p40"):
        code, out, err = run_cli(monkeypatch, capsys, "predict", *map(str, images), "--model",
                                 str(run / "export" / f"{variant}_fp32" / "model.onnx"), "--top", "1",
                                 "--threads", "1")
        assert code == 0, err
        predicted = dict(line.split(": ", 1) for line in out.strip().splitlines())
        correct = sum(predicted[str(p)].split()[0] == p.parent.name for p in images)
        assert 100.0 * correct / len(images) == pytest.approx(rows[variant, "fp32"]["score"], abs=1e-9)


def test_a_search_budget_out_of_reach_fails_before_any_fine_tuning(tmp_path):
    import vitedge

    photos = _photo_folder(tmp_path / "photos")
    given = vitedge.save(vitedge.create_model("efficientvit_b0", num_classes=3), tmp_path / "given.safetensors",
                         extra={"classes": ["cat", "dog", "fox"]})
    config = _mini(tmp_path, name="unreachable", **{
        "data.dataset": str(photos), "checkpoint": str(given), "pruning.ratios": [0.5], "pruning.mode": "search",
        "pruning.search.runtime": "onnxruntime", "pruning.search.precision": "fp32", "pruning.search.grid": [0.5],
        "pruning.search.compare_budgets": ["latency:0.0001"], "pruning.search.budget": "uniform:0.5",
        "pruning.search.runs": 5, "pruning.search.rounds": 1, "deploy.runtime": "onnxruntime"})
    with pytest.raises(VitedgeError, match=r"pruning.search budget 'latency:0.0001': a latency of 0.000 ms cannot "
                                           r"be met: the fastest configuration"):
        run_study(config, log=lambda line: None)
    run = config.run_dir
    assert (run / "search" / "latency_onnxruntime_fp32.json").is_file()  # measured once, kept for the rerun
    assert not (run / "dense_finetune").exists() and not (run / "prune").exists()


def test_a_searched_model_joins_the_uniform_ones_in_every_table(tmp_path):
    """``pruning.mode: search``: a model with a ratio per stage, searched under the measured latency
    of uniform pruning (and one more under a compared budget), goes through quantization, export
    and the runtime like the others; the report says what was chosen, predicted against measured
    latency, and where channels were kept."""
    import vitedge

    photos = _photo_folder(tmp_path / "photos")
    torch.manual_seed(0)
    given = vitedge.save(vitedge.create_model("efficientvit_b0", num_classes=3), tmp_path / "given.safetensors",
                         extra={"classes": ["cat", "dog", "fox"]})
    config = _mini(tmp_path, name="searched", **{
        "data.dataset": str(photos), "checkpoint": str(given), "pruning.finetune.epochs": 0,
        "pruning.ratios": [0.5], "pruning.compare": ["random"], "pruning.mode": "search",
        "pruning.search.runtime": "onnxruntime",
        "pruning.search.precision": "fp32", "pruning.search.grid": [0.5], "pruning.search.budget": "uniform:0.5",
        "pruning.search.compare_budgets": ["uniform:0.5/0.9"],
        "pruning.search.images": 8, "pruning.search.runs": 10, "pruning.search.rounds": 1,
        "deploy.runtime": "onnxruntime", "deploy.breakdown": False})
    config = dataclasses.replace(config, deploy=dataclasses.replace(config.deploy, accelerator=None))
    study_with_report(config, log=lambda line: None)
    run = config.run_dir
    results = json.loads((run / "results.json").read_text())
    slower = "searched_uniform-0.5-0.9"  # the compared budget: 1/0.9 of uniform 50 %'s latency
    assert {(r["variant"], r["precision"]) for r in results["rows"]} == {
        (v, p) for v in ("dense", "l2_p50", "random_p50", "searched", slower) for p in ("fp32", "int8")}
    search = results["search"]
    stages = {"stages.0", "stages.1", "stages.2", "stages.3", "head"}
    assert set(search["stage_ratios"]) <= stages and set(search["stage_ratios"].values()) <= {0.5}
    assert search["runtime"] == "onnxruntime" and search["predicted_ms"] <= search["budget_ms"]
    # the budget is the uniform 50 % model's latency as the table predicts it
    from vitedge.bench.latency_model import LatencyTable

    table = LatencyTable.from_dict(json.loads((run / "search" / "latency_onnxruntime_fp32.json").read_text()))
    assert search["budget_ms"] == pytest.approx(table.predict({s: 0.5 for s in table.stages}))
    # the compared budget's search used the same table and sensitivity, measured once
    other = search["compared"][slower]
    assert other["budget"] == "uniform:0.5/0.9" and other["budget_ms"] == pytest.approx(search["budget_ms"] / 0.9)
    assert other["predicted_ms"] <= other["budget_ms"] and (run / "search_uniform-0.5-0.9" / "pruned").is_dir()
    assert [p.parent.name for p in run.rglob("latency_onnxruntime_fp32.json")] == ["search"]
    assert len(list(run.rglob("sensitivity"))) == 1
    kept = search["kept_channels"]
    main, second = "searched uniform 50%", "searched 0.9× uniform 50%"
    assert set(kept) == {"dense", "50%", "50% random", main, second} and set(kept["dense"]) == stages
    assert kept["50% random"] == kept["50%"]  # another ranking, the same widths
    for stage in stages:  # pruned stages (narrower or with blocks removed) keep fewer channels
        assert kept["50%"][stage] < kept["dense"][stage]
        for name, record in ((main, search), (second, other)):
            cut = stage in record["stage_ratios"] or stage in record["stage_drops"]
            assert (kept[name][stage] < kept["dense"][stage]) == cut, (name, stage)
    report = (run / "report.md").read_text()
    assert "## Searched pruning" in report and "Latency model — predicted vs measured" in report
    for name in (main, second):  # the matrix (FP32, INT8), Tables 1 and 3, the latency model
        assert report.count(f"| {name} |") == 5, name
    assert report.count("| 50% random |") == 5  # the compared criterion's row beside it, named
    assert "0.9× faster than the latency the table predicts for uniform 50% pruning" in report
    assert (run / "plots" / "kept_channels.png").stat().st_size > 0
    # a second run measures nothing again
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("stage.json")}
    study_with_report(config, log=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("stage.json")} == stamps
