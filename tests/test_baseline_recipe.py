"""The baseline recipe script: every job is a valid config, and the report it writes is sound."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_baseline.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_jobs_are_valid_configs(recipe, tmp_path):
    targets = {job.name: job.target_top1 for job in recipe.JOBS}
    assert targets["b0-cifar10-ft"] == 85.0 and targets["b0-fashion-mnist"] == 92.0
    names = [job.name for job in recipe.JOBS]
    for job in recipe.JOBS:
        cfg = job.config(tmp_path, "data", workers=0, seed=0)
        assert cfg.out == str(tmp_path / job.name) and cfg.data.crop_pct == 1.0
        if job.model.startswith("efficientvit_b"):
            assert job.img_size % 32 == 0  # the MIT family's constraint; no stem surgery
        if job.init_from:  # a second stage starts from an earlier job's final model
            assert names.index(job.init_from) < names.index(job.name)
            assert cfg.model == str(tmp_path / job.init_from / "model.safetensors")


def test_second_stage_without_its_first_is_a_clear_error(recipe, tmp_path, capsys):
    (tmp_path / "train").mkdir()  # looks like CIFAR-10 to the script; the job fails before reading it
    code = recipe.main(["--cifar-dir", str(tmp_path), "--only", "b0-cifar10-ft", "--out", str(tmp_path / "o")])
    assert code == 2 and "run --only b0-cifar10,b0-cifar10-ft" in capsys.readouterr().err


def test_report_from_a_finished_job(recipe, tmp_path):
    job = next(j for j in recipe.JOBS if j.target_top1 == 85.0)
    cfg = job.config(tmp_path, "data", workers=0, seed=0)
    history = [{"epoch": 1, "epoch_seconds": 1800.0, "eval_seconds": 36.0, "images_per_s": 250.0}]
    (tmp_path / job.name).mkdir()
    (tmp_path / job.name / "metrics.json").write_text(json.dumps({
        "config": cfg.to_dict(), "history": history,
        "final": {"top1": 86.5, "top5": 99.1, "num_samples": 10000}}))
    recipe._write_report(tmp_path, "python benchmarks/train_baseline.py ...")
    rows = json.loads((tmp_path / "baselines.json").read_text())
    assert rows[0]["meets_target"] is True and rows[0]["wall_hours"] == pytest.approx(0.51)
    assert f"1/{job.epochs}" in (tmp_path / "baselines.md").read_text()  # a partial run says so
