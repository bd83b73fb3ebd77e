"""MIT family specifics: width overrides, official checkpoint keys, FP32 linear attention.

Parity with timm over the whole zoo lives in test_models_parity.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from parity import assert_parity, distance, distinct_images, input_dependent

import vitedge
from vitedge.errors import VitedgeError
from vitedge.models import efficientvit_mit as mit
from vitedge.models.checkpoint import load, save

B0_OVERRIDES = {
    "stages.0.blocks.0.main": {"mid_channels": 20},  # stride-2 MBConv, default 8 * 4 = 32
    "stages.1.blocks.1.main": {"mid_channels": 40},  # residual MBConv, default 128
    "stages.2.blocks.1.context_module.main": {"heads": 2},  # LiteMLA, default 64 // 16 = 4
    "stages.2.blocks.1.local_module.main": {"mid_channels": 100},  # default 256
    "head": {"widths": [512, 640]},  # default 1024, 1280
}


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_width_overrides_shrink_weights_and_still_run():
    dense = _shapes(vitedge.create_model("efficientvit_b0"))
    model = vitedge.create_model("efficientvit_b0", block_widths=B0_OVERRIDES).eval()
    pruned = _shapes(model)
    assert set(pruned) == set(dense)
    mla = "stages.2.blocks.1.context_module.main"
    expected = {
        "stages.0.blocks.0.main.inverted_conv.conv.weight": (20, 8, 1, 1),
        "stages.0.blocks.0.main.depth_conv.conv.weight": (20, 1, 3, 3),
        "stages.0.blocks.0.main.point_conv.conv.weight": (16, 20, 1, 1),
        "stages.1.blocks.1.main.inverted_conv.conv.weight": (40, 32, 1, 1),
        f"{mla}.qkv.conv.weight": (3 * 2 * 16, 64, 1, 1),
        f"{mla}.aggreg.0.0.weight": (96, 1, 5, 5),
        f"{mla}.aggreg.0.1.weight": (96, 96 // (3 * 2), 1, 1),
        f"{mla}.proj.conv.weight": (64, 2 * 2 * 16, 1, 1),
        "stages.2.blocks.1.local_module.main.point_conv.conv.weight": (64, 100, 1, 1),
        "head.in_conv.conv.weight": (512, 128, 1, 1),
        "head.classifier.0.weight": (640, 512),
        "head.classifier.4.weight": (1000, 640),
    }
    assert {k: pruned[k] for k in expected} == expected
    # everything not overridden keeps its dense shape
    assert all(pruned[k] == dense[k] for k in dense if k not in expected
               and not k.startswith(("stages.0.blocks.0.", "stages.1.blocks.1.", mla,
                                     "stages.2.blocks.1.local_module", "head.")))
    assert sum(p.numel() for p in model.parameters()) < 0.8 * 3.41e6
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224))
        vitedge.fuse_bn(model)
        assert (model(torch.randn(1, 3, 160, 160))).shape == (1, 1000)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_width_overrides_on_l_series_stem_and_fused_blocks():
    model = vitedge.create_model("efficientvit_l1", depths=(1, 1, 1, 1, 1), block_widths={
        "stem.res0.main": {"mid_channels": 16},  # ResBlock, default 32
        "stages.0.blocks.1.main": {"mid_channels": 100},  # FusedMBConv, default 256
    }).eval()
    shapes = _shapes(model)
    assert shapes["stem.res0.main.conv1.conv.weight"] == (16, 32, 3, 3)
    assert shapes["stem.res0.main.conv2.conv.weight"] == (32, 16, 3, 3)
    assert shapes["stages.0.blocks.1.main.spatial_conv.conv.weight"] == (100, 64, 3, 3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 1000)


@pytest.mark.parametrize("block_widths", [
    {"stages.2.blocks.1.context_modul.main": {"heads": 2}},  # typo in the path
    {"stages.2.blocks.1.local_module.main": {"heads": 2}},  # key of another block type
    {"stem.res0.main": {"mid_channels": 4}},  # B-series DSConv has no hidden width
    {"stages.1.blocks.1.main": {"mid_channels": 0}},  # not a positive width
    {"head": {"widths": [512]}},
])
def test_bad_width_override_raises(block_widths):
    with pytest.raises(VitedgeError, match="block_widths|head widths"):
        vitedge.create_model("efficientvit_b0", block_widths=block_widths)


def test_unknown_keyword_is_a_type_error_at_the_factory():
    with pytest.raises(TypeError, match="head_widht"):
        mit.efficientvit_b0(head_widht=(8, 8))


@pytest.mark.parametrize("name, official_keys", [
    ("efficientvit_b0", ["backbone.input_stem.op_list.0.conv.weight",
                         "backbone.input_stem.op_list.1.main.depth_conv.conv.weight",
                         "backbone.stages.3.op_list.2.context_module.main.aggreg.0.1.weight"]),
    ("efficientvit_l1", ["backbone.stages.0.op_list.0.conv.weight",
                         "backbone.stages.0.op_list.1.main.conv1.conv.weight",
                         "backbone.stages.1.op_list.0.main.spatial_conv.conv.weight",
                         "backbone.stages.4.op_list.6.local_module.main.point_conv.norm.running_var"]),
])
def test_official_state_dict_round_trip(name, official_keys):
    sd = vitedge.create_model(name).state_dict()
    official = mit.to_official_state_dict(sd)
    head_keys = {"head.op_list.0.conv.weight", "head.op_list.2.linear.weight",
                 "head.op_list.2.norm.bias", "head.op_list.3.linear.bias"}
    assert set(official_keys) | head_keys <= set(official)
    assert all(k.startswith(("backbone.", "head.op_list.")) for k in official)
    assert mit.is_official_state_dict({"state_dict": official}) and not mit.is_official_state_dict(sd)
    back = mit.convert_official_state_dict({"state_dict": official})
    assert list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)


# An L1 narrowed to a few thousand weights: the official-weights behaviour depends on the series only
L_SMALL = dict(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), head_dim=8, head_widths=(32, 40))


def norm_eps(model: nn.Module) -> dict[str, float]:
    return {name: m.eps for name, m in model.named_modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))}


@torch.no_grad()
def shrink_before_norm(layer: nn.Module, scale: float) -> None:
    """Scale a conv-BN's conv and running stats by ``scale``: the same function as eps → 0, but
    with a variance where eps is no longer negligible (as in a trained layer's quiet channels)."""
    layer.conv.weight.mul_(scale)
    layer.norm.running_mean.mul_(scale)
    layer.norm.running_var.mul_(scale**2)


def official_cls_head(sd: Mapping[str, torch.Tensor], x: torch.Tensor, eps: float) -> torch.Tensor:
    """The official ClsHead (efficientvit/models/efficientvit/cls.py) of an L model, from official
    keys: ConvLayer 1×1 (bn2d, gelu) → AdaptiveAvgPool2d → LinearLayer (no bias, ln, gelu) →
    LinearLayer. ``eps`` is every norm's: the model zoo's ``set_norm_eps(model, 1e-7)``."""
    gelu = partial(F.gelu, approximate="tanh")  # the official act.py's "gelu"
    x = F.conv2d(x, sd["head.op_list.0.conv.weight"])
    x = F.batch_norm(x, sd["head.op_list.0.norm.running_mean"], sd["head.op_list.0.norm.running_var"],
                     sd["head.op_list.0.norm.weight"], sd["head.op_list.0.norm.bias"], False, 0.0, eps)
    x = F.adaptive_avg_pool2d(gelu(x), 1).flatten(1)
    x = F.linear(x, sd["head.op_list.2.linear.weight"])
    x = F.layer_norm(x, x.shape[-1:], sd["head.op_list.2.norm.weight"], sd["head.op_list.2.norm.bias"], eps)
    return F.linear(gelu(x), sd["head.op_list.3.linear.weight"], sd["head.op_list.3.linear.bias"])


@pytest.mark.parametrize("name, expected", [
    *((f"efficientvit_b{i}", {}) for i in range(4)),  # official and timm B models: all 1e-5
    *((f"efficientvit_l{i}", {"head_bn_eps": 1e-7}) for i in range(1, 4)),
])
def test_official_model_kwargs(name, expected):
    assert mit.official_model_kwargs(name) == expected
    with pytest.raises(VitedgeError, match="not an EfficientViT"):
        mit.official_model_kwargs("efficientvit_m0")


def test_official_l_checkpoint_computes_the_official_head(tmp_path):
    model = input_dependent(vitedge.create_model("efficientvit_l1", num_classes=10, **L_SMALL),
                            resolution=64)
    shrink_before_norm(model.head.in_conv, 1e-2)
    official = mit.to_official_state_dict(model.state_dict())
    torch.save({"state_dict": official}, tmp_path / "l1.pt")
    loaded = load(tmp_path / "l1.pt", "efficientvit_l1", **L_SMALL)

    # the official zoo sets 1e-7 on every norm of an L model; timm (our default build) leaves the
    # head's 1×1 conv BN at torch's 1e-5, and keeps the head LayerNorm at 1e-7 like the official
    assert set(norm_eps(loaded).values()) == {1e-7}
    timm_eps = norm_eps(model)
    assert {k: v for k, v in timm_eps.items() if v != 1e-7} == {"head.in_conv.norm": 1e-5}
    assert timm_eps["head.classifier.1"] == 1e-7
    assert loaded.arch["kwargs"]["head_bn_eps"] == 1e-7
    # a vitedge checkpoint of it keeps the official eps
    save(loaded, tmp_path / "l1.safetensors")
    assert set(norm_eps(load(tmp_path / "l1.safetensors")).values()) == {1e-7}

    with torch.no_grad():
        features = loaded.forward_features(distinct_images(2, 64))
        expected = official_cls_head(official, features, eps=1e-7)
        assert_parity(loaded.forward_head(features), expected, tol=1e-5, what="official L1 head")
        # the same weights in timm's build miss the official logits
        assert distance(model.forward_head(features), expected) > 1e-3


def test_official_converter_refuses_foreign_keys():
    with pytest.raises(VitedgeError, match="decoder.weight"):
        mit.convert_official_state_dict({"backbone.input_stem.op_list.0.conv.weight": torch.zeros(1),
                                         "decoder.weight": torch.zeros(1)})


def test_linear_attention_division_stays_fp32_under_bf16_autocast():
    mla = mit.LiteMLA(32, 32, heads=2, dim=16, norm_eps=1e-5).eval()
    # 1 + 2**-10 is not a bfloat16 number: a bf16 matmul would round v to 1.0
    q, k = torch.rand(1, 4, 64, 16), torch.rand(1, 4, 64, 16)
    v = torch.full((1, 4, 64, 16), 1 + 2**-10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mla._attention(q, k, v)
    assert out.dtype == torch.float32
    assert (out - (1 + 2**-10)).abs().max().item() < 1e-6

    model = input_dependent(vitedge.create_model("efficientvit_b0"), resolution=224)
    x = distinct_images(2, 224, seed=4)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    # bf16's 8 mantissa bits through 20-odd layers: 0.9-1.5 % of the logits' norm (measured over
    # six image pairs), while the other image of the pair moves them by 15-100 % (53 % here)
    assert_parity(low.float(), reference, tol=0.05, metric="rel", factor=5, what="bf16 autocast")


def test_linear_attention_eps_survives_half_precision():
    # all-zero q and k give 0 / (0 + eps): eps = 1e-15 underflows to 0 in fp16, so only an FP32
    # division keeps the output finite
    mla = mit.LiteMLA(32, 32, heads=2, dim=16, norm_eps=1e-5).eval().half()
    with torch.no_grad():
        out = mla(torch.zeros(1, 32, 8, 8, dtype=torch.half))
    assert out.dtype == torch.half and torch.isfinite(out).all()
