"""EfficientViT (MIT Han Lab) semantic segmentation: a B- or L-series backbone plus a SegHead.

Paper: Cai et al., "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction", ICCV 2023. timm has no segmentation models, so the official code is the reference;
:func:`convert_official_state_dict` reads the official mit-han-lab seg checkpoints.

The backbone is :class:`~vitedge.models.efficientvit_mit.EfficientVitMitBackbone` (keys
``backbone.stem.*``, ``backbone.stages.*``, as the classifier's under ``backbone.``). The head
reads its stride-8/16/32 outputs: each goes through a 1×1 conv-BN, the two coarser ones are
upsampled bicubically to stride 8 and the three are summed; residual MBConv (B) or fused-MBConv
(L) blocks, an optional 1×1 expansion and a 1×1 classifier follow. Logits come out at stride 8
(``(B, num_classes, H/8, W/8)``); resizing them to the label size is the evaluator's job.

Head configurations are per dataset (``dataset="cityscapes"`` or ``"ade20k"``); keywords
override any field, as for the classifiers. The L-series uses BN eps 1e-7 everywhere, head
included, as the official model zoo sets it.

Example::

    model = create_model("efficientvit_seg_b1", dataset="ade20k")
    logits = model(torch.randn(1, 3, 512, 512))  # (1, 150, 64, 64)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.models.efficientvit_mit import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ActLayer,
    EfficientVitMitBackbone,
    FusedMBConv,
    MBConv,
    MitSeries,
    ResidualBlock,
    _autocast_off,
    _positive_int,
    backbone_variant,
    conv_norm_act,
    from_official_backbone_key,
    to_official_backbone_key,
)
from vitedge.models.layers import BlockWidths, WidthOverrides
from vitedge.models.registry import register_model

__all__ = [
    "DATASET_INPUT_SIZE",
    "EfficientVitSeg",
    "SegHead",
    "convert_official_state_dict",
    "is_official_state_dict",
    "official_model_kwargs",
    "to_official_state_dict",
]

# (height, width) each dataset's models are evaluated at: Cityscapes full frames, ADE20K crops
DATASET_INPUT_SIZE: dict[str, tuple[int, int]] = {"cityscapes": (1024, 2048), "ade20k": (512, 512)}
HEAD_BLOCKS = ("mbconv", "fused_mbconv")


# --------------------------------------------------------------------------------------------
# blocks


class BicubicUpsample(nn.Module):
    """Bicubic upsampling by an integer ``factor`` (align_corners=False), computed in FP32.

    The official head upsamples in FP32 with autocast off; the result is cast back to the
    input dtype so a half-precision model (FP16 export) keeps feeding its convs their dtype.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        # FP32 with autocast off, as the official UpSampleLayer: the same numbers under AMP
        with _autocast_off(x.device.type):
            out = F.interpolate(x.float(), scale_factor=self.factor, mode="bicubic",
                                align_corners=False)
        return out.to(dtype)


class SegHead(nn.Module):
    """Sum of the three pyramid levels at stride 8, residual blocks, 1×1 classifier.

    ``in_chs`` are the widths of stages 2, 3, 4 (strides 8, 16, 32), as the backbone lists them;
    ``in_convs`` are ordered stage 4, 3, 2 like the official ``input_ops``.
    """

    def __init__(self, in_chs: Sequence[int], width: int, depth: int, expand: float, block: str,
                 final_expand: int | None, num_classes: int, drop_rate: float, act: ActLayer,
                 norm_eps: float, overrides: WidthOverrides | None = None) -> None:
        super().__init__()
        # overrides: pruned widths inside the head, keyed "middle.{j}.main" and "expand"
        overrides = overrides or WidthOverrides(None)
        self.in_convs = nn.ModuleList(conv_norm_act(c, width, 1, norm_eps=norm_eps)
                                      for c in reversed(in_chs))
        self.up4 = BicubicUpsample(4)
        self.up2 = BicubicUpsample(2)
        kind, n_convs = (MBConv, 3) if block == "mbconv" else (FusedMBConv, 2)
        norms, acts = [norm_eps] * n_convs, [act] * (n_convs - 1) + [None]
        mids = [_positive_int(overrides.take(f"middle.{j}.main", "mid_channels", round(width * expand)),
                              f"block_widths['head.middle.{j}.main']['mid_channels']") for j in range(depth)]
        self.middle = nn.Sequential(*(
            ResidualBlock(kind(width, width, mid, 1, norms, acts), shortcut=True) for mid in mids
        ))
        hidden = width * final_expand if final_expand else width
        if final_expand:
            hidden = _positive_int(overrides.take("expand", "width", hidden),
                                   "block_widths['head.expand']['width']")
        self.hidden_size = hidden
        self.expand = (conv_norm_act(width, self.hidden_size, 1, norm_eps=norm_eps, act=act)
                       if final_expand else nn.Identity())
        self.dropout = nn.Dropout2d(drop_rate)  # the official ConvLayer's dropout is channel-wise
        self.classifier = nn.Conv2d(self.hidden_size, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        stage2, stage3, stage4 = features
        # summed in the official order, stage4 + (stage3 + stage2), for the same rounding
        x = self.up4(self.in_convs[0](stage4)) + (
            self.up2(self.in_convs[1](stage3)) + self.in_convs[2](stage2))
        x = self.expand(self.middle(x))
        return x if pre_logits else self.classifier(self.dropout(x))


# --------------------------------------------------------------------------------------------
# model


def _image_size(img_size: Any) -> tuple[int, int]:
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 or s % 32
                             for s in size):
        raise VitedgeError(f"img_size must be a positive multiple of 32 or a (height, width) pair "
                           f"of them, got {img_size!r}")
    return size


class EfficientVitSeg(nn.Module):
    """MIT EfficientViT semantic segmentation (B- or L-series backbone + :class:`SegHead`).

    Runs at any input size whose sides are divisible by 32 and returns logits at stride 8;
    ``img_size`` (int or (height, width)) is the default recorded in ``data_config`` for
    profiling and export. ``head_hidden_size`` is the width of
    ``forward_head(..., pre_logits=True)``.

    Example::

        series, backbone = backbone_variant("efficientvit_b0")
        model = EfficientVitSeg(series, **backbone, head_width=32, head_depth=1, head_expand=4,
                                head_block="mbconv", final_expand=4, num_classes=19)
    """

    classifier_name = "head.classifier"  # the layer reset_classifier replaces

    def __init__(
        self,
        series: MitSeries,
        widths: Sequence[int],
        depths: Sequence[int],
        head_dim: int,
        head_width: int,
        head_depth: int,
        head_expand: float,
        head_block: str,
        final_expand: int | None,
        num_classes: int,
        in_chans: int = 3,
        img_size: int | Sequence[int] = DATASET_INPUT_SIZE["cityscapes"],
        attn_eps: float = 1e-15,
        drop_rate: float = 0.0,
        block_widths: BlockWidths | None = None,
    ) -> None:
        super().__init__()
        height, width = _image_size(img_size)
        _positive_int(num_classes, "num_classes")
        _positive_int(head_width, "head_width")
        if head_block not in HEAD_BLOCKS:
            raise VitedgeError(f"head_block must be one of {', '.join(HEAD_BLOCKS)}, got "
                               f"{head_block!r}")
        # block_widths (a pruned model) are keyed by module path: "backbone.stages...", "head.middle..."
        overrides = WidthOverrides(block_widths)
        self.backbone = EfficientVitMitBackbone(series, widths, depths, head_dim, in_chans, attn_eps,
                                                overrides=overrides.under("backbone."))
        self.head = SegHead(self.backbone.pyramid_channels, head_width, head_depth, head_expand,
                            head_block, final_expand, num_classes, drop_rate, series.act,
                            series.norm_eps, overrides=overrides.under("head."))
        overrides.check_all_used()
        self.num_classes = num_classes
        self.img_size = (height, width)
        self.head_hidden_size = self.head.hidden_size
        # full frames, no crop; mean/std of the ImageNet-pretrained backbone
        self.data_config = dict(input_size=(in_chans, height, width), mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, crop_pct=1.0, interpolation="bicubic")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backbone's stage 2, 3, 4 outputs (strides 8, 16, 32)."""
        return self.backbone.forward_pyramid(x)

    def forward_head(self, features: Sequence[torch.Tensor], pre_logits: bool = False,
                     ) -> torch.Tensor:
        """Stride-8 logits, or the ``head_hidden_size``-wide map before the classifier."""
        return self.head(features, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the 1×1 classifier with a freshly initialised one for ``num_classes``."""
        _positive_int(num_classes, "num_classes")
        old = self.head.classifier
        self.num_classes = num_classes
        new = nn.Conv2d(self.head_hidden_size, num_classes, 1, device=old.weight.device,
                        dtype=old.weight.dtype)
        self.head.classifier = new.train(old.training)


# --------------------------------------------------------------------------------------------
# configs


def _head(width: int, depth: int, expand: float, block: str, final_expand: int | None,
          num_classes: int) -> dict[str, Any]:
    return dict(head_width=width, head_depth=depth, head_expand=expand, head_block=block,
                final_expand=final_expand, num_classes=num_classes)


# model -> dataset -> head fields (official efficientvit/models/efficientvit/seg.py)
_HEADS: dict[str, dict[str, dict[str, Any]]] = {
    "efficientvit_seg_b0": {"cityscapes": _head(32, 1, 4, "mbconv", 4, 19)},
    "efficientvit_seg_b1": {"cityscapes": _head(64, 3, 4, "mbconv", 4, 19),
                            "ade20k": _head(64, 3, 4, "mbconv", None, 150)},
    "efficientvit_seg_b2": {"cityscapes": _head(96, 3, 4, "mbconv", 4, 19),
                            "ade20k": _head(96, 3, 4, "mbconv", None, 150)},
    "efficientvit_seg_b3": {"cityscapes": _head(128, 3, 4, "mbconv", 4, 19),
                            "ade20k": _head(128, 3, 4, "mbconv", None, 150)},
    "efficientvit_seg_l1": {"cityscapes": _head(256, 3, 1, "fused_mbconv", None, 19),
                            "ade20k": _head(128, 3, 4, "fused_mbconv", 8, 150)},
    "efficientvit_seg_l2": {"cityscapes": _head(256, 5, 1, "fused_mbconv", None, 19),
                            "ade20k": _head(128, 3, 4, "fused_mbconv", 8, 150)},
}


# --------------------------------------------------------------------------------------------
# factory


def _create(name: str, dataset: str, **kwargs: Any) -> EfficientVitSeg:
    heads = _HEADS[name]
    if not isinstance(dataset, str) or dataset not in heads:
        raise VitedgeError(f"{name} has no head configuration for dataset {dataset!r}; use "
                           f"dataset={' or '.join(repr(d) for d in heads)}")
    series, backbone = backbone_variant(name.replace("_seg_", "_"))
    variant = {**backbone, **heads[dataset], "img_size": DATASET_INPUT_SIZE[dataset]}
    # keywords override the variant's fields; an unknown keyword is a TypeError from __init__
    return EfficientVitSeg(series, **{**variant, **kwargs})


# --------------------------------------------------------------------------------------------
# official checkpoints (mit-han-lab/efficientvit, EfficientViTSeg) <-> our key names

# (ours, official) prefixes; the official head is a DAGBlock of OpSequentials
_HEAD_TO_OFFICIAL = (
    ("head.in_convs.0.", "head.input_ops.0.op_list.0."),  # then an UpSampleLayer, no weights
    ("head.in_convs.1.", "head.input_ops.1.op_list.0."),
    ("head.in_convs.2.", "head.input_ops.2."),
    ("head.middle.", "head.middle.op_list."),
)


def _head_pairs(expand: bool) -> tuple[tuple[str, str], ...]:
    # output_ops.0 is [expansion ConvLayer, classifier ConvLayer], or just the classifier
    if expand:
        return _HEAD_TO_OFFICIAL + (("head.expand.", "head.output_ops.0.op_list.0."),
                                    ("head.classifier.", "head.output_ops.0.op_list.1.conv."))
    return _HEAD_TO_OFFICIAL + (("head.classifier.", "head.output_ops.0.op_list.0.conv."),)


def official_model_kwargs(name: str) -> dict[str, Any]:
    """Keywords that make seg model ``name`` compute what the official code computes: none.

    With no timm counterpart to follow, the seg models are built as the official model zoo builds
    them (``create_seg_model``: every norm of an L model at 1e-7, the head's included).
    """
    if name not in _HEADS:
        raise VitedgeError(f"{name!r} is not an EfficientViT segmentation model")
    return {}


def is_official_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for an official MIT seg checkpoint (possibly wrapped in ``'state_dict'``)."""
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    return any(".op_list." in k for k in sd)  # our keys never contain it


def convert_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official EfficientViT segmentation state dict (B or L) to our key names.

    Unwraps a ``'state_dict'`` key. The series is recognised by the B-series ``input_stem``,
    the optional head expansion by a second output op. Example::

        sd = torch.load("cityscapes/b0.pt", weights_only=True)
        model = create_model("efficientvit_seg_b0")
        model.load_state_dict(convert_official_state_dict(sd))
    """
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    large = not any(k.startswith("backbone.input_stem.") for k in sd)
    pairs = _head_pairs(any(k.startswith("head.output_ops.0.op_list.1.") for k in sd))
    return {_from_official_key(key, large, pairs): value for key, value in sd.items()}


def _from_official_key(key: str, large: bool, pairs: tuple[tuple[str, str], ...]) -> str:
    if key.startswith("backbone."):
        k = from_official_backbone_key(key, large)
        if k.startswith(("stem.", "stages.")):
            return "backbone." + k
    for ours, official in pairs:
        if key.startswith(official):
            return ours + key[len(official):]
    raise VitedgeError(f"unexpected key {key!r} in an official EfficientViT checkpoint; is it a "
                       "segmentation checkpoint of the MIT family?")


def to_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_official_state_dict`: our names → official names.

    The L-series is recognised by its FusedMBConv first stage (``spatial_conv``).
    """
    large = any(k.startswith("backbone.stages.0.blocks.0.main.spatial_conv.") for k in sd)
    pairs = _head_pairs(any(k.startswith("head.expand.") for k in sd))
    return {_to_official_key(key, large, pairs): value for key, value in sd.items()}


def _to_official_key(key: str, large: bool, pairs: tuple[tuple[str, str], ...]) -> str:
    if key.startswith("backbone."):
        k = to_official_backbone_key(key[len("backbone."):], large)
        if k.startswith("backbone."):
            return k
    for ours, official in pairs:
        if key.startswith(ours):
            return official + key[len(ours):]
    raise VitedgeError(f"unexpected key {key!r}: not an EfficientViT (MIT) segmentation state dict")


# --------------------------------------------------------------------------------------------
# registered entry points


@register_model
def efficientvit_seg_b0(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-B0, Cityscapes head (0.7M params, 4.4 GMACs at 1024×2048)."""
    return _create("efficientvit_seg_b0", dataset, **kwargs)


@register_model
def efficientvit_seg_b1(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-B1, Cityscapes (4.8M params, 25 GMACs at 1024×2048) or ADE20K head."""
    return _create("efficientvit_seg_b1", dataset, **kwargs)


@register_model
def efficientvit_seg_b2(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-B2, Cityscapes (15M params, 74 GMACs at 1024×2048) or ADE20K head."""
    return _create("efficientvit_seg_b2", dataset, **kwargs)


@register_model
def efficientvit_seg_b3(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-B3, Cityscapes (40M params, 179 GMACs at 1024×2048) or ADE20K head."""
    return _create("efficientvit_seg_b3", dataset, **kwargs)


@register_model
def efficientvit_seg_l1(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-L1, Cityscapes or ADE20K head."""
    return _create("efficientvit_seg_l1", dataset, **kwargs)


@register_model
def efficientvit_seg_l2(dataset: str = "cityscapes", **kwargs: Any) -> EfficientVitSeg:
    """EfficientViT-Seg-L2, Cityscapes or ADE20K head."""
    return _create("efficientvit_seg_l2", dataset, **kwargs)
