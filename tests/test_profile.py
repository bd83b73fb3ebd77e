"""The profiler reproduces the published params and MACs of the whole zoo."""

from __future__ import annotations

import pytest
import torch.nn as nn

import vitedge
from vitedge.bench import profile, torch_latency
from vitedge.bench.latency import measure_latency
from vitedge.bench.published import PUBLISHED_COST


@pytest.mark.parametrize("name", sorted(PUBLISHED_COST))
def test_params_and_macs_within_two_percent_of_published(name):
    stats = profile(vitedge.create_model(name))
    ref_params, ref_macs = PUBLISHED_COST[name]
    assert stats["params"] / 1e6 == pytest.approx(ref_params, rel=0.02)
    assert stats["macs"] / 1e6 == pytest.approx(ref_macs, rel=0.02)


def test_macs_count_the_attention_matmuls():
    for name in ("efficientvit_b0", "efficientvit_m0"):
        model = vitedge.create_model(name)
        # Both attention kinds add matmul MACs on top of what conv/linear layers do.
        assert profile(model)["macs"] > _conv_linear_macs(model, 224)


def test_profile_memory_fields_and_resolution_scaling():
    model = vitedge.create_model("efficientvit_b0")
    small, large = profile(model, resolution=224), profile(model, resolution=448)
    assert small["weight_bytes"] >= 4 * small["params"]
    assert large["activation_bytes"] > 3.5 * small["activation_bytes"]
    assert large["macs"] > 3.5 * small["macs"]
    assert small["peak_layer_bytes"] > 0


def test_latency_harness_reports_ordered_statistics():
    result = torch_latency(vitedge.create_model("efficientvit_m0"), warmup=1, runs=5, threads=1)
    assert result.min_ms <= result.median_ms <= result.p90_ms
    assert result.to_dict()["throughput"] == pytest.approx(1000.0 / result.median_ms)
    assert result.threads == 1 and result.batch_size == 1


def test_latency_harness_refuses_zero_runs():
    with pytest.raises(vitedge.VitedgeError):
        measure_latency(lambda: None, backend="none", batch_size=1, threads=1, runs=0)


def _conv_linear_macs(model: nn.Module, res: int) -> int:
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, res, res))
    for h in handles:
        h.remove()
    return total


def test_alternated_latency_times_each_model_in_blocks():
    """Models alternate in blocks of consecutive runs (after settle runs), never run by run:
    interleaving two engines' spinning thread pools run by run distorts both several-fold."""
    from vitedge.bench.latency import measure_alternated

    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    results = measure_alternated(runners, backend="none", batch_size=1, threads=1, warmup=1, runs=5, block=3,
                                 settle=1)
    assert {name: r.runs for name, r in results.items()} == {"a": 5, "b": 5}
    # warm-up, then per round: settle + block for a, then for b; the last block is short
    assert "".join(calls) == "a" + "b" + "a" * 4 + "b" * 4 + "a" * 3 + "b" * 3
    with pytest.raises(vitedge.VitedgeError):
        measure_alternated(runners, backend="none", batch_size=1, threads=1, block=0)


def test_profile_takes_height_and_width_like_export():
    """A segmentation user passes (height, width); twice the pixels cost about twice the MACs."""
    model = vitedge.create_model("efficientvit_seg_b0", num_classes=11)
    wide = profile(model, resolution=(128, 256))
    square = profile(model, resolution=128)
    assert wide["input_size"] == [3, 128, 256]
    assert 1.9 < wide["macs"] / square["macs"] < 2.1
    for bad in ((0, 5), (128,), 12.5, "224"):
        with pytest.raises(vitedge.VitedgeError, match="resolution must be a positive side"):
            profile(model, resolution=bad)
