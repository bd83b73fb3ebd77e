"""The library functions behind the thin CLI: what the commands used to compute themselves
(overrides, configs from options, study choices, metric tables), each callable without the CLI."""

from __future__ import annotations

import pytest

from vitedge.errors import VitedgeError
from vitedge.workflows.accelerator import parse_overrides
from vitedge.workflows.recipes import LATENCY_PLAN_TARGETS, latency_refiner, metrics_table
from vitedge.workflows.study_options import study_overrides
from vitedge.workflows.training import DEFAULTS, OPTION_FIELDS, recipe_config, training_config


def test_parse_overrides_types_each_value():
    assert parse_overrides(["ddr_gbps=4.5", "pes=8", "strict_lanes=TRUE", "x=-2"]) == {
        "ddr_gbps": 4.5, "pes": 8, "strict_lanes": True, "x": -2}
    assert isinstance(parse_overrides(["pes=8"])["pes"], int)


@pytest.mark.parametrize("item,fragment", [("lanes", "KEY=VALUE"), ("=3", "KEY=VALUE"),
                                           ("ddr_gbps=fast", "is not a number")])
def test_parse_overrides_refuses_bad_text(item, fragment):
    with pytest.raises(VitedgeError, match=fragment):
        parse_overrides([item])


def test_training_config_takes_only_the_given_options():
    cfg = training_config({"model": "efficientvit_b0", "img_size": 32, "min_scale": 0.5, "data_dir": DEFAULTS.out})
    assert (cfg.data.img_size, cfg.data.scale, cfg.data.root) == (32, (0.5, 1.0), DEFAULTS.out)
    assert cfg.optim == DEFAULTS.optim and cfg.epochs == DEFAULTS.epochs
    assert set(OPTION_FIELDS) >= {"model", "img_size", "data", "data_dir", "lr", "epochs"}


@pytest.mark.parametrize("options,fragment", [({}, "give a MODEL"), ({"model": "efficientvit_b0", "lrr": 1},
                                                                    "unknown training option")])
def test_training_config_refuses(options, fragment):
    with pytest.raises(VitedgeError, match=fragment):
        training_config(options)


def test_resuming_needs_a_run(tmp_path):
    with pytest.raises(VitedgeError, match="nothing to resume"):
        training_config({}, resume=True, out=tmp_path)


def test_recipe_config_keeps_one_epoch_for_data_only_recipes():
    cfg = recipe_config(0, seed=3, data="cifar10", root=None, batch_size=8, workers=0, lr=1e-4,
                        more={"distill.alpha": 0.7})
    assert (cfg.epochs, cfg.seed, cfg.data.dataset, cfg.data.batch_size, cfg.optim.lr, cfg.distill.alpha) == (
        1, 3, "cifar10", 8, 1e-4, 0.7)


def test_metrics_table_names_the_metric():
    rows = (("score_dense", "dense"), ("score_pruned", "pruned"))
    assert metrics_table({"score_dense": 70.0}, rows).rows == [["top-1 dense", "70.00"]]
    seg = metrics_table({"score_dense": 48.3, "score_pruned": 40.0, "metric": "miou"}, rows)
    assert [row[0] for row in seg.rows] == ["mIoU dense", "mIoU pruned"]


def test_latency_refiner_only_for_runtimes_that_run_here():
    assert latency_refiner("never-read.safetensors", "simulation") is None
    assert set(LATENCY_PLAN_TARGETS) == {"openvino", "onnxruntime"}


def test_study_overrides():
    plain = study_overrides("quick", "fashion-mnist", "efficientvit_b0")
    assert all(value is None for value in plain.values())
    other = study_overrides("quick", "fashion-mnist", "efficientvit_b0", data="data/flowers")
    assert other["name"] == "quick-flowers"
    assert study_overrides("quick", "fashion-mnist", "efficientvit_b0", data="x", name="mine")["name"] == "mine"
    assert study_overrides("quick", "fashion-mnist", "efficientvit_b0", task="seg")["model"] == "efficientvit_seg_b0"
    assert study_overrides("q", "camvid", "efficientvit_seg_b1", task="seg")["model"] is None

