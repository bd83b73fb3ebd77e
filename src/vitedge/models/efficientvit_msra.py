"""EfficientViT by Microsoft Research Asia: cascaded group attention (Liu et al., CVPR 2023).

Classifiers ``efficientvit_m0`` … ``efficientvit_m5``, written for vitedge and state-dict
compatible with timm's ``EfficientVitMsra`` (same module paths, same parameter and buffer names),
so a timm checkpoint loads with ``strict=True``. Official Microsoft (Cream) checkpoints load after
:func:`convert_official_state_dict`.

Layout: patch embedding (four 3×3/2 conv-BN, ReLU between) → three stages of "sandwich" blocks
(DW conv, FFN, cascaded group attention, DW conv, FFN; each residual), with a residual DW+FFN,
patch merging and another residual DW+FFN between stages → global average pool → BN1d + Linear.

Export notes: the input resolution is fixed at construction (``img_size``) because the attention
biases and the window partition depend on it; every shape decision is made in ``__init__``, so
forwards are straight chains that trace to the same graph for any batch size. The relative
attention bias is gathered from ``attention_biases`` on every forward (a tiny gather), instead of
timm's eval-mode cache, so it can never go stale after ``load_state_dict`` or pruning.

Width overrides (``block_widths``, for structured pruning) are keyed by module path as in the
state dict; supported entries:

* FFN (``ConvMlp``), e.g. ``stages.0.blocks.0.ffn0.m``, ``stages.0.blocks.0.ffn1.m``,
  ``stages.1.downsample.res1.1.m``, ``stages.1.downsample.res2.1.m``:
  ``{"hidden": int}`` — the expanded width (default 2·C).
* Cascaded group attention, e.g. ``stages.0.blocks.0.mixer.m.attn``:
  ``{"key_dims": [int, ...]}`` — one q/k width per head (default ``key_dim`` each). q and k of a
  head keep the same width; v widths stay C/heads because the cascade adds head i−1's output to
  input chunk i. The softmax scale stays ``key_dim ** -0.5`` so removing channels does not
  rescale the surviving logits.
* Patch merging, e.g. ``stages.1.downsample.patchmerge``: ``{"hidden": int}`` — the 4·C
  expansion.
* Its squeeze-excite, e.g. ``stages.1.downsample.patchmerge.se``: ``{"hidden": int}`` — the
  reduced width (default ``make_divisible(hidden / 4, 8)``).
* A stage's residual width, e.g. ``stages.1``: ``{"dim": int}`` — the channels every block of
  the stage adds into (default ``embed_dim[i]``), a multiple of the stage's head count: each head
  reads a ``dim / heads`` chunk. The patch embedding (stage 0) or the patch merging (later
  stages) writes it; the next stage's downsample and the classifier read it.

Example::

    model = create_model("efficientvit_m0", block_widths={
        "stages.0.blocks.0.ffn0.m": {"hidden": 96},
        "stages.0.blocks.0.mixer.m.attn": {"key_dims": [16, 8, 12, 16]},
    })
"""

from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.models.layers import BlockWidths, WidthOverrides, fuse_bn_linear, fuse_conv_bn
from vitedge.models.registry import register_model

__all__ = [
    "EfficientVitMsra",
    "convert_official_state_dict",
    "is_official_state_dict",
    "official_model_kwargs",
    "to_official_state_dict",
]

# timm's default cfg for every efficientvit_m* model (ImageNet mean/std, bicubic, 0.875 crop).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CROP_PCT = 0.875
_INTERPOLATION = "bicubic"
_PATCH_EMBED_CONVS = 4  # four stride-2 convs: stride 16


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), as timm's SE does."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def _conv_out(size: int) -> int:
    """Output size of a 3×3, stride-2, padding-1 conv (also the stride-2 patch merging)."""
    return (size - 1) // 2 + 1


def _attention_bias_idxs(resolution: int) -> torch.Tensor:
    """(N, N) index of each query/key pair's offset (|dy|, |dx|) into the per-head bias table.

    Offsets are numbered in order of first appearance, exactly as timm and the official code do,
    so ``attention_biases`` tables are interchangeable.
    """
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(idxs, dtype=torch.long).view(len(points), len(points))


def _positive_int(value: Any, path: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VitedgeError(f"block_widths[{path!r}][{key!r}] = {value!r}: expected a positive int")
    return value


def _take_width(widths: WidthOverrides, path: str, key: str, default: int) -> int:
    """The overridden width of ``path`` (validated), else ``default``."""
    return _positive_int(widths.take(path, key, default), path, key)


def _stage_dim(widths: WidthOverrides, path: str, default: int, num_heads: int) -> int:
    """A stage's residual width: overridden (a multiple of its head count), else ``default``."""
    dim = _take_width(widths, path, "dim", default)
    if dim % num_heads:
        raise VitedgeError(f"block_widths[{path!r}]['dim'] = {dim}: expected a multiple of the stage's "
                           f"{num_heads} heads (each head reads dim / heads channels)")
    return dim


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------

class ConvNorm(nn.Module):
    """Conv2d (no bias) followed by BatchNorm2d; ``fuse()`` folds the BN into the conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        # Zero-init BN scale on residual branches makes each block start as the identity.
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


class NormLinear(nn.Module):
    """BatchNorm1d → dropout → Linear classifier; ``fuse()`` folds the BN into the linear."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))

    def fuse(self) -> nn.Linear:
        # Dropout is the identity in eval mode, so BN and linear are adjacent there.
        return fuse_bn_linear(self.bn, self.linear)


class Residual(nn.Module):
    """``x + m(x)``; the wrapped module sits at ``.m`` (as in timm and the official code)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class ConvMlp(nn.Module):
    """Pointwise FFN: 1×1 conv-BN C→hidden, ReLU, 1×1 conv-BN hidden→C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excite with 1×1 convs (timm ``SEModule`` names: fc1, fc2; ReLU, sigmoid gate)."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class PatchMerging(nn.Module):
    """Stride-2 downsample: 1×1 C→hidden, ReLU, DW 3×3/2, ReLU, SE, 1×1 hidden→C_out."""

    def __init__(self, dim: int, out_dim: int, widths: WidthOverrides, path: str) -> None:
        super().__init__()
        hidden = _take_width(widths, path, "hidden", 4 * dim)
        se_hidden = _take_width(widths, f"{path}.se", "hidden", _make_divisible(hidden * 0.25))
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, se_hidden)
        self.conv3 = ConvNorm(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one (window_res × window_res) window.

    The input is split into one chunk per head; head i sees chunk i plus head i−1's output, so
    later heads refine earlier ones at no extra cost. Each head: conv-BN to [q | k | v], a
    depthwise conv on q (kernel ``kernels[i]``), softmax(qᵀk·scale + relative bias), v·attnᵀ.
    Head outputs are concatenated → ReLU → conv-BN back to C.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int,
                 kernels: Sequence[int], key_dims: Sequence[int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dims = tuple(key_dims) if key_dims is not None else (key_dim,) * num_heads
        # The scale of the unpruned model: pruning q/k channels must not rescale the logits.
        self.scale = key_dim ** -0.5
        self.val_dim = dim // num_heads
        self.resolution = resolution

        vd = self.val_dim
        self.qkvs = nn.ModuleList(ConvNorm(vd, 2 * kd + vd) for kd in self.key_dims)
        self.dws = nn.ModuleList(
            ConvNorm(kd, kd, k, 1, k // 2, groups=kd) for kd, k in zip(self.key_dims, kernels)
        )
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(vd * num_heads, dim, bn_weight_init=0.0))

        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # Non-persistent, as in timm: rebuilt from the resolution, never read from checkpoints.
        self.register_buffer("attention_bias_idxs", _attention_bias_idxs(resolution),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, vd = self.resolution, self.val_dim
        attn_bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        feats_in = x.split(vd, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, (qkv, dw, kd) in enumerate(zip(self.qkvs, self.dws, self.key_dims)):
            if i > 0:  # the cascade: a static Python loop over heads, unrolled by tracing
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).split([kd, kd, vd], dim=1)
            q = dw(q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            q = q * self.scale
            attn = (q.transpose(-2, -1) @ k + attn_bias[i]).softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(-1, vd, res, res)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, dim=1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention in non-overlapping windows (zero-padded to whole windows).

    Whether to partition, and the padding, are fixed from the feature resolution at
    construction, so forward has no shape-dependent branches for tracing to freeze.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, window_size: int,
                 kernels: Sequence[int], key_dims: Sequence[int] | None = None) -> None:
        super().__init__()
        if window_size < 1:
            raise VitedgeError(f"window_size={window_size}: must be a positive int")
        self.dim = dim
        self.resolution = resolution
        ws = min(window_size, resolution)
        self.window = ws
        self.partition = resolution > ws
        self.pad = (ws - resolution % ws) % ws
        self.num_windows = (resolution + self.pad) // ws  # per side
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, ws, kernels, key_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.partition:
            return self.attn(x)
        c, ws, n = self.dim, self.window, self.num_windows
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))
        # window partition: B C (nH ws) (nW ws) -> (B nH nW) C ws ws
        x = x.view(-1, c, n, ws, n, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)
        x = self.attn(x)
        # window reverse: (B nH nW) C ws ws -> B C (nH ws) (nW ws)
        x = x.view(-1, n, n, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(-1, c, n * ws, n * ws)
        if self.pad:
            x = x[:, :, :self.resolution, :self.resolution].contiguous()
        return x


def _dw_ffn(dim: int, widths: WidthOverrides, path: str) -> nn.Sequential:
    """Residual DW 3×3 conv-BN then residual FFN: the halves of the downsample sandwich."""
    hidden = _take_width(widths, f"{path}.1.m", "hidden", 2 * dim)
    return nn.Sequential(
        Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim)),
        Residual(ConvMlp(dim, hidden)),
    )


class EfficientVitBlock(nn.Module):
    """Sandwich block: residual DW conv, FFN, window attention, DW conv, FFN."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, window_size: int,
                 kernels: Sequence[int], widths: WidthOverrides, path: str) -> None:
        super().__init__()
        ffn0_hidden = _take_width(widths, f"{path}.ffn0.m", "hidden", 2 * dim)
        ffn1_hidden = _take_width(widths, f"{path}.ffn1.m", "hidden", 2 * dim)
        attn_path = f"{path}.mixer.m.attn"
        key_dims = widths.take(attn_path, "key_dims", None)
        if key_dims is not None:
            if isinstance(key_dims, (str, bytes)) or not isinstance(key_dims, Sequence) \
                    or len(key_dims) != num_heads:
                raise VitedgeError(f"block_widths[{attn_path!r}]['key_dims'] = {key_dims!r}: "
                                   f"expected a list of {num_heads} positive ints, one per head")
            key_dims = [_positive_int(kd, attn_path, "key_dims") for kd in key_dims]

        self.dw0 = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn0 = Residual(ConvMlp(dim, ffn0_hidden))
        self.mixer = Residual(LocalWindowAttention(
            dim, key_dim, num_heads, resolution, window_size, kernels, key_dims,
        ))
        self.dw1 = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn1 = Residual(ConvMlp(dim, ffn1_hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------

class EfficientVitStage(nn.Module):
    """Optional stride-2 downsample (res1, patchmerge, res2) followed by ``depth`` blocks."""

    def __init__(self, in_dim: int, out_dim: int, depth: int, key_dim: int, num_heads: int,
                 resolution: int, window_size: int, kernels: Sequence[int], downsample: bool,
                 widths: WidthOverrides, path: str) -> None:
        super().__init__()
        if downsample:
            ds = f"{path}.downsample"
            self.downsample: nn.Module = nn.Sequential(OrderedDict([
                ("res1", _dw_ffn(in_dim, widths, f"{ds}.res1")),
                ("patchmerge", PatchMerging(in_dim, out_dim, widths, f"{ds}.patchmerge")),
                ("res2", _dw_ffn(out_dim, widths, f"{ds}.res2")),
            ]))
            resolution = _conv_out(resolution)
        else:
            self.downsample = nn.Identity()
        self.resolution = resolution  # feature resolution inside this stage
        self.blocks = nn.Sequential(*[
            EfficientVitBlock(out_dim, key_dim, num_heads, resolution, window_size, kernels,
                              widths, f"{path}.blocks.{j}")
            for j in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbedding(nn.Module):
    """Four 3×3/2 conv-BN (C/8, C/4, C/2, C) with ReLU between: stride 16."""

    def __init__(self, in_chans: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_chans, dim // 8, 3, 2, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvNorm(dim // 8, dim // 4, 3, 2, 1)
        self.relu2 = nn.ReLU()
        self.conv3 = ConvNorm(dim // 4, dim // 2, 3, 2, 1)
        self.relu3 = nn.ReLU()
        self.conv4 = ConvNorm(dim // 2, out_dim or dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.conv4(x)


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

class EfficientVitMsra(nn.Module):
    """EfficientViT (MSRA) classifier; parameters and buffers named as in timm.

    Example::

        model = EfficientVitMsra(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4))
        logits = model(torch.randn(1, 3, 224, 224))
    """

    classifier_name = "head.linear"  # the layer reset_classifier replaces

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        drop_rate: float = 0.0,
        embed_dim: Sequence[int] = (64, 128, 192),
        depth: Sequence[int] = (1, 2, 3),
        num_heads: Sequence[int] = (4, 4, 4),
        key_dim: Sequence[int] = (16, 16, 16),
        window_size: Sequence[int] = (7, 7, 7),
        kernels: Sequence[int] = (5, 5, 5, 5),
        block_widths: BlockWidths | None = None,
    ) -> None:
        super().__init__()
        embed_dim, depth, num_heads = tuple(embed_dim), tuple(depth), tuple(num_heads)
        key_dim, window_size, kernels = tuple(key_dim), tuple(window_size), tuple(kernels)
        _check_config(img_size, embed_dim, depth, num_heads, key_dim, window_size, kernels)
        widths = WidthOverrides(block_widths)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.drop_rate = drop_rate
        dims = tuple(_stage_dim(widths, f"stages.{i}", ed, nh)
                     for i, (ed, nh) in enumerate(zip(embed_dim, num_heads)))
        self.num_features = self.head_hidden_size = dims[-1]  # pre-logits = pooled features
        self.data_config = dict(input_size=(in_chans, img_size, img_size), mean=_IMAGENET_MEAN,
                                std=_IMAGENET_STD, crop_pct=_CROP_PCT, interpolation=_INTERPOLATION)

        # the patch embedding's inner widths follow the configured width, not a pruned one
        self.patch_embed = PatchEmbedding(in_chans, embed_dim[0], dims[0])
        # The true feature size (conv arithmetic). timm uses img_size // 16, which agrees for
        # multiples of 16 and otherwise sizes the attention windows for a map it never sees.
        resolution = img_size
        for _ in range(_PATCH_EMBED_CONVS):
            resolution = _conv_out(resolution)
        stages = []
        per_stage = zip(dims, depth, num_heads, key_dim, window_size)
        for i, (ed, dp, nh, kd, ws) in enumerate(per_stage):
            stage = EfficientVitStage(
                dims[max(i - 1, 0)], ed, dp, kd, nh, resolution, ws, kernels,
                downsample=i > 0, widths=widths, path=f"stages.{i}",
            )
            resolution = stage.resolution
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.head = self._make_head(num_classes)
        widths.check_all_used()

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes > 0:
            return NormLinear(self.num_features, num_classes, drop=self.drop_rate)
        return nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (the relative attention bias tables)."""
        return {name for name, _ in self.named_parameters() if name.endswith("attention_biases")}

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0: none)."""
        ref = next(self.parameters())
        self.num_classes = num_classes
        self.head = self._make_head(num_classes).to(device=ref.device, dtype=ref.dtype)
        self.head.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, img, img) → (B, num_features, r, r) feature map (r = 4 at 224)."""
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_config(img_size: int, embed_dim: tuple[int, ...], depth: tuple[int, ...],
                  num_heads: tuple[int, ...], key_dim: tuple[int, ...],
                  window_size: tuple[int, ...], kernels: tuple[int, ...]) -> None:
    """Reject inconsistent variant settings with a message that names the fix."""
    per_stage = dict(depth=depth, num_heads=num_heads, key_dim=key_dim, window_size=window_size)
    for name, value in per_stage.items():
        if len(value) != len(embed_dim):
            raise VitedgeError(f"{name}={value}: needs one entry per stage, "
                               f"like embed_dim={embed_dim}")
    for ed, nh in zip(embed_dim, num_heads):
        if ed % nh:
            raise VitedgeError(f"embed_dim {ed} is not divisible by num_heads {nh}: "
                               "each head takes an equal chunk of the channels")
    if max(num_heads) > len(kernels):
        raise VitedgeError(f"kernels={kernels}: needs one q kernel per head, "
                           f"at least {max(num_heads)}")
    if img_size < 16:
        raise VitedgeError(f"img_size={img_size}: must be at least 16 (the patch embedding stride)")


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------

_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "efficientvit_m0": dict(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4),
                            kernels=(5, 5, 5, 5)),
    "efficientvit_m1": dict(embed_dim=(128, 144, 192), depth=(1, 2, 3), num_heads=(2, 3, 3),
                            kernels=(7, 5, 3, 3)),
    "efficientvit_m2": dict(embed_dim=(128, 192, 224), depth=(1, 2, 3), num_heads=(4, 3, 2),
                            kernels=(7, 5, 3, 3)),
    "efficientvit_m3": dict(embed_dim=(128, 240, 320), depth=(1, 2, 3), num_heads=(4, 3, 4),
                            kernels=(5, 5, 5, 5)),
    "efficientvit_m4": dict(embed_dim=(128, 256, 384), depth=(1, 2, 3), num_heads=(4, 4, 4),
                            kernels=(7, 5, 3, 3)),
    "efficientvit_m5": dict(embed_dim=(192, 288, 384), depth=(1, 3, 4), num_heads=(3, 3, 4),
                            kernels=(7, 5, 3, 3)),
}


# --------------------------------------------------------------------------------------------
# official (Microsoft Cream) checkpoint names
# --------------------------------------------------------------------------------------------

_DOWNSAMPLE_PARTS = ("res1", "patchmerge", "res2")


def official_model_kwargs(name: str) -> dict[str, Any]:
    """Keywords that make ``name`` compute what the official (Cream) code computes: none, timm's
    Microsoft models already do."""
    if name not in _VARIANTS:
        raise VitedgeError(f"{name!r} is not an EfficientViT (Microsoft) model")
    return {}


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for an official Microsoft checkpoint (possibly wrapped in ``'model'``)."""
    if isinstance(state_dict.get("model"), Mapping):
        state_dict = state_dict["model"]
    return any(re.match(r"(blocks\d+|patch_embed\.\d+)\.", k) for k in state_dict)


def convert_official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename an official Microsoft EfficientViT checkpoint to timm/vitedge names.

    Accepts the raw ``.pth`` content (``{"model": state_dict, ...}``) or the state dict itself.
    ``Conv2d_BN.c`` → ``conv``, ``head.l`` → ``head.linear``, ``patch_embed.{0,2,4,6}`` →
    ``patch_embed.conv{1..4}``, ``blocks{s+1}.{0,1,2}`` → ``stages.{s}.downsample.{res1,
    patchmerge,res2}`` (s ≥ 1), other ``blocks{s+1}.{j}`` → ``stages.{s}.blocks.{j - 3 or j}``;
    ``attention_bias_idxs`` is dropped (rebuilt from the resolution) and 2-D 1×1 conv weights get
    their spatial dims back. Keys already in timm form pass through unchanged.
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs"):
            continue
        if key.startswith("head_dist."):
            raise VitedgeError(f"{key!r}: checkpoints with a distillation head are not supported; "
                               "export the model trained without --distillation")
        parts = ["conv" if p == "c" else p for p in key.split(".")]
        if parts[:2] == ["head", "l"]:
            parts[1] = "linear"
        if parts[0] == "patch_embed" and parts[1].isdigit():
            parts[1] = f"conv{int(parts[1]) // 2 + 1}"
        match = re.fullmatch(r"blocks(\d+)", parts[0])
        if match and parts[1].isdigit():
            stage, j = int(match.group(1)) - 1, int(parts[1])
            if stage == 0:  # the first stage has no downsample in front of it
                parts[:2] = ["stages", "0", "blocks", str(j)]
            elif j < len(_DOWNSAMPLE_PARTS):
                parts[:2] = ["stages", str(stage), "downsample", _DOWNSAMPLE_PARTS[j]]
            else:
                parts[:2] = ["stages", str(stage), "blocks", str(j - len(_DOWNSAMPLE_PARTS))]
        new_key = ".".join(parts)
        if new_key.endswith(".weight") and value.ndim == 2 and not new_key.startswith("head."):
            value = value[:, :, None, None]  # a 1×1 conv saved as a linear weight
        out[new_key] = value
    return out


def to_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_official_state_dict`: timm names → official Microsoft names.

    Re-adds the official (persistent) ``attention_bias_idxs`` buffers. Returns the flat state
    dict; official ``.pth`` files wrap it as ``{"model": state_dict}``.
    """
    with_downsample = {int(m.group(1)) for k in state_dict
                       if (m := re.match(r"stages\.(\d+)\.downsample\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = ["c" if p == "conv" else p for p in key.split(".")]
        if parts[:2] == ["head", "linear"]:
            parts[1] = "l"
        if parts[0] == "patch_embed" and (m := re.fullmatch(r"conv(\d+)", parts[1])):
            parts[1] = str(2 * (int(m.group(1)) - 1))
        if parts[0] == "stages" and len(parts) > 3:
            stage = int(parts[1])
            if parts[2] == "downsample":
                j = _DOWNSAMPLE_PARTS.index(parts[3])
            else:
                j = int(parts[3]) + (len(_DOWNSAMPLE_PARTS) if stage in with_downsample else 0)
            parts[:4] = [f"blocks{stage + 1}", str(j)]
        new_key = ".".join(parts)
        out[new_key] = value
        if new_key.endswith(".attention_biases"):
            resolution = math.isqrt(value.shape[1])
            idxs_key = new_key[: -len("attention_biases")] + "attention_bias_idxs"
            out[idxs_key] = _attention_bias_idxs(resolution)
    return out


# --------------------------------------------------------------------------------------------
# factory and registered entry points
# --------------------------------------------------------------------------------------------

def _create(variant: str, **kwargs: Any) -> EfficientVitMsra:
    # Keyword overrides replace variant fields; an unknown keyword is a TypeError from __init__.
    return EfficientVitMsra(**{**_VARIANTS[variant], **kwargs})


@register_model
def efficientvit_m0(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M0: dims 64/128/192, 2.3M params, 79M MACs at 224."""
    return _create("efficientvit_m0", **kwargs)


@register_model
def efficientvit_m1(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M1: dims 128/144/192, 3.0M params, 167M MACs at 224."""
    return _create("efficientvit_m1", **kwargs)


@register_model
def efficientvit_m2(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M2: dims 128/192/224, 4.2M params, 201M MACs at 224."""
    return _create("efficientvit_m2", **kwargs)


@register_model
def efficientvit_m3(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M3: dims 128/240/320, 6.9M params, 263M MACs at 224."""
    return _create("efficientvit_m3", **kwargs)


@register_model
def efficientvit_m4(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M4: dims 128/256/384, 8.8M params, 299M MACs at 224."""
    return _create("efficientvit_m4", **kwargs)


@register_model
def efficientvit_m5(**kwargs: Any) -> EfficientVitMsra:
    """EfficientViT-M5: dims 192/288/384, 12.4M params, 522M MACs at 224."""
    return _create("efficientvit_m5", **kwargs)
