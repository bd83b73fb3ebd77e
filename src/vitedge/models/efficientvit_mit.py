"""EfficientViT (MIT Han Lab): multi-scale ReLU linear attention, B- and L-series classifiers.

Paper: Cai et al., "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction", ICCV 2023. Our own implementation; state dicts are key-for-key compatible with
timm's ``EfficientVit`` (B0-B3) and ``EfficientVitLarge`` (L1-L3), and
:func:`convert_official_state_dict` reads the official mit-han-lab checkpoints.

One model class serves both series: what differs (stem block, per-stage block type, expand
ratios, "fewer norm" stages, activation, norm eps) is data in a :class:`MitSeries`.
:class:`EfficientVitMitBackbone` is the same stem and stages without the classifier; it and
``EfficientVitMit.forward_pyramid`` return the stride-8/16/32 features that
:mod:`vitedge.models.efficientvit_seg` builds on.

Numerics: the linear attention's ``num / (den + eps)`` always runs in FP32, with autocast off;
``attn_eps`` defaults to the official 1e-15 (timm uses 1e-5 — pass ``attn_eps=1e-5`` for
bit-level parity with timm). Unlike the official code there is no switch to the quadratic form
for tiny maps (H·W <= head dim): a branch on the input size would be frozen by tracing.
Norm eps: the official model zoo sets every norm of an L model to 1e-7; timm builds the L head's
1×1 conv BN with 1e-5 instead (``head_bn_eps``). Models are built as timm builds them;
:func:`official_model_kwargs` gives the keywords that make one compute what the official code
computes, and :func:`vitedge.models.checkpoint.load` passes them for official-format weights.

Structured pruning: ``block_widths`` rebuilds a model with narrower blocks. Keys are module
paths exactly as in the state dict (the module that owns the width):

- ``"<path>": {"mid_channels": n}`` — hidden width of an MBConv, FusedMBConv or ResBlock
  (timm ``ConvBlock``), at ``stem.res{i}.main`` (L-series only), ``stages.{s}.blocks.{j}.main``
  or ``stages.{s}.blocks.{j}.local_module.main`` (the MBConv of an attention block).
  DSConv (B-series stem) has no hidden width: its depthwise conv is tied to its input.
- ``"stages.{s}.blocks.{j}.context_module.main": {"heads": h}`` — LiteMLA heads kept; qkv,
  the aggregation convs and the projection's input shrink to ``h * head_dim`` per branch.
- ``"head": {"widths": [w0, w1]}`` — the classifier's 1×1 conv and hidden linear widths.

Example::

    model = create_model("efficientvit_b0", num_classes=10,
                         block_widths={"stages.2.blocks.1.context_module.main": {"heads": 2}})
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.models.layers import BlockWidths, WidthOverrides, fuse_conv_bn
from vitedge.models.registry import register_model

__all__ = [
    "EfficientVitMit",
    "EfficientVitMitBackbone",
    "MitSeries",
    "backbone_variant",
    "convert_official_state_dict",
    "from_official_backbone_key",
    "is_official_state_dict",
    "official_model_kwargs",
    "to_official_backbone_key",
    "to_official_state_dict",
]

ActLayer = Callable[[], nn.Module]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# helpers


class ConvNormAct(nn.Module):
    """conv → norm → act; norm and act may be ``nn.Identity`` (keys ``conv.*``, ``norm.*``)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def fuse(self) -> nn.Module:
        """The same layer with its BatchNorm folded into the conv (itself if it has no BN)."""
        if not isinstance(self.norm, nn.BatchNorm2d):
            return self
        return ConvNormAct(fuse_conv_bn(self.conv, self.norm), nn.Identity(), self.act)


def conv_norm_act(
    in_chs: int,
    out_chs: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    norm_eps: float | None = None,
    act: ActLayer | None = None,
    bias: bool = False,
) -> ConvNormAct:
    """Build a :class:`ConvNormAct`; ``norm_eps=None`` means no BatchNorm, ``act=None`` no act."""
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                     bias=bias)
    norm = nn.BatchNorm2d(out_chs, eps=norm_eps) if norm_eps is not None else nn.Identity()
    return ConvNormAct(conv, norm, act() if act is not None else nn.Identity())


def _sublayers(n: int, norm_eps: float, act: ActLayer, fewer_norm: bool,
               ) -> tuple[list[float | None], list[ActLayer | None]]:
    """Per-sublayer (norm eps, act) of an n-conv block: act on all but the last conv; a
    "fewer norm" block keeps BN only after the last conv (the others get a bias instead)."""
    norms = [None] * (n - 1) + [norm_eps] if fewer_norm else [norm_eps] * n
    acts = [act] * (n - 1) + [None]
    return norms, acts


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VitedgeError(f"{what} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# blocks


class DSConv(nn.Module):
    """Depthwise-separable conv: dw k×k (stride) → pw 1×1."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, norms: Sequence[float | None],
                 acts: Sequence[ActLayer | None], kernel_size: int = 3) -> None:
        super().__init__()
        self.depth_conv = conv_norm_act(in_chs, in_chs, kernel_size, stride, groups=in_chs,
                                        norm_eps=norms[0], act=acts[0], bias=norms[0] is None)
        self.point_conv = conv_norm_act(in_chs, out_chs, 1, norm_eps=norms[1], act=acts[1],
                                        bias=norms[1] is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class ConvBlock(nn.Module):
    """Two full k×k convs (official ``ResBlock``, timm ``ConvBlock``): L-series stem blocks."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int,
                 norms: Sequence[float | None], acts: Sequence[ActLayer | None],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(in_chs, mid_chs, kernel_size, stride, norm_eps=norms[0],
                                   act=acts[0], bias=norms[0] is None)
        self.conv2 = conv_norm_act(mid_chs, out_chs, kernel_size, 1, norm_eps=norms[1],
                                   act=acts[1], bias=norms[1] is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class MBConv(nn.Module):
    """Inverted residual body: pw 1×1 expand → dw k×k (stride) → pw 1×1 project."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int,
                 norms: Sequence[float | None], acts: Sequence[ActLayer | None],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.inverted_conv = conv_norm_act(in_chs, mid_chs, 1, norm_eps=norms[0], act=acts[0],
                                           bias=norms[0] is None)
        self.depth_conv = conv_norm_act(mid_chs, mid_chs, kernel_size, stride, groups=mid_chs,
                                        norm_eps=norms[1], act=acts[1], bias=norms[1] is None)
        self.point_conv = conv_norm_act(mid_chs, out_chs, 1, norm_eps=norms[2], act=acts[2],
                                        bias=norms[2] is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """MBConv with expand and depthwise fused into one full k×k conv (stride) → pw 1×1."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int,
                 norms: Sequence[float | None], acts: Sequence[ActLayer | None],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.spatial_conv = conv_norm_act(in_chs, mid_chs, kernel_size, stride, norm_eps=norms[0],
                                          act=acts[0], bias=norms[0] is None)
        self.point_conv = conv_norm_act(mid_chs, out_chs, 1, norm_eps=norms[1], act=acts[1],
                                        bias=norms[1] is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    # autocast has no meta backend (shape inference, profiling on meta tensors)
    if device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention with a ReLU kernel.

    qkv (1×1) plus one aggregated copy per scale (dw k×k → grouped 1×1) double the heads; each
    head's channels are ``[q | k | v]``. Attention is the linear form
    ``relu(q) (relu(k)ᵀ [v, 1])``: the ones column makes one matmul give numerator and
    denominator, and the division runs in FP32 whatever the input dtype.
    """

    def __init__(self, in_chs: int, out_chs: int, heads: int, dim: int, norm_eps: float,
                 eps: float = 1e-15, scales: Sequence[int] = (5,)) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        total = heads * dim
        self.qkv = conv_norm_act(in_chs, 3 * total, 1)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, k, padding=k // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for k in scales
        )
        self.proj = conv_norm_act(total * (1 + len(scales)), out_chs, 1, norm_eps=norm_eps)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """ReLU linear attention on channel-major operands ``(B, heads, dim, HW)``, the same layout
        out: ``(Vᵀ·K)·Q`` with a row of ones under V, whose output row is the denominator."""
        dtype = v.dtype
        # FP32 with autocast off: fp16 cannot hold eps=1e-15 (0/0 on all-zero rows) and the
        # sums over H·W tokens overflow it; bf16 would lose the denominator's precision.
        with _autocast_off(v.device.type):
            q, k, v = q.float(), k.float(), v.float()
            v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)
            out = (v @ k.transpose(-1, -2)) @ q
            out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        branches = [qkv]
        for aggreg in self.aggreg:
            branches.append(aggreg(qkv))
        qkv = torch.cat(branches, dim=1)
        # (B, heads, 3·dim, HW), each head's [q | k | v] rows: channels stay ahead of the tokens,
        # so neither the operands nor the output are transposed (timm's token-major layout costs
        # OpenVINO and ONNX Runtime 9-12 % of B1's latency in those copies)
        q, k, v = qkv.reshape(B, -1, 3 * self.dim, H * W).chunk(3, dim=2)
        out = self._attention(F.relu(q), F.relu(k), v)
        return self.proj(out.reshape(B, -1, H, W))


class ResidualBlock(nn.Module):
    """``main(x) + x`` if ``shortcut`` else ``main(x)`` (strided blocks); keys under ``main.``."""

    def __init__(self, main: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut:  # fixed at build time, never data-dependent
            return self.main(x) + x
        return self.main(x)


class EfficientVitBlock(nn.Module):
    """Residual LiteMLA (global context) then residual fewer-norm MBConv (local)."""

    def __init__(self, chs: int, heads: int, mid_chs: int, head_dim: int, act: ActLayer,
                 norm_eps: float, attn_eps: float) -> None:
        super().__init__()
        self.context_module = ResidualBlock(
            LiteMLA(chs, chs, heads, head_dim, norm_eps=norm_eps, eps=attn_eps), shortcut=True)
        norms, acts = _sublayers(3, norm_eps, act, fewer_norm=True)
        self.local_module = ResidualBlock(MBConv(chs, chs, mid_chs, 1, norms, acts), shortcut=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


# --------------------------------------------------------------------------------------------
# stages


@dataclass(frozen=True)
class MitSeries:
    """What distinguishes the B- from the L-series, per backbone stage (stem first).

    ``blocks[0]`` is the stem's residual block; later entries are a stage's body block
    (``EfficientVitBlock`` for attention stages). ``expands`` are the body expand ratios; a
    stage's stride-2 first block expands ``expands[s] * down_expand_mult`` and is an MBConv in
    attention stages. ``fewer_norm`` stages keep BN only after a block's last conv.
    ``depth_counts_downsample``: in the B-series a conv stage's depth includes its stride-2
    block; attention stages (and every L stage) add ``depth`` blocks after it.
    """

    blocks: tuple[type[nn.Module], ...]
    expands: tuple[float, ...]
    fewer_norm: tuple[bool, ...]
    down_expand_mult: float
    depth_counts_downsample: bool
    act: ActLayer
    norm_eps: float  # BatchNorm of the backbone, LayerNorm of the head
    head_bn_eps: float  # BatchNorm of the head's 1×1 conv, as timm builds it
    crop_pct: float


class _BlockBuilder:
    """Builds blocks with the series' act/eps, looking up width overrides by module path."""

    def __init__(self, series: MitSeries, head_dim: int, attn_eps: float,
                 overrides: WidthOverrides) -> None:
        self.series = series
        self.head_dim = head_dim
        self.attn_eps = attn_eps
        self.overrides = overrides

    def mid(self, path: str, default: int) -> int:
        return _positive_int(self.overrides.take(path, "mid_channels", default),
                             f"block_widths[{path!r}]['mid_channels']")

    def local(self, kind: type[nn.Module], in_chs: int, out_chs: int, stride: int,
              expand: float, fewer_norm: bool, path: str) -> nn.Module:
        n_convs = 3 if kind is MBConv else 2
        norms, acts = _sublayers(n_convs, self.series.norm_eps, self.series.act, fewer_norm)
        if kind is DSConv:  # no hidden width of its own
            return DSConv(in_chs, out_chs, stride, norms, acts)
        mid = self.mid(path, round(in_chs * expand))
        return kind(in_chs, out_chs, mid, stride, norms, acts)

    def attention(self, chs: int, expand: float, path: str) -> EfficientVitBlock:
        if chs < self.head_dim:
            raise VitedgeError(f"head_dim={self.head_dim} exceeds the attention width {chs} at "
                               f"{path}; use a head_dim that divides the stage width")
        mla_path = f"{path}.context_module.main"
        heads = _positive_int(self.overrides.take(mla_path, "heads", chs // self.head_dim),
                              f"block_widths[{mla_path!r}]['heads']")
        mid = self.mid(f"{path}.local_module.main", round(chs * expand))
        return EfficientVitBlock(chs, heads, mid, self.head_dim, self.series.act,
                                 self.series.norm_eps, self.attn_eps)


def _stem(in_chans: int, chs: int, depth: int, make: _BlockBuilder) -> nn.Sequential:
    """3×3/2 conv-BN-act, then ``depth`` residual DSConv (B) or ResBlock (L) at full width."""
    s = make.series
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        in_conv=conv_norm_act(in_chans, chs, 3, 2, norm_eps=s.norm_eps, act=s.act))
    for i in range(depth):
        block = make.local(s.blocks[0], chs, chs, 1, s.expands[0], s.fewer_norm[0],
                           path=f"stem.res{i}.main")
        layers[f"res{i}"] = ResidualBlock(block, shortcut=True)
    return nn.Sequential(layers)


class EfficientVitStage(nn.Module):
    """A stride-2 block (no shortcut) followed by residual body blocks, under ``blocks``."""

    def __init__(self, index: int, in_chs: int, out_chs: int, depth: int,
                 make: _BlockBuilder) -> None:
        super().__init__()
        s, i = make.series, index + 1  # series tables count the stem as stage 0
        attention = s.blocks[i] is EfficientVitBlock
        path = f"stages.{index}.blocks"
        down = make.local(MBConv if attention else s.blocks[i], in_chs, out_chs, 2,
                          s.expands[i] * s.down_expand_mult, s.fewer_norm[i], path=f"{path}.0.main")
        blocks: list[nn.Module] = [ResidualBlock(down, shortcut=False)]
        n_body = depth - 1 if s.depth_counts_downsample and not attention else depth
        for j in range(1, n_body + 1):
            if attention:
                blocks.append(make.attention(out_chs, s.expands[i], path=f"{path}.{j}"))
            else:
                body = make.local(s.blocks[i], out_chs, out_chs, 1, s.expands[i], s.fewer_norm[i],
                                  path=f"{path}.{j}.main")
                blocks.append(ResidualBlock(body, shortcut=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _backbone(series: MitSeries, widths: Sequence[int], depths: Sequence[int], in_chans: int,
              make: _BlockBuilder) -> tuple[nn.Sequential, nn.Sequential]:
    """The stem and the four stages (keys ``stem.*``, ``stages.*``)."""
    n_stages = len(series.blocks)
    if len(widths) != n_stages or len(depths) != n_stages:
        raise VitedgeError(f"widths and depths need {n_stages} entries (stem + 4 stages), got "
                           f"widths={tuple(widths)}, depths={tuple(depths)}")
    stem = _stem(in_chans, widths[0], depths[0], make)
    stages = nn.Sequential(*(
        EfficientVitStage(i, widths[i], widths[i + 1], depths[i + 1], make)
        for i in range(n_stages - 1)
    ))
    return stem, stages


def _pyramid(stem: nn.Module, stages: nn.Sequential, x: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # a tuple, not a dict: it traces and exports to ONNX as three plain outputs
    x = stages[0](stem(x))
    stage2 = stages[1](x)
    stage3 = stages[2](stage2)
    stage4 = stages[3](stage3)
    return stage2, stage3, stage4


class ClassifierHead(nn.Module):
    """1×1 conv-BN-act → global avg pool → Linear → LayerNorm → act → dropout → Linear."""

    def __init__(self, in_chs: int, widths: Sequence[int], num_classes: int, drop_rate: float,
                 act: ActLayer, bn_eps: float, ln_eps: float) -> None:
        super().__init__()
        self.in_conv = conv_norm_act(in_chs, widths[0], 1, norm_eps=bn_eps, act=act)
        self.classifier = nn.Sequential(
            nn.Linear(widths[0], widths[1], bias=False),
            nn.LayerNorm(widths[1], eps=ln_eps),
            act(),
            nn.Dropout(drop_rate),
            nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity(),
        )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.in_conv(x).mean(dim=(2, 3))
        x = self.classifier[0](x)
        x = self.classifier[1](x)
        x = self.classifier[2](x)
        x = self.classifier[3](x)
        return x if pre_logits else self.classifier[4](x)


# --------------------------------------------------------------------------------------------
# model


class EfficientVitMit(nn.Module):
    """MIT EfficientViT classifier (B- or L-series, chosen by ``series``).

    Runs at any input resolution divisible by 32; ``img_size`` is the default resolution
    recorded in ``data_config`` for profiling and export. ``num_features`` is the backbone's
    output width, ``head_hidden_size`` the width of ``forward_head(..., pre_logits=True)``.
    ``head_bn_eps`` overrides the eps of the head's 1×1 conv BN (default: the series' value,
    timm's); official L weights need ``series.norm_eps``, see :func:`official_model_kwargs`.

    Example::

        model = EfficientVitMit(B_SERIES, widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2),
                                head_dim=16, head_widths=(1024, 1280))
    """

    classifier_name = "head.classifier.4"  # the layer reset_classifier replaces

    def __init__(
        self,
        series: MitSeries,
        widths: Sequence[int],
        depths: Sequence[int],
        head_dim: int,
        head_widths: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        attn_eps: float = 1e-15,
        drop_rate: float = 0.0,
        block_widths: BlockWidths | None = None,
        head_bn_eps: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0 \
                or img_size % 32:
            raise VitedgeError(f"img_size must be a positive multiple of 32, got {img_size!r}")
        overrides = WidthOverrides(block_widths)
        make = _BlockBuilder(series, head_dim, attn_eps, overrides)

        self.num_classes = num_classes
        self.img_size = img_size
        self.stem, self.stages = _backbone(series, widths, depths, in_chans, make)
        self.num_features = widths[-1]

        head_widths = list(overrides.take("head", "widths", head_widths))
        if len(head_widths) != 2:
            raise VitedgeError(f"head widths need 2 entries [conv, hidden], got {head_widths!r}")
        for w in head_widths:
            _positive_int(w, "head widths")
        if head_bn_eps is None:
            head_bn_eps = series.head_bn_eps
        self.head = ClassifierHead(self.num_features, head_widths, num_classes, drop_rate,
                                   series.act, head_bn_eps, series.norm_eps)
        self.head_hidden_size = head_widths[1]
        overrides.check_all_used()

        self.data_config = dict(input_size=(in_chans, img_size, img_size), mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, crop_pct=series.crop_pct, interpolation="bicubic")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-32 feature map, ``(B, num_features, H/32, W/32)``."""
        return self.stages(self.stem(x))

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs of stages 2, 3 and 4 (strides 8, 16, 32), for dense-prediction heads."""
        return _pyramid(self.stem, self.stages, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits, or the ``head_hidden_size`` embedding before the last Linear."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last Linear with a freshly initialised one (``0``: no classifier)."""
        old = self.head.classifier[4]
        weight = next(self.head.classifier[0].parameters())
        self.num_classes = num_classes
        new = (nn.Linear(self.head_hidden_size, num_classes, device=weight.device,
                         dtype=weight.dtype) if num_classes > 0 else nn.Identity())
        self.head.classifier[4] = new.train(old.training)


class EfficientVitMitBackbone(nn.Module):
    """The stem and four stages of :class:`EfficientVitMit` without its classifier: the
    multi-scale features a dense-prediction head reads. Same keys (``stem.*``, ``stages.*``) as
    the classifier's.

    Example::

        backbone = EfficientVitMitBackbone(B_SERIES, **backbone_variant("efficientvit_b0")[1])
        stage2, stage3, stage4 = backbone(torch.randn(1, 3, 256, 512))  # strides 8, 16, 32
    """

    pyramid_strides = (8, 16, 32)

    def __init__(self, series: MitSeries, widths: Sequence[int], depths: Sequence[int],
                 head_dim: int, in_chans: int = 3, attn_eps: float = 1e-15,
                 overrides: WidthOverrides | None = None) -> None:
        super().__init__()
        # overrides: pruned block widths, keyed by paths inside this backbone (stages.1.blocks.0...)
        make = _BlockBuilder(series, head_dim, attn_eps, overrides or WidthOverrides(None))
        self.stem, self.stages = _backbone(series, widths, depths, in_chans, make)
        self.pyramid_channels = tuple(widths[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_pyramid(x)

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs of stages 2, 3 and 4 (strides 8, 16, 32; widths ``pyramid_channels``)."""
        return _pyramid(self.stem, self.stages, x)


# --------------------------------------------------------------------------------------------
# configs

B_SERIES = MitSeries(
    blocks=(DSConv, MBConv, MBConv, EfficientVitBlock, EfficientVitBlock),
    expands=(1, 4, 4, 4, 4),
    fewer_norm=(False, False, False, True, True),
    down_expand_mult=1,
    depth_counts_downsample=True,
    act=nn.Hardswish,
    norm_eps=1e-5,
    head_bn_eps=1e-5,
    crop_pct=0.95,
)

L_SERIES = MitSeries(
    blocks=(ConvBlock, FusedMBConv, FusedMBConv, MBConv, EfficientVitBlock),
    expands=(1, 4, 4, 4, 6),
    fewer_norm=(False, False, False, True, True),
    down_expand_mult=4,
    depth_counts_downsample=False,
    act=partial(nn.GELU, approximate="tanh"),
    norm_eps=1e-7,
    # timm builds the head's BN with torch's default eps; the official model zoo sets 1e-7 on every
    # norm, this one included. Built as timm by default; official_model_kwargs gives the other.
    head_bn_eps=1e-5,
    crop_pct=1.0,
)

_SERIES = {"b": B_SERIES, "l": L_SERIES}

_VARIANTS: dict[str, dict[str, Any]] = {
    "efficientvit_b0": dict(series="b", widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2),
                            head_dim=16, head_widths=(1024, 1280)),
    "efficientvit_b1": dict(series="b", widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4),
                            head_dim=16, head_widths=(1536, 1600)),
    "efficientvit_b2": dict(series="b", widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6),
                            head_dim=32, head_widths=(2304, 2560)),
    "efficientvit_b3": dict(series="b", widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9),
                            head_dim=32, head_widths=(2304, 2560)),
    "efficientvit_l1": dict(series="l", widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 6),
                            head_dim=32, head_widths=(3072, 3200)),
    "efficientvit_l2": dict(series="l", widths=(32, 64, 128, 256, 512), depths=(1, 2, 2, 8, 8),
                            head_dim=32, head_widths=(3072, 3200)),
    "efficientvit_l3": dict(series="l", widths=(64, 128, 256, 512, 1024), depths=(1, 2, 2, 8, 8),
                            head_dim=32, head_widths=(6144, 6400)),
}


# --------------------------------------------------------------------------------------------
# factory


def backbone_variant(name: str) -> tuple[MitSeries, dict[str, Any]]:
    """The series and backbone fields (``widths``, ``depths``, ``head_dim``) of classifier
    ``name`` (e.g. ``"efficientvit_b1"``), for models that reuse its backbone."""
    variant = dict(_VARIANTS[name])
    series = _SERIES[variant.pop("series")]
    variant.pop("head_widths")
    return series, variant


def _create(name: str, **kwargs: Any) -> EfficientVitMit:
    variant = dict(_VARIANTS[name])
    series = _SERIES[variant.pop("series")]
    # keywords override the variant's fields; an unknown keyword is a TypeError from __init__
    return EfficientVitMit(series, **{**variant, **kwargs})


def official_model_kwargs(name: str) -> dict[str, Any]:
    """Keywords that make classifier ``name`` compute what the official code computes.

    Registered models are built as timm builds them, so timm weights give timm's logits. The
    official model zoo (``create_cls_model``: ``set_norm_eps(model, 1e-7)`` for L models) puts
    every norm of an L model at 1e-7, where timm leaves the head's 1×1 conv BN at 1e-5; the
    official attention eps (1e-15) is already the default. Example::

        model = create_model("efficientvit_l1", **official_model_kwargs("efficientvit_l1"))
    """
    if name not in _VARIANTS:
        raise VitedgeError(f"{name!r} is not an EfficientViT (MIT) classifier")
    series = _SERIES[_VARIANTS[name]["series"]]
    if series.head_bn_eps == series.norm_eps:
        return {}
    return {"head_bn_eps": series.norm_eps}


# --------------------------------------------------------------------------------------------
# official checkpoints (mit-han-lab/efficientvit) <-> our / timm key names

_HEAD_TO_OFFICIAL = (
    ("head.in_conv.", "head.0."),
    ("head.classifier.0.", "head.2.linear."),
    ("head.classifier.1.", "head.2.norm."),
    ("head.classifier.4.", "head.3.linear."),
)


def is_official_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for an official MIT checkpoint (possibly wrapped in ``'state_dict'``)."""
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    return any(k.startswith("backbone.") for k in sd)


def convert_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official MIT EfficientViT state dict (B or L series) to our / timm key names.

    Unwraps a ``'state_dict'`` key. The series is recognised by the B-series ``input_stem``.
    Example::

        model.load_state_dict(convert_official_state_dict(torch.load("b1-r224.pt", weights_only=True)))
    """
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    large = not any(k.startswith("backbone.input_stem.") for k in sd)
    out = {}
    for key, value in sd.items():
        out[_from_official_key(key, large)] = value
    return out


def from_official_backbone_key(key: str, large: bool) -> str:
    """One official key with ``.op_list.`` dropped; a ``backbone.*`` key becomes ours
    (``stem.*``, ``stages.*``). ``large``: the checkpoint is of the L-series."""
    k = key.replace(".op_list.", ".")
    if large:
        k = re.sub(r"^backbone\.stages\.0\.0\.", "stem.in_conv.", k)
        k = re.sub(r"^backbone\.stages\.0\.(\d+)\.", lambda m: f"stem.res{int(m[1]) - 1}.", k)
        k = re.sub(r"^backbone\.stages\.(\d+)\.(\d+)\.",
                   lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.", k)
    else:
        k = re.sub(r"^backbone\.input_stem\.0\.", "stem.in_conv.", k)
        k = re.sub(r"^backbone\.input_stem\.(\d+)\.", lambda m: f"stem.res{int(m[1]) - 1}.", k)
        k = re.sub(r"^backbone\.stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
    return k


def _from_official_key(key: str, large: bool) -> str:
    k = from_official_backbone_key(key, large)
    for ours, official in _HEAD_TO_OFFICIAL:
        if k.startswith(official):
            return ours + k[len(official):]
    if not k.startswith(("stem.", "stages.")):
        raise VitedgeError(f"unexpected key {key!r} in an official EfficientViT checkpoint; is it "
                           "a classification checkpoint of the MIT family?")
    return k


def to_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_official_state_dict`: our / timm names → official names.

    The L-series is recognised by its FusedMBConv first stage (``spatial_conv``).
    """
    large = any(k.startswith("stages.0.blocks.0.main.spatial_conv.") for k in sd)
    return {_to_official_key(key, large): value for key, value in sd.items()}


def to_official_backbone_key(key: str, large: bool) -> str:
    """Inverse of :func:`from_official_backbone_key` for our ``stem.*`` / ``stages.*`` keys
    (other keys come back unchanged)."""
    stem = "backbone.stages.0.op_list." if large else "backbone.input_stem.op_list."
    first = 1 if large else 0
    k = re.sub(r"^stem\.in_conv\.", f"{stem}0.", key)
    k = re.sub(r"^stem\.res(\d+)\.", lambda m: f"{stem}{int(m[1]) + 1}.", k)
    k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.",
               lambda m: f"backbone.stages.{int(m[1]) + first}.op_list.{m[2]}.", k)
    return k


def _to_official_key(key: str, large: bool) -> str:
    k = to_official_backbone_key(key, large)
    for ours, official in _HEAD_TO_OFFICIAL:
        if k.startswith(ours):
            return "head.op_list." + official[len("head."):] + k[len(ours):]
    if not k.startswith("backbone."):
        raise VitedgeError(f"unexpected key {key!r}: not an EfficientViT (MIT) state dict")
    return k


# --------------------------------------------------------------------------------------------
# registered entry points


@register_model
def efficientvit_b0(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-B0 (3.4M params, 0.10 GMACs at 224)."""
    return _create("efficientvit_b0", **kwargs)


@register_model
def efficientvit_b1(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-B1 (9.1M params, 0.52 GMACs at 224)."""
    return _create("efficientvit_b1", **kwargs)


@register_model
def efficientvit_b2(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-B2 (24M params, 1.6 GMACs at 224)."""
    return _create("efficientvit_b2", **kwargs)


@register_model
def efficientvit_b3(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-B3 (49M params, 4.0 GMACs at 224)."""
    return _create("efficientvit_b3", **kwargs)


@register_model
def efficientvit_l1(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-L1 (53M params, 5.3 GMACs at 224)."""
    return _create("efficientvit_l1", **kwargs)


@register_model
def efficientvit_l2(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-L2 (64M params, 6.9 GMACs at 224)."""
    return _create("efficientvit_l2", **kwargs)


@register_model
def efficientvit_l3(**kwargs: Any) -> EfficientVitMit:
    """EfficientViT-L3 (246M params, 28 GMACs at 224)."""
    return _create("efficientvit_l3", **kwargs)
