"""Numerical parity with timm: same weights in, same logits out, for every model of the zoo."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import is_mit, timm_oracle
from parity import assert_parity, input_dependent
from safetensors.torch import save_file

import vitedge
from vitedge.models import efficientvit_mit as mit

ALL_MODELS = vitedge.list_models()
TIMM_MODELS = [name for name in ALL_MODELS if "_seg_" not in name]  # timm has no seg models
TIMM_EPS = 1e-5  # timm's LiteMLA eps; the official (and our default) is 1e-15


def ours_from_timm(name: str) -> tuple[nn.Module, nn.Module]:
    reference = timm_oracle(name)
    kwargs = {"attn_eps": TIMM_EPS} if is_mit(name) else {}
    ours = vitedge.create_model(name, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours.eval()


def test_zoo_has_all_thirteen_classifiers():
    expected = {f"efficientvit_{v}" for v in ("b0", "b1", "b2", "b3", "l1", "l2", "l3")}
    expected |= {f"efficientvit_m{i}" for i in range(6)}
    assert expected <= set(ALL_MODELS)


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_logits_match_timm(name):
    reference, ours = ours_from_timm(name)
    # MIT: two sizes (any multiple of 32 runs); small ones, since L3 is 246M parameters
    resolutions = (128, 160) if is_mit(name) else (224,)
    for res in resolutions:
        x = torch.randn(2, 3, res, res)
        with torch.no_grad():
            expected, actual = reference(x), ours(x)
        assert actual.shape == expected.shape == (2, 1000)
        # image 0's logits against image 1's: the oracle must tell two inputs apart
        assert_parity(actual, expected, tol=1e-4, what=f"{name}@{res}")


def _norm_eps(model: nn.Module) -> dict[str, float]:
    return {name: m.eps for name, m in model.named_modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))}


def test_timm_format_l_checkpoint_keeps_timm_norm_eps(tmp_path):
    # official L weights build with the official eps (head BN 1e-7); timm's must not
    assert mit.official_model_kwargs("efficientvit_l1") == {"head_bn_eps": 1e-7}
    small = dict(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), head_dim=8, head_widths=(32, 40))
    reference = timm_oracle("efficientvit_l1", num_classes=10, **small)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              tmp_path / "l1.safetensors")
    ours = vitedge.load(tmp_path / "l1.safetensors", "efficientvit_l1", attn_eps=TIMM_EPS, **small)
    assert _norm_eps(ours) == _norm_eps(reference)
    assert ours.head.in_conv.norm.eps == 1e-5 and "head_bn_eps" not in ours.arch["kwargs"]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert_parity(ours(x), reference(x), tol=1e-5, what="timm-format L1")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fuse_bn_removes_every_batchnorm_and_keeps_logits(name):
    res = 224 if name.startswith("efficientvit_m") else 128
    model = input_dependent(vitedge.create_model(name), resolution=res)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        before = model(x)
        vitedge.fuse_bn(model)
        after = model(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert_parity(after, before, tol=1e-4, what=name)


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_m0"])
def test_uniform_model_surface(name):
    model = vitedge.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
        assert torch.allclose(model(x), logits)
    assert logits.shape == (1, 10)
    assert pooled.shape == (1, model.head_hidden_size)
    model.reset_classifier(5)
    assert model.num_classes == 5
    with torch.no_grad():
        assert model(x).shape == (1, 5)


def test_linear_attention_eps_defaults_to_official_value():
    model = vitedge.create_model("efficientvit_b0")
    eps = {m.eps for m in model.modules() if type(m).__name__ == "LiteMLA"}
    assert eps == {1e-15}
    assert model.arch == {"name": "efficientvit_b0", "kwargs": {}}
