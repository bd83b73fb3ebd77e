"""Checkpoints: our format round-trips, foreign formats load, bad files fail with one clear line."""

from __future__ import annotations

import pytest
import torch
from conftest import is_mit
from parity import assert_identical, input_dependent

import vitedge
from vitedge.errors import VitedgeError
from vitedge.io import read_metadata
from vitedge.models.checkpoint import load, save
from vitedge.models.registry import family_module

ALL_MODELS = vitedge.list_models()


def _logits(model, res=224):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, res, res))


def test_save_load_roundtrip_rebuilds_architecture(tmp_path):
    model = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=10))
    path = save(model, tmp_path / "b0.safetensors", extra={"classes": list("abcdefghij")})
    reloaded = load(path)
    assert_identical(_logits(reloaded), _logits(model))
    assert read_metadata(path)["extra"]["classes"][0] == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["b0.safetensors"], "no temporary file left behind"


def test_save_load_keeps_width_overrides(tmp_path):
    narrow = {"stages.1.blocks.0.main": {"mid_channels": 24}}
    model = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=10, block_widths=narrow))
    reloaded = load(save(model, tmp_path / "narrow.safetensors"))
    assert reloaded.arch["kwargs"]["block_widths"] == narrow
    assert_identical(_logits(reloaded), _logits(model))


# L3 is L2's blocks at larger widths, the same key map: its 1 GB round trip took ~40 s of the suite
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n != "efficientvit_l3"])
def test_official_format_checkpoint_loads_to_identical_outputs(name, tmp_path):
    res = 128 if is_mit(name) else 224  # MIT at any multiple of 32: small, for L3's sake
    family = family_module(name)
    # built as official weights load: with the official norm eps where timm's differ (L head BN)
    model = input_dependent(vitedge.create_model(name, **family.official_model_kwargs(name)),
                            resolution=res)
    official = family.to_official_state_dict(model.state_dict())
    assert set(official) != set(model.state_dict()), "the official names must differ from ours"
    wrapper = "state_dict" if is_mit(name) else "model"
    torch.save({wrapper: official}, tmp_path / "official.pth")
    reloaded = load(tmp_path / "official.pth", name)
    assert_identical(_logits(reloaded, res), _logits(model, res))


def test_timm_state_dict_loads_directly_and_infers_num_classes(tmp_path):
    source = vitedge.create_model("efficientvit_m0", num_classes=37)
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    assert load(tmp_path / "timm.pth", "efficientvit_m0").num_classes == 37


def test_wrong_num_classes_names_the_fix_and_backbone_only_works(tmp_path):
    torch.save(vitedge.create_model("efficientvit_b0").state_dict(), tmp_path / "in1k.pth")
    with pytest.raises(VitedgeError, match="backbone"):
        load(tmp_path / "in1k.pth", "efficientvit_b0", num_classes=10)
    model = load(tmp_path / "in1k.pth", "efficientvit_b0", num_classes=10, backbone_only=True)
    assert _logits(model).shape == (2, 10)


def test_checkpoint_of_another_architecture_lists_the_mismatch(tmp_path):
    save(vitedge.create_model("efficientvit_b0"), tmp_path / "b0.safetensors")
    torch.save(vitedge.create_model("efficientvit_b1").state_dict(), tmp_path / "b1.pth")
    with pytest.raises(VitedgeError, match="holds a efficientvit_b0 model"):
        load(tmp_path / "b0.safetensors", "efficientvit_m0")
    with pytest.raises(VitedgeError, match="shape mismatches"):
        load(tmp_path / "b1.pth", "efficientvit_b0")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_is_a_clear_error(tmp_path, suffix):
    model = vitedge.create_model("efficientvit_m0")
    good = tmp_path / f"good{suffix}"
    if suffix == ".safetensors":
        save(model, good)
    else:
        torch.save(model.state_dict(), good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VitedgeError, match="truncated"):
        load(bad, "efficientvit_m0")


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_code_is_never_executed(tmp_path):
    torch.save({"state_dict": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(VitedgeError, match="safely"):
        load(tmp_path / "evil.pth", "efficientvit_b0")


def test_missing_file_and_missing_model_name(tmp_path):
    with pytest.raises(VitedgeError, match="does not exist"):
        load(tmp_path / "nope.safetensors")
    torch.save(vitedge.create_model("efficientvit_m0").state_dict(), tmp_path / "timm.pth")
    with pytest.raises(VitedgeError, match="model name"):
        load(tmp_path / "timm.pth")
