"""The quantization ablation ladder: every step scores the model its own config made, the results
file reads back as what was returned, and a re-run recomputes only what changed or is missing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vitedge
from vitedge.quantization import QuantConfig, is_quantized
from vitedge.workflows.ablation import Step, finished_steps, run_ladder, seg_trio_ladder, select, trio_ladder

RES = 32
SETUP = {"checkpoint": "random b0", "calib": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return vitedge.create_model("efficientvit_b0", num_classes=4).eval()


@pytest.fixture(scope="module")
def calib() -> list[torch.Tensor]:
    return [torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))]


def ladder() -> list[Step]:
    return [Step("FP32", None),
            Step("per-tensor", QuantConfig(method="minmax", per_channel=False), {"w8a8": True}),
            Step("per-channel", QuantConfig(method="minmax"), {"w8a8": True})]


class Scorer:
    """Scores a model by its output on a fixed batch, and remembers what it was given."""

    def __init__(self) -> None:
        self.x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(2))
        self.seen: list[nn.Module] = []

    @torch.no_grad()
    def __call__(self, net: nn.Module) -> dict[str, float]:
        self.seen.append(net)
        return {"score": float(net(self.x).abs().mean())}


def test_each_step_scores_the_model_its_config_made(model, calib):
    scorer = Scorer()
    rows = run_ladder(model, ladder(), calib, scorer, log=lambda _: None)
    assert [r["name"] for r in rows] == ["FP32", "per-tensor", "per-channel"]
    assert scorer.seen[0] is model and not is_quantized(model)
    assert all(is_quantized(net) and net is not model for net in scorer.seen[1:])
    assert rows[0]["config"] is None
    assert rows[1]["config"]["per_channel"] is False and rows[2]["config"]["per_channel"] is True
    assert rows[1]["w8a8"] is True and "w8a8" not in rows[0]
    # the quantized models differ from the float one and from each other
    scores = [r["score"] for r in rows]
    assert len(set(scores)) == 3


def test_results_file_round_trips_and_a_rerun_recomputes_nothing(model, calib, tmp_path):
    path = tmp_path / "results.json"
    first = run_ladder(model, ladder(), calib, Scorer(), path=path, setup=SETUP, meta={"command": "x"},
                       log=lambda _: None)
    saved = json.loads(path.read_text())
    assert saved == {"command": "x", "setup": SETUP, "rows": first}
    assert finished_steps(path, SETUP) == {r["name"]: r for r in first}

    scorer = Scorer()
    again = run_ladder(model, ladder(), calib, scorer, path=path, setup=SETUP, log=lambda _: None)
    assert scorer.seen == [] and again == first


def test_a_rerun_redoes_what_changed_or_is_missing(model, calib, tmp_path):
    path = tmp_path / "results.json"
    first = run_ladder(model, ladder(), calib, Scorer(), path=path, setup=SETUP, log=lambda _: None)
    # killed after the first two steps
    path.write_text(json.dumps({"setup": SETUP, "rows": first[:2]}))
    scorer = Scorer()
    resumed = run_ladder(model, ladder(), calib, scorer, path=path, setup=SETUP, log=lambda _: None)
    assert len(scorer.seen) == 1 and resumed[:2] == first[:2]
    assert resumed[2]["score"] == pytest.approx(first[2]["score"])

    changed = [*ladder()[:2], Step("per-channel", QuantConfig(method="minmax", a_bits=6), {"w8a8": True})]
    scorer = Scorer()
    rows = run_ladder(model, changed, calib, scorer, path=path, setup=SETUP, log=lambda _: None)
    assert len(scorer.seen) == 1 and rows[2]["config"]["a_bits"] == 6

    scorer = Scorer()
    run_ladder(model, ladder(), calib, scorer, path=path, setup={**SETUP, "calib": 4}, log=lambda _: None)
    assert len(scorer.seen) == 3  # another setup: nothing recorded applies


def test_pending_or_unreadable_records_are_not_finished(tmp_path):
    path = tmp_path / "results.json"
    assert finished_steps(path, SETUP) == {}
    path.write_text("{not json")
    assert finished_steps(path, SETUP) == {}
    path.write_text(json.dumps({"setup": SETUP, "rows": [{"name": "a", "pending": True}, {"name": "b"}]}))
    assert list(finished_steps(path, SETUP)) == ["b"]


def test_select_matches_names_case_insensitively_and_keeps_the_reference():
    steps = ladder()
    assert select(steps, None) == steps
    assert [s.name for s in select(steps, ["CHANNEL", "Tensor"])] == ["per-tensor", "per-channel"]
    assert [s.name for s in select(steps, ["tensor"], keep=["FP32"])] == ["FP32", "per-tensor"]


@pytest.mark.parametrize("steps", [trio_ladder(), seg_trio_ladder(), seg_trio_ladder(reconstruct=50)],
                         ids=["classification", "segmentation", "segmentation+reconstruct"])
def test_declared_ladders_have_distinct_steps(steps):
    names = [s.name for s in steps]
    configs = [json.dumps(s.config_dict(), sort_keys=True) for s in steps]
    assert steps[0].name == "FP32" and steps[0].config is None
    assert len(set(names)) == len(names) and len(set(configs)) == len(configs)


def test_ladders_declare_what_their_rows_say():
    cls = {s.name: s for s in trio_ladder()}
    assert cls["W8A8 per-tensor min-max"].config.per_channel is False
    assert cls["W4A8 Trio"].config.w_bits == 4 and cls["W4A8 Trio"].tags["w8a8"] is False
    assert all("w8a8" in s.tags for s in cls.values())
    seg = seg_trio_ladder(reconstruct=50)
    learned = [s for s in seg if s.config is not None and s.config.reconstruct_iters == 50]
    assert [s.config.w_bits for s in learned] == [8, 7]
    assert all(s.config.conv_outputs for s in seg[1:])
