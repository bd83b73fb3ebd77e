"""Searching per-stage pruning under a latency budget: the search finds the optimum of its
models, never breaks the budget, says when it cannot be met; sensitivity is measured on held-out
training images and grows with the ratio."""

from __future__ import annotations

import itertools

import pytest

import vitedge
from vitedge.bench.latency_model import LatencyTable
from vitedge.errors import VitedgeError
from vitedge.train import DataConfig
from vitedge.train.task_data import TaskData
from vitedge.workflows.search import Sensitivity, measure_sensitivity, search

STAGES = ("stages.0", "stages.1", "stages.2")
RATIOS = (0.2, 0.4, 0.6)


def _table() -> LatencyTable:
    # stage 2 holds most of the time, stage 0 little of it
    saved = {"stages.0": 0.05, "stages.1": 0.3, "stages.2": 1.0}
    deltas = {s: {f"{r:g}": -saved[s] * r for r in RATIOS} for s in STAGES}
    return LatencyTable("m", "onnxruntime", "fp32", 224, 1, 1, "cpu", RATIOS, 4.0, deltas)


def _sensitivity() -> Sensitivity:
    # stage 0 cheap to prune, stage 2 costly, superlinear in the ratio
    weight = {"stages.0": 0.01, "stages.1": 0.05, "stages.2": 0.2}
    kl = {s: {f"{r:g}": weight[s] * r * r for r in RATIOS} for s in STAGES}
    score = {s: {f"{r:g}": -100 * v for r, v in zip(RATIOS, kl[s].values())} for s in STAGES}
    return Sensitivity("top1", RATIOS, 90.0, 256, kl, score)


def test_the_search_returns_the_best_configuration_within_the_budget():
    table, sens = _table(), _sensitivity()
    for budget in (3.9, 3.6, 3.4, 3.2):
        result = search(table, sens, budget)
        assert result.predicted_ms <= budget
        grid = itertools.product((0.0, *RATIOS), repeat=3)
        configs = [{s: r for s, r in zip(STAGES, c) if r} for c in grid]
        brute = min((sum(sens.kl[s][f"{r:g}"] for s, r in c.items()), table.predict(c)) for c in configs
                    if table.predict(c) <= budget)
        assert (result.predicted_kl, result.predicted_ms) == pytest.approx(brute)
        assert result.predicted_score == pytest.approx(90.0 - 100 * result.predicted_kl)
    # a loose budget prunes the cheap stages first; the dense model when nothing is needed
    assert search(table, sens, 10.0).stage_ratios == {}
    assert set(search(table, sens, 3.9).stage_ratios) <= {"stages.0", "stages.1", "stages.2"}


def test_a_budget_below_the_fastest_configuration_is_one_line():
    with pytest.raises(VitedgeError, match=r"cannot be met: the fastest .* predicted at 3\.190 ms"):
        search(_table(), _sensitivity(), 3.0 - 0.9)


def test_sensitivity_on_held_out_training_images(tiny_classifier):
    data_dir, checkpoint = tiny_classifier
    model = vitedge.load(checkpoint)
    data = TaskData(DataConfig(dataset=str(data_dir), img_size=32), model.data_config, ["ant", "bee"])
    sens = measure_sensitivity(model, data, ratios=(0.3, 0.6), images=6, bn_images=6, log=lambda _: None)
    assert sens.images == 6 and sens.metric == "top1" and 0 <= sens.dense_score <= 100
    assert set(sens.kl) == {"stages.0", "stages.1", "stages.2", "stages.3", "head"}
    # pruning moves the model away from the dense one, more so at 60 % (over the stages)
    assert all(v > 0 for stage in sens.kl.values() for v in stage.values())
    assert sum(k["0.6"] for k in sens.kl.values()) > sum(k["0.3"] for k in sens.kl.values())
    with pytest.raises(VitedgeError, match="no images left"):
        measure_sensitivity(model, data, ratios=(0.3,), images=6, bn_images=12, log=lambda _: None)
