"""Searching per-stage pruning under a latency budget: the search finds the optimum of its
models, never breaks the budget, says when it cannot be met; sensitivity is measured on held-out
training images and grows with the ratio."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

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


def test_the_search_removes_blocks_where_they_cost_time_and_little_accuracy():
    """A Microsoft model: widths and whole blocks searched together, still the brute-force optimum."""
    table = _table()
    table = LatencyTable(**{**table.__dict__, "max_drops": {"stages.1": 1, "stages.2": 2},
                            "ms_per_block": {"stages.1": 0.1, "stages.2": 0.4}})
    sens = _sensitivity()
    sens.depth_blocks = {"stages.1": [1], "stages.2": [2, 0]}
    sens.depth_kl = {"stages.1": {"1": 0.05}, "stages.2": {"1": 0.001, "2": 0.2}}  # stage 2's block 2 is free
    sens.depth_score = {"stages.1": {"1": -5.0}, "stages.2": {"1": -0.1, "2": -20.0}}
    options = {"stages.0": [(r, 0) for r in (0.0, *RATIOS)],
               "stages.1": [(r, k) for r in (0.0, *RATIOS) for k in (0, 1)],
               "stages.2": [(r, k) for r in (0.0, *RATIOS) for k in (0, 1, 2)]}
    for budget in (3.9, 3.5, 3.2, 3.0):
        result = search(table, sens, budget)
        drops = {s: len(b) for s, b in result.stage_drops.items()}
        assert result.predicted_ms == pytest.approx(table.predict(result.stage_ratios, drops))
        assert result.predicted_ms <= budget
        brute = min((sum(sens.kl[s][f"{r:g}"] for s, (r, _) in zip(STAGES, c) if r)
                     + sum(sens.depth_kl[s][str(k)] for s, (_, k) in zip(STAGES, c) if k),
                     table.predict({s: r for s, (r, _) in zip(STAGES, c) if r},
                                   {s: k for s, (_, k) in zip(STAGES, c) if k}))
                    for c in itertools.product(*options.values())
                    if table.predict({s: r for s, (r, _) in zip(STAGES, c) if r},
                                     {s: k for s, (_, k) in zip(STAGES, c) if k}) <= budget)
        assert (result.predicted_kl, result.predicted_ms) == pytest.approx(brute)
    # a budget that the nearly free block meets: it goes first, the blocks named as the sensitivity ordered them
    assert search(table, sens, 3.6).stage_drops == {"stages.2": [2]}


def test_a_macs_budget_takes_the_least_divergent_configuration_that_fits_it():
    table, sens = _table(), _sensitivity()
    share = {"stages.0": 0.1, "stages.1": 0.3, "stages.2": 0.6}  # each stage's share of the MACs
    asked = []

    def macs_of(config, blocks):
        asked.append(dict(config))
        return 1 - sum(share[s] * r for s, r in config.items())

    free = search(table, sens, 3.9)
    assert macs_of(free.stage_ratios, {}) > 0.8
    asked.clear()
    bounded = search(table, sens, 3.9, max_macs=0.8, macs_of=macs_of)
    assert macs_of(bounded.stage_ratios, {}) <= 0.8 and bounded.predicted_kl > free.predicted_kl
    feasible = [c for c in ({s: r for s, r in zip(STAGES, choice) if r}
                            for choice in itertools.product((0.0, *RATIOS), repeat=3))
                if table.predict(c) <= 3.9 and macs_of(c, {}) <= 0.8]
    assert bounded.predicted_kl == pytest.approx(min(sum(sens.kl[s][f"{r:g}"] for s, r in c.items()) for c in feasible))
    with pytest.raises(VitedgeError, match="no configuration within 3.900 ms keeps at most 10% of the MACs"):
        search(table, sens, 3.9, max_macs=0.1, macs_of=macs_of)


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
    # a split smaller than both sets asked for (12 images): half re-estimates BatchNorm, half scores
    small = measure_sensitivity(model, data, ratios=(0.3,), images=64, bn_images=256, log=lambda _: None)
    assert small.images == 6


def test_a_miniature_search_runs_end_to_end_and_resumes(tiny_classifier, tmp_path, monkeypatch, capsys):
    from test_cli import run_cli

    data_dir, checkpoint = tiny_classifier
    # a budget of twice the dense latency: met whatever 32 px timings do on a busy machine
    args = ("search", str(checkpoint), "--runtime", "onnxruntime", "--precision", "fp32", "--speedup", "0.5",
            "--data", str(data_dir), "--ratio", "0.5", "--images", "4", "--runs", "3", "--threads", "1",
            "--out", str(tmp_path / "search"))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    chosen, metrics = record["search"], record["metrics"]
    assert chosen["predicted_ms"] <= chosen["budget_ms"] and metrics["measured_ms"] > 0
    assert set(chosen["stage_ratios"]) <= {"stages.0", "stages.1", "stages.2", "stages.3", "head"}
    assert Path(record["deployed"]).is_file() and 0 <= metrics["score"] <= 100
    assert "sensitivity 1/5" in out and "searched (" in out
    code, out, err = run_cli(monkeypatch, capsys, *args)  # every stage cached: nothing measured again
    assert code == 0 and "sensitivity 1/" not in out and "latency table:" not in out
    # X times faster than uniform R: the budget is the table's uniform model divided by X (0.5: twice
    # its latency, met whatever the timings); table and sensitivity come from the cache
    faster = [*args[:6], "--match-uniform", "0.5", "--speedup", "0.5", *args[8:]]
    code, out, err = run_cli(monkeypatch, capsys, *faster)
    assert code == 0 and "sensitivity 1/" not in out, err
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    table = LatencyTable.from_dict(record["table"])
    assert record["search"]["budget_ms"] == pytest.approx(table.predict({s: 0.5 for s in table.stages}) / 0.5)
    assert record["metrics"]["budget_from"] == "uniform 50% / 0.5"


@pytest.mark.parametrize("extra, message", [
    (("--runtime", "tflite"), "unknown runtime 'tflite'"),
    (("--speedup", "2", "--latency-ms", "1"), "give the budget as one of --latency-ms, --speedup or --match-uniform"),
    (("--match-uniform", "0.4", "--speedup", "0"), "the budget must be positive, got 0, 0.4"),
    (("--latency-ms", "-1"), "the budget must be positive"),
    (("--match-uniform", "0.3"), "is not a ratio of the grid [0.2, 0.4, 0.6]"),
    (("--max-macs", "1.5"), "--max-macs is a share of the dense model's MACs in (0, 1], got 1.5"),
    (("--precision", "fp16"), "fp32, bf16 or int8"),
    (("--precision", "bf16"), "onnxruntime runs FP32 files in fp32"),
])
def test_bad_search_input_is_one_line_before_any_measurement(tiny_classifier, tmp_path, monkeypatch, capsys,
                                                              extra, message):
    from test_cli import assert_one_line_error, run_cli

    data_dir, checkpoint = tiny_classifier
    base = {"--runtime": "onnxruntime", "--speedup": "1.5"}
    options = [*(x for k, v in base.items() if k not in extra for x in (k, v)), *extra]
    if {"--latency-ms", "--match-uniform"} & set(extra) and "--speedup" not in extra:
        options = [o for o in options if o not in ("--speedup", "1.5")]
    code, _, err = run_cli(monkeypatch, capsys, "search", str(checkpoint), "--data", str(data_dir), *options,
                           "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "s").exists()  # nothing measured, nothing written


def test_a_checkpoint_of_another_task_or_an_unmeetable_budget_is_one_line(tiny_classifier, tmp_path,
                                                                           monkeypatch, capsys):
    from test_cli import assert_one_line_error, run_cli

    data_dir, checkpoint = tiny_classifier
    seg = vitedge.save(vitedge.create_model("efficientvit_seg_b0", num_classes=2),
                       tmp_path / "seg.safetensors", extra={"classes": ["ant", "bee"]})
    code, _, err = run_cli(monkeypatch, capsys, "search", str(seg), "--data", str(data_dir), "--runtime",
                           "onnxruntime", "--speedup", "1.5", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "is a segmentation model")
    code, _, err = run_cli(monkeypatch, capsys, "search", str(checkpoint), "--data", str(data_dir),
                           "--runtime", "onnxruntime", "--precision", "fp32", "--latency-ms", "0.000001",
                           "--ratio", "0.5", "--runs", "3", "--out", str(tmp_path / "s2"))
    assert_one_line_error(code, err, "cannot be met: the fastest configuration of the grid is predicted at")
    assert not (tmp_path / "s2" / "sensitivity").exists()  # stopped before the sensitivity


def test_bf16_is_searched_only_where_openvino_has_it(tiny_classifier, tmp_path, monkeypatch, capsys):
    from test_cli import assert_one_line_error, run_cli

    from vitedge.deploy.runtimes import native_bf16

    if native_bf16():
        pytest.skip("this CPU has native bf16: OpenVINO searches it")
    data_dir, checkpoint = tiny_classifier
    code, _, err = run_cli(monkeypatch, capsys, "search", str(checkpoint), "--speedup", "2", "--data", str(data_dir),
                           "--runtime", "openvino", "--precision", "bf16", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "this CPU has none")
    assert not (tmp_path / "s").exists()
