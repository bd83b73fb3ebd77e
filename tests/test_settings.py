"""The one config model: strict text input, one-line errors that name the key, composition."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from vitedge import settings
from vitedge.errors import VitedgeError
from vitedge.pruning import PruneConfig
from vitedge.quantization import QuantConfig
from vitedge.study import StudyConfig, load_study_config
from vitedge.study import config as study_config
from vitedge.train import DataConfig, OptimConfig, TrainConfig, TrainStage


@pytest.mark.parametrize("values, message", [
    ({"epochs": "3"}, "TrainConfig field epochs: input should be a valid integer, got '3'"),
    ({"data": {"img_size": True}}, "TrainConfig field data.img_size: input should be a valid integer, got True"),
    ({"optim": {"lrr": 1e-3}}, "unknown TrainConfig field 'optim.lrr': did you mean 'optim.lr'?"),
    ({"data": {"crop_pct": 1.5}}, "TrainConfig field data: crop_pct must be in (0, 1]"),
    ({"data": {"scale": [0.1, 0.5, 1.0]}}, "data.scale: tuple should have at most 2 items"),
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
])
def test_text_input_is_strict_and_each_problem_is_one_line(values, message):
    with pytest.raises(VitedgeError) as err:
        TrainConfig.from_dict(values)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_python_construction_converts_losslessly_and_fails_in_one_line():
    assert OptimConfig(lr=1).lr == 1.0 and DataConfig(scale=[0.2, 1]).scale == (0.2, 1.0)
    with pytest.raises(VitedgeError, match=r"^QuantConfig field w_bits: input should be a valid integer"):
        QuantConfig(w_bits="eight")
    with pytest.raises(VitedgeError, match="unknown pruning criterion"):
        PruneConfig(criterion="hessian")
    with pytest.raises(VitedgeError, match="^unknown QuantConfig field .bogus.: known: method, w_bits"):
        QuantConfig(bogus=1)


def test_configs_round_trip_and_override_by_dotted_keys():
    cfg = TrainConfig(epochs=3, data=DataConfig(img_size=64, scale=(0.3, 1.0)))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    changed = settings.with_overrides(cfg, {"optim.lr": 2e-3, "data.scale": (0.5, 1.0)})
    assert changed.optim.lr == 2e-3 and changed.data.scale == (0.5, 1.0) and changed.epochs == 3
    with pytest.raises(VitedgeError, match="'epochs' is not a group"):
        settings.with_overrides(cfg, {"epochs.x": 1})
    moved = QuantConfig.for_target("openvino", method="mse")
    assert QuantConfig.from_dict(moved.to_dict()) == moved


def test_a_training_stage_is_the_optimiser_plus_a_budget():
    stage = TrainStage(epochs=2, lr=5e-4, min_scale=0.5, warmup_epochs=0.2)
    assert stage.optim == OptimConfig(lr=5e-4, warmup_epochs=0.2)
    cfg = stage.train_config(model="efficientvit_b0", data=DataConfig(img_size=32), seed=3, out="o",
                             teacher="t.safetensors")
    assert (cfg.epochs, cfg.seed, cfg.data.scale, cfg.data.img_size) == (2, 3, (0.5, 1.0), 32)
    assert cfg.optim == stage.optim and cfg.distill.teacher == "t.safetensors"
    assert TrainStage(epochs=0).train_config(model="m", data=DataConfig(), seed=0, out="o").epochs == 1


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_study_composes_its_components_and_copies_no_knob():
    """Each knob has one definition: the study's own classes add only what no component has."""
    components = [DataConfig, OptimConfig, TrainStage, PruneConfig, QuantConfig]
    component_fields = set().union(*(_field_names(c) for c in components))
    same_name_other_knob = {("DeployConfig", "batch_size"),  # the latency batch, not the training batch
                            ("StudyConfig", "seed")}  # the recipe's seed, handed to every stage
    for cls in (study_config.PruningPlan, study_config.QuantPlan, study_config.DeployConfig,
                study_config.ReportConfig, StudyConfig):
        inherited = set().union(*(_field_names(b) for b in cls.__mro__[1:] if dataclasses.is_dataclass(b)))
        own = _field_names(cls) - inherited
        hints = typing.get_type_hints(cls)
        copied = {name for name in own if name in component_fields and hints[name] not in components
                  and (cls.__name__, name) not in same_name_other_knob}
        assert not copied, f"{cls.__name__} redefines {copied}"
    config = load_study_config(preset="quick")
    assert isinstance(config.data, DataConfig) and isinstance(config.baseline, TrainStage)
    assert isinstance(config.pruning, PruneConfig) and isinstance(config.quantization, QuantConfig)
    assert type(config.pruning.for_ratio(0.4, seed=1)) is PruneConfig
    target = config.quantization.config_for("onnxruntime")
    assert type(target) is QuantConfig and target.target == "onnxruntime"
    assert QuantConfig.from_dict(target.to_dict()) == target  # what a quantized checkpoint stores


def test_nested_section_defaults_survive_a_partial_override():
    """A YAML that sets one knob of a stage keeps the study's other defaults for it."""
    config = load_study_config(overrides={"pruning.finetune.epochs": 2})
    assert config.pruning.finetune.epochs == 2
    assert config.pruning.finetune.lr == StudyConfig().pruning.finetune.lr == 5e-4
    assert config.pruning.finetune.distill.teacher == "dense"
