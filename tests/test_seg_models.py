"""MIT EfficientViT segmentation: shapes, published cost, official checkpoint keys, FP32 upsample.

Forward tests run at 64×128 (stride-8 logits 8×16) to stay cheap; the published 1024×2048 cost
is reached by exact scaling (checked below), not by a full-size forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from parity import assert_identical, assert_parity, distance, input_dependent
from torch.utils._python_dispatch import TorchDispatchMode

import vitedge
from vitedge.bench import profile
from vitedge.errors import VitedgeError
from vitedge.models import efficientvit_mit as mit
from vitedge.models import efficientvit_seg as seg
from vitedge.models.checkpoint import load, save

SEG_MODELS = [f"efficientvit_seg_{v}" for v in ("b0", "b1", "b2", "b3", "l1", "l2")]
CASES = [(name, "cityscapes") for name in SEG_MODELS] + [
    (f"efficientvit_seg_{v}", "ade20k") for v in ("b1", "b2", "b3", "l1", "l2")]
CLASSES = {"cityscapes": 19, "ade20k": 150}
SMALL = (64, 128)
# Official model zoo, Cityscapes at 1024×2048: (params M, GMACs), as printed (2-3 digits).
PUBLISHED = {
    "efficientvit_seg_b0": ("0.7", "4.4"),
    "efficientvit_seg_b1": ("4.8", "25"),
    "efficientvit_seg_b2": ("15", "74"),
    "efficientvit_seg_b3": ("40", "179"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(model: nn.Module, size: tuple[int, int] = SMALL) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, *size))


def test_registry_lists_the_seg_models():
    assert vitedge.list_models("_seg_") == SEG_MODELS


@pytest.mark.parametrize("name,dataset", CASES)
def test_forward_gives_stride_8_logits(name, dataset):
    model = vitedge.create_model(name, dataset=dataset).eval()
    logits = _logits(model)
    assert logits.shape == (2, CLASSES[dataset], SMALL[0] // 8, SMALL[1] // 8)
    assert torch.isfinite(logits).all()
    assert model.num_classes == CLASSES[dataset]
    expected_size = seg.DATASET_INPUT_SIZE[dataset]
    assert model.data_config["input_size"] == (3, *expected_size)


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_l1"])
def test_backbone_pyramid_is_a_tuple_at_strides_8_16_32(name):
    classifier = vitedge.create_model(name).eval()
    series, fields = mit.backbone_variant(name)
    backbone = mit.EfficientVitMitBackbone(series, **fields).eval()
    # the backbone holds the classifier's keys, so ImageNet weights load into it unchanged
    body = {k: v for k, v in classifier.state_dict().items() if not k.startswith("head.")}
    backbone.load_state_dict(body, strict=True)
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        pyramid = backbone(x)
        from_classifier = classifier.forward_pyramid(x)
        features = classifier.forward_features(x)
    assert isinstance(pyramid, tuple) and len(pyramid) == 3
    for level, stride, width in zip(pyramid, (8, 16, 32), backbone.pyramid_channels):
        assert level.shape == (1, width, SMALL[0] // stride, SMALL[1] // stride)
    assert all(torch.equal(a, b) for a, b in zip(pyramid, from_classifier))
    assert torch.equal(pyramid[-1], features)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_cityscapes_params_and_macs_match_published(name):
    model = vitedge.create_model(name)
    assert model.data_config["input_size"] == (3, 1024, 2048)
    macs = {}
    for h, w in (SMALL, (2 * SMALL[0], 2 * SMALL[1])):
        model.data_config["input_size"] = (3, h, w)
        stats = profile(model)
        macs[h] = stats["macs"]
    # every conv and the linear attention's matmuls grow with H·W (no quadratic attention, no
    # MACs in the resize), so the count scales exactly: 4× here, (1024/64)² to full size
    assert macs[2 * SMALL[0]] == 4 * macs[SMALL[0]]
    full_macs = macs[SMALL[0]] * (1024 // SMALL[0]) * (2048 // SMALL[1])
    params, gmacs = PUBLISHED[name]
    assert _matches(stats["params"] / 1e6, params), stats["params"]
    assert _matches(full_macs / 1e9, gmacs), full_macs


def _matches(measured: float, published: str) -> bool:
    """Within 2 % of the published figure, or within its rounding: B2's 15.32M params are
    2.2 % above the printed "15M", which rounds from anything in [14.5, 15.5)."""
    value = float(published)
    decimals = len(published.partition(".")[2])
    return abs(measured - value) <= max(0.02 * value, 0.5 * 10 ** -decimals)


@pytest.mark.parametrize("name,dataset,expand", [
    ("efficientvit_seg_b0", "cityscapes", True),
    ("efficientvit_seg_b1", "ade20k", False),
    ("efficientvit_seg_l1", "cityscapes", False),
])
def test_official_keys_round_trip_to_identical_logits(name, dataset, expand, tmp_path):
    model = input_dependent(vitedge.create_model(name, dataset=dataset))
    sd = model.state_dict()
    official = seg.to_official_state_dict(sd)
    stem = "backbone.input_stem.op_list.0" if "_b" in name else "backbone.stages.0.op_list.0"
    cls = "1" if expand else "0"
    for key in (f"{stem}.conv.weight", "backbone.stages.1.op_list.0.main.point_conv.conv.weight",
                "head.input_ops.0.op_list.0.conv.weight", "head.input_ops.1.op_list.0.norm.bias",
                "head.input_ops.2.norm.running_var", f"head.output_ops.0.op_list.{cls}.conv.bias"):
        assert key in official, key
    block = "inverted_conv" if "_b" in name else "spatial_conv"
    assert f"head.middle.op_list.0.main.{block}.conv.weight" in official
    assert ("head.output_ops.0.op_list.0.norm.weight" in official) == expand

    wrapped = {"state_dict": official}
    assert seg.is_official_state_dict(wrapped) and not seg.is_official_state_dict(sd)
    back = seg.convert_official_state_dict(wrapped)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    torch.manual_seed(5)
    fresh = vitedge.create_model(name, dataset=dataset)
    fresh.load_state_dict(back, strict=True)
    assert_identical(_logits(fresh), _logits(model))

    # the checkpoint loader recognises the official format (and the class count) by itself
    torch.save(wrapped, tmp_path / "official.pt")
    reloaded = load(tmp_path / "official.pt", name, dataset=dataset)
    assert reloaded.num_classes == CLASSES[dataset]
    assert_identical(_logits(reloaded), _logits(model))
    # the official zoo's norm eps (set_norm_eps: 1e-7 on L models), which our build already has
    assert {m.eps for m in reloaded.modules() if isinstance(m, nn.BatchNorm2d)} == \
        {1e-7 if "_l" in name else 1e-5}
    assert seg.official_model_kwargs(name) == {}


@torch.no_grad()
def _quiet_norms(module: nn.Module, scale: float = 1e-2) -> None:
    """Scale every conv-BN's conv and running stats by ``scale``: the same function as eps → 0,
    but with variances where eps is no longer negligible (as in a trained layer's quiet channels)."""
    for m in module.modules():
        if isinstance(m, mit.ConvNormAct) and isinstance(m.norm, nn.BatchNorm2d):
            m.conv.weight.mul_(scale)
            m.norm.running_mean.mul_(scale)
            m.norm.running_var.mul_(scale**2)


def _official_l_seg_head(sd: Mapping[str, torch.Tensor], features: Sequence[torch.Tensor],
                         eps: float) -> torch.Tensor:
    """The official SegHead (efficientvit/models/efficientvit/seg.py) of an L model without final
    expansion, from official keys: 1×1 conv-BN per input, bicubic upsample (align_corners=False),
    list_sum, residual FusedMBConv (gelu, None), classifier conv. ``eps`` is every BN's: the
    model zoo's ``set_norm_eps(model, 1e-7)``."""
    gelu = partial(F.gelu, approximate="tanh")  # the official act.py's "gelu"

    def conv_bn(x: torch.Tensor, p: str, padding: int = 0) -> torch.Tensor:
        x = F.conv2d(x, sd[p + "conv.weight"], padding=padding)
        return F.batch_norm(x, sd[p + "norm.running_mean"], sd[p + "norm.running_var"],
                            sd[p + "norm.weight"], sd[p + "norm.bias"], False, 0.0, eps)

    def up(x: torch.Tensor, factor: int) -> torch.Tensor:
        return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)

    stage2, stage3, stage4 = features
    x = up(conv_bn(stage4, "head.input_ops.0.op_list.0."), 4) + (
        up(conv_bn(stage3, "head.input_ops.1.op_list.0."), 2) + conv_bn(stage2, "head.input_ops.2."))
    depth = len({k.split(".")[3] for k in sd if k.startswith("head.middle.op_list.")})
    for j in range(depth):
        p = f"head.middle.op_list.{j}.main."
        x = x + conv_bn(gelu(conv_bn(x, p + "spatial_conv.", padding=1)), p + "point_conv.")
    return F.conv2d(x, sd["head.output_ops.0.op_list.0.conv.weight"],
                    sd["head.output_ops.0.op_list.0.conv.bias"])


def test_official_l_seg_checkpoint_computes_the_official_head(tmp_path):
    small = dict(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), head_dim=8, head_width=32)
    model = input_dependent(vitedge.create_model("efficientvit_seg_l1", **small), resolution=SMALL)
    _quiet_norms(model.head)
    official = seg.to_official_state_dict(model.state_dict())
    torch.save({"state_dict": official}, tmp_path / "l1.pt")
    loaded = load(tmp_path / "l1.pt", "efficientvit_seg_l1", **small)
    assert {m.eps for m in loaded.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-7}

    torch.manual_seed(1)
    with torch.no_grad():
        features = loaded.forward_features(torch.randn(2, 3, *SMALL))
        expected = _official_l_seg_head(official, features, eps=1e-7)
        assert_parity(loaded.forward_head(features), expected, tol=1e-5, what="official Seg-L1 head")
        # the check can fail: a head with torch's default BN eps misses by far more
        assert distance(_official_l_seg_head(official, features, eps=1e-5), expected) > 1e-3


def test_classification_converter_refuses_a_seg_checkpoint():
    official = seg.to_official_state_dict(vitedge.create_model("efficientvit_seg_b0").state_dict())
    with pytest.raises(VitedgeError, match="classification checkpoint"):
        mit.convert_official_state_dict(official)
    classifier = mit.to_official_state_dict(vitedge.create_model("efficientvit_b0").state_dict())
    with pytest.raises(VitedgeError, match="segmentation checkpoint"):
        seg.convert_official_state_dict(classifier)


class _ResizeDtypes(TorchDispatchMode):
    """Dtypes of the bicubic upsample kernels' inputs and outputs, as dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ == "upsample_bicubic2d":
            self.seen.append((args[0].dtype, out.dtype))
        return out


def test_bicubic_upsample_stays_float32_under_autocast():
    model = input_dependent(vitedge.create_model("efficientvit_seg_b0")).eval()
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), _ResizeDtypes() as mode:
        logits = model(x)
    assert mode.seen == [(torch.float32, torch.float32)] * 2  # ×4 (stage 4) and ×2 (stage 3)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    # a bf16 map comes back bf16, upsampled in FP32 then rounded once
    up, level = seg.BicubicUpsample(2), torch.randn(1, 4, 4, 8).bfloat16()
    expected = nn.functional.interpolate(level.float(), scale_factor=2, mode="bicubic")
    assert torch.equal(up(level), expected.bfloat16())


def test_save_load_round_trip_rebuilds_the_seg_architecture(tmp_path):
    model = input_dependent(vitedge.create_model(
        "efficientvit_seg_b1", dataset="ade20k", num_classes=5, img_size=(256, 512)))
    reloaded = load(save(model, tmp_path / "seg.safetensors"))
    assert type(reloaded) is seg.EfficientVitSeg
    assert reloaded.arch["kwargs"]["dataset"] == "ade20k" and reloaded.num_classes == 5
    assert reloaded.data_config["input_size"] == (3, 256, 512)
    assert isinstance(reloaded.head.expand, nn.Identity)  # ade20k B-series: no expansion conv
    assert_identical(_logits(reloaded), _logits(model))


def test_reset_classifier_and_backbone_only_load(tmp_path):
    model = vitedge.create_model("efficientvit_seg_b0")
    torch.save(model.state_dict(), tmp_path / "city.pth")
    tuned = load(tmp_path / "city.pth", "efficientvit_seg_b0", num_classes=3, backbone_only=True)
    assert _logits(tuned).shape == (2, 3, 8, 16)
    model.reset_classifier(7)
    assert model.num_classes == 7 and _logits(model).shape == (2, 7, 8, 16)


@pytest.mark.parametrize("name,kwargs,match", [
    ("efficientvit_seg_b0", {"dataset": "ade20k"}, "dataset='cityscapes'"),
    ("efficientvit_seg_b2", {"dataset": "coco"}, "'cityscapes' or 'ade20k'"),
    ("efficientvit_seg_b1", {"img_size": (500, 1000)}, "multiple of 32"),
    ("efficientvit_seg_l1", {"head_block": "mbconvv"}, "head_block"),
])
def test_bad_configuration_is_a_clear_error(name, kwargs, match):
    with pytest.raises(VitedgeError, match=match):
        vitedge.create_model(name, **kwargs)
