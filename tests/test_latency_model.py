"""The latency model's arithmetic and cache, with a deterministic stand-in for the clock: the
weights a file holds (what a stage's pruning changes, and only that stage's)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from onnx import numpy_helper

import vitedge
from vitedge.bench.latency_model import LatencyTable, check_table, fit_rates, machine_fingerprint, measure_table
from vitedge.errors import VitedgeError

RES = 64
pytestmark = pytest.mark.usefixtures("one_thread")


def weights_clock(runtime, sources):
    """A clock that reads 1 ms per 10k weights: additive over stages exactly when pruning one
    stage leaves every other stage's layers as they were."""
    out = {}
    for path, _ in sources:
        graph = onnx.load(path).graph
        out[path] = sum(numpy_helper.to_array(t).size for t in graph.initializer) / 1e4
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vitedge.create_model("efficientvit_b0", num_classes=10).eval()


def test_the_fit_recovers_a_fixed_cost_and_non_negative_rates():
    rng = torch.Generator().manual_seed(0)
    features = torch.rand(19, 4, generator=rng).tolist()
    truth = [0.5, 0.0, 2.0, 0.1]
    latencies = [10.0 - sum(w * f for w, f in zip(truth, row)) for row in features]
    fixed, rates = fit_rates(features, latencies)
    assert fixed == pytest.approx(10.0) and rates == pytest.approx(truth, abs=1e-9)
    # a stage whose cut measured slower (noise, or a kernel that dislikes the width) gets rate 0, not < 0
    latencies = [ms + 0.3 * row[1] for ms, row in zip(latencies, features)]
    fixed, rates = fit_rates(features, latencies)
    assert rates[1] == 0.0 and all(w >= 0 for w in rates)


def test_a_configuration_is_a_fixed_cost_minus_a_rate_per_stage_times_the_macs_it_removes(model, tmp_path):
    cache = tmp_path / "table.json"
    table = measure_table(model, runtime="onnxruntime", precision="fp32", resolution=RES, name="b0",
                          ratios=(0.3, 0.6), rounds=1, cache=cache, timer=weights_clock, log=lambda _: None)
    assert table.stages == ["stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert all(table.deltas[s]["0.6"] < table.deltas[s]["0.3"] < 0 for s in table.stages)
    assert all(table.macs_saved[s]["0.6"] > table.macs_saved[s]["0.3"] > 0 for s in table.stages)
    # the uniformly pruned models are kept as measured: the budget "as fast as uniform 40 %" reads them
    assert table.uniform_ms["0.6"] < table.uniform_ms["0.3"] < table.dense_ms
    # a stage's weights are nearly proportional to its MACs at one resolution, so the fit of the weights
    # clock is close (not exact: downsampling layers hold weights at another resolution than the rest)
    assert table.uniform_ms["0.3"] == pytest.approx(table.predict({s: 0.3 for s in table.stages}), rel=0.03)
    configs = [{"stages.2": 0.3, "stages.3": 0.6}, {"stages.1": 0.6, "head": 0.3, "stages.3": 0.3}]
    checked = check_table(model, table, configs, rounds=1, timer=weights_clock)
    assert checked["dense_drift"] == pytest.approx(0, abs=1e-9)
    for row in checked["rows"]:
        assert row["predicted_ms"] == pytest.approx(row["measured_ms"], rel=0.03)
    assert table.predict({}) == table.fit_ms == table.predict({"stages.0": 0.0})
    assert table.fit_ms == pytest.approx(table.dense_ms, rel=0.03)
    # interpolation between grid points, 0 at ratio 0
    assert table.saved_mmacs("stages.3", 0.45) == pytest.approx((table.macs_saved["stages.3"]["0.3"]
                                                                 + table.macs_saved["stages.3"]["0.6"]) / 2)
    # cached for this machine and key; another key is measured again
    saved = json.loads(cache.read_text())
    assert saved["machine"] == machine_fingerprint() and LatencyTable.from_dict(saved) == table
    again = measure_table(model, runtime="onnxruntime", precision="fp32", resolution=RES, name="b0",
                          ratios=(0.3, 0.6), cache=cache, timer=lambda *_: pytest.fail("measured again"))
    assert again == table


def test_one_wild_measurement_moves_the_prediction_little(model):
    """On a shared machine one model of the table can measure far off (seen: a single-stage cut
    27 % slower than the dense model). The fit pools it with the stage's other ratios and the
    uniform models; reading that difference alone would predict the outlier into every configuration."""
    def wild_clock(runtime, sources):
        out = weights_clock(runtime, sources)
        first_single = sources[1][0]  # stages.0 at the first ratio
        out[first_single] *= 1.5
        return out

    kwargs = dict(runtime="onnxruntime", precision="fp32", resolution=RES, name="b0", ratios=(0.3, 0.6),
                  rounds=1, log=lambda _: None)
    clean = measure_table(model, timer=weights_clock, **kwargs)
    wild = measure_table(model, timer=wild_clock, **kwargs)
    config = {"stages.0": 0.3, "stages.2": 0.3}
    assert abs(wild.predict(config) / clean.predict(config) - 1) < 0.08
    raw = wild.dense_ms + sum(wild.delta(s, r) for s, r in config.items())  # the difference read alone
    assert abs(raw / clean.predict(config) - 1) > 0.3


def test_bad_questions_are_one_line_errors(model):
    table = LatencyTable("b0", "onnxruntime", "fp32", RES, 1, 1, "cpu", (0.2,), 1.0,
                         {"stages.0": {"0.2": -0.1}})
    with pytest.raises(VitedgeError, match="stage 'stages.9' is not in the latency table"):
        table.predict({"stages.9": 0.2})
    with pytest.raises(VitedgeError, match="outside the measured 0…0.2"):
        table.predict({"stages.0": 0.5})
    with pytest.raises(VitedgeError, match="ratios must lie in"):
        measure_table(model, runtime="onnxruntime", precision="fp32", resolution=RES, name="b0",
                      ratios=(1.2,))


def test_m0_stage_widths_are_measured_as_the_search_prunes_them(tmp_path):
    """With stage widths a stage's cut also narrows what the next stage and the classifier read:
    the weights clock sees more saved per stage, the cached key says which table it is, and the
    fitted coupling absorbs the overlap of neighbouring stages' savings."""
    torch.manual_seed(0)
    m0 = vitedge.create_model("efficientvit_m0", num_classes=10, img_size=RES).eval()
    kwargs = dict(runtime="onnxruntime", precision="fp32", resolution=RES, name="m0", ratios=(0.5,), rounds=1,
                  timer=weights_clock, log=lambda _: None)
    inner = measure_table(m0, **kwargs)
    widths = measure_table(m0, stage_widths=True, cache=tmp_path / "m0.json", **kwargs)
    assert widths.stage_widths and not inner.stage_widths and widths.key() != inner.key()
    assert widths.stages == inner.stages == ["stages.0", "stages.1", "stages.2"]
    for stage in widths.stages:
        assert widths.deltas[stage]["0.5"] < 1.3 * inner.deltas[stage]["0.5"] < 0
    assert 0.9 < widths.coupling <= 1.0  # a stage's width is read by the next one: savings overlap a little
    assert widths.predict({s: 0.5 for s in widths.stages}) < 0.5 * widths.dense_ms
    reread = measure_table(m0, stage_widths=True, cache=tmp_path / "m0.json",
                           **{**kwargs, "timer": lambda *_: pytest.fail("measured again")})
    assert reread == widths


def test_a_noisy_fit_never_predicts_below_the_fastest_measured_configuration():
    # savings measured alone add up to little, the uniform models saved much: a large coupling
    table = LatencyTable("b0", "onnxruntime", "fp32", RES, 1, 1, "cpu", (0.5,), 1.0,
                         {"stages.0": {"0.5": -0.05}, "stages.1": {"0.5": -0.05}}, coupling=12.0,
                         uniform_ms={"0.5": 0.4})
    assert table.fastest_ms == 0.4
    assert table.predict({"stages.0": 0.5, "stages.1": 0.5}) == 0.4  # not 1.0 − 12 · 0.1 < 0
    assert table.predict({"stages.0": 0.5}) == 0.4
    assert table.predict({}) == 1.0


def test_a_fitted_table_never_predicts_below_half_its_fastest_measured_model():
    # rates fitted on a few noisy runs can save more than the whole latency: 1.0 − 2 · 0.5 − 0.3 < 0
    table = LatencyTable("b0", "onnxruntime", "fp32", RES, 1, 1, "cpu", (0.5,), 1.0,
                         {"stages.0": {"0.5": -0.2}, "stages.1": {"0.5": -0.3}}, uniform_ms={"0.5": 0.6},
                         macs_saved={"stages.0": {"0.5": 0.5}, "stages.1": {"0.5": 0.5}}, fit_ms=1.0,
                         ms_per_mmac={"stages.0": 1.0, "stages.1": 1.0}, max_drops={"stages.1": 1},
                         ms_per_block={"stages.1": 0.3})
    assert table.floor_ms == 0.3  # half the 0.6 ms of the uniform model
    assert table.predict({"stages.0": 0.5}) == 0.5  # the fit, where it stays above the floor
    assert table.predict({"stages.0": 0.5, "stages.1": 0.5}, {"stages.1": 1}) == table.fastest_ms == 0.3


def test_m0_blocks_removed_are_measured_and_priced_per_block():
    torch.manual_seed(0)
    m0 = vitedge.create_model("efficientvit_m0", num_classes=10, img_size=RES).eval()
    table = measure_table(m0, runtime="onnxruntime", precision="fp32", resolution=RES, name="m0", ratios=(0.5,),
                          rounds=1, timer=weights_clock, stage_widths=True, depth=True, log=lambda _: None)
    assert table.max_drops == {"stages.1": 1, "stages.2": 2} and set(table.ms_per_block) == set(table.max_drops)
    assert all(rate >= 0 for rate in table.ms_per_block.values())
    # a stage-2 block holds weights (the clock's milliseconds): removing one is predicted faster, two faster still
    one, two = (table.predict({}, {"stages.2": k}) for k in (1, 2))
    assert two < one < table.predict({})
    assert table.fastest_ms == table.predict({s: 0.5 for s in table.stages}, table.max_drops)
    with pytest.raises(VitedgeError, match=r"3 block\(s\) of stages.2 is outside what the latency table"):
        table.predict({}, {"stages.2": 3})
    assert measure_table(m0, runtime="onnxruntime", precision="fp32", resolution=RES, name="m0", ratios=(0.5,),
                         rounds=1, timer=weights_clock, stage_widths=True, log=lambda _: None).max_drops == {}
