"""Family-specific tests for the Microsoft EfficientViT (cascaded group attention) models.

Cross-family parity with timm over the whole registry lives elsewhere; these cover what only
this family has: per-head key widths, patch-merging/SE overrides, official checkpoint names.
"""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity, input_dependent

from vitedge.errors import VitedgeError
from vitedge.models import create_model, fuse_bn
from vitedge.models.efficientvit_msra import (
    convert_official_state_dict,
    is_official_state_dict,
    to_official_state_dict,
)

ATTN = "stages.0.blocks.0.mixer.m.attn"
# Small and fast, yet every module kind is present: 128 px gives 8×8 stage-0 features, so
# 7×7 windows with padding; one block per stage keeps the traced graph small.
SIZE = 128
SMALL = dict(img_size=SIZE, depth=(1, 1, 1))


def _randomize(model: torch.nn.Module) -> None:
    """Input-dependent weights, non-trivial BN statistics and attention biases, so folding and
    renaming are really tested."""
    input_dependent(model)


def test_width_overrides_shrink_shapes_and_run() -> None:
    widths = {
        "stages.0.blocks.0.ffn0.m": {"hidden": 40},
        ATTN: {"key_dims": [16, 4, 8, 1]},
        "stages.1.downsample.res1.1.m": {"hidden": 50},
        "stages.1.downsample.patchmerge": {"hidden": 100},
        "stages.1.downsample.patchmerge.se": {"hidden": 8},
    }
    model = create_model("efficientvit_m0", block_widths=widths, **SMALL)
    sd = model.state_dict()
    assert sd["stages.0.blocks.0.ffn0.m.pw1.conv.weight"].shape == (40, 64, 1, 1)
    assert sd["stages.0.blocks.0.ffn0.m.pw2.conv.weight"].shape == (64, 40, 1, 1)
    # per head: 2 * key_dim + v_dim (64 / 4 heads = 16) output channels; DW conv on q only
    assert sd[f"{ATTN}.qkvs.1.conv.weight"].shape == (2 * 4 + 16, 16, 1, 1)
    assert sd[f"{ATTN}.dws.3.conv.weight"].shape == (1, 1, 5, 5)
    assert sd[f"{ATTN}.proj.1.conv.weight"].shape == (64, 64, 1, 1)
    assert sd["stages.1.downsample.res1.1.m.pw1.conv.weight"].shape == (50, 64, 1, 1)
    assert sd["stages.1.downsample.patchmerge.conv2.conv.weight"].shape == (100, 1, 3, 3)
    assert sd["stages.1.downsample.patchmerge.se.fc1.weight"].shape == (8, 100, 1, 1)
    assert sd["stages.1.downsample.patchmerge.conv3.conv.weight"].shape == (128, 100, 1, 1)
    dense = create_model("efficientvit_m0", **SMALL)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())

    x = torch.randn(2, 3, SIZE, SIZE)
    model.train()
    model(x).sum().backward()  # a pruned model must still train
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1000)


@pytest.mark.parametrize("widths", [
    {"stages.0.blocks.0.ffn0.m": {"hiden": 64}},                  # misspelled key
    {"stages.0.blocks.7.ffn0.m": {"hidden": 64}},                 # no such block
    {ATTN: {"key_dims": [16, 16]}},                               # one entry per head (4)
    {ATTN: {"key_dims": [16, 16, 0, 16]}},                        # widths must be positive
    {"stages.1.downsample.patchmerge": {"hidden": 2.5}},          # and integers
])
def test_bad_width_override_raises(widths: dict) -> None:
    with pytest.raises(VitedgeError):
        create_model("efficientvit_m0", block_widths=widths)


def test_official_state_dict_round_trip() -> None:
    model = create_model("efficientvit_m0")
    _randomize(model)
    sd = model.state_dict()
    official = to_official_state_dict(sd)
    # names as in microsoft/Cream EfficientViT (Conv2d_BN.c, BN_Linear.l, blocks1..3)
    for key in ["patch_embed.6.c.weight", "blocks1.0.mixer.m.attn.qkvs.0.c.weight",
                "blocks1.0.mixer.m.attn.attention_bias_idxs", "blocks2.0.1.m.pw1.bn.running_var",
                "blocks2.1.se.fc1.weight", "blocks2.2.0.m.c.weight", "blocks2.3.dw0.m.c.weight",
                "blocks3.5.ffn1.m.pw2.c.weight", "head.bn.running_mean", "head.l.weight"]:
        assert key in official, key
    assert not any(k.startswith("stages.") or ".conv." in k for k in official)

    assert is_official_state_dict({"model": official}) and not is_official_state_dict(sd)
    back = convert_official_state_dict({"model": official})  # .pth files wrap it in 'model'
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)

    # Some exports store 1×1 conv weights as 2-D matrices; they come back as 4-D.
    flat = {k: v.flatten(1) if k.endswith("pw1.c.weight") else v for k, v in official.items()}
    assert all(torch.equal(convert_official_state_dict(flat)[k], sd[k]) for k in sd)
    create_model("efficientvit_m0").load_state_dict(back, strict=True)


def test_fused_model_traces_and_matches() -> None:
    model = create_model("efficientvit_m0", **SMALL).eval()
    _randomize(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_bn(model)
        bn_types = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
        assert not any(isinstance(m, bn_types) for m in fused.modules())
        traced = torch.jit.trace(fused, x[:1], check_trace=False)
        out = traced(x)  # another batch size: nothing shape-specific was frozen
    assert_parity(out, ref, tol=1e-4, what="fused, traced M0")


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(VitedgeError, match="window_sizes"):
        create_model("efficientvit_m0", window_sizes=(7, 7, 7))
