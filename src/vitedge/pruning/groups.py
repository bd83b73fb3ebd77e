"""Groups of coupled channels: what must be removed together for a model to stay consistent.

A :class:`ChannelGroup` is one prunable width of one block (an MBConv's hidden channels, a
LiteMLA's heads, one attention head's q/k dims, ...). It lists every tensor slice that moves with
that width — the producer's output rows and its norm, the consumer's input columns — as
:class:`ParamSlice` entries, each mapping a group *unit* (a channel, or a whole head) to the
indices it occupies along one tensor axis. It also names the ``block_widths`` override it
changes, so a pruned model is rebuilt by the normal factory and then filled with sliced weights.

We own both model families, so groups are written out per block type instead of being traced
from a dependency graph (Torch-Pruning's walk fails inside LiteMLA and exhausts memory on the
Microsoft models). Block-internal widths are always grouped. A Microsoft model's residual stage
widths (every block of a stage adds into them) are grouped on request (``stage_widths=True``):
one unit is channel ``j`` of every head's input chunk, since the cascade adds head ``i−1``'s
output channel ``j`` to chunk ``i``'s. The MIT models' stage widths stay as they are.

Example::

    groups = channel_groups(create_model("efficientvit_b0", num_classes=10))
    g = groups[0]            # stem has no hidden width: the first group is stages.0.blocks.0.main
    g.units, g.width          # 32, WidthKey(path='stages.0.blocks.0.main', key='mid_channels')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.models import efficientvit_mit as mit
from vitedge.models import efficientvit_msra as msra
from vitedge.models import efficientvit_seg as seg

__all__ = [
    "ChannelGroup",
    "ParamSlice",
    "WidthKey",
    "block_widths_from",
    "channel_groups",
    "slice_state_dict",
]

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True, eq=False)
class ParamSlice:
    """Where a group's units live in one state-dict tensor.

    ``index[u]`` holds the indices unit ``u`` occupies along axis ``dim`` of tensor ``name``
    (shape ``(units, k)``: ``k = 1`` for a plain channel, more for a head). ``role`` says how the
    tensor uses them: ``"out"`` producer rows, ``"in"`` consumer columns, ``"norm"`` per-channel
    norm parameters, statistics and biases. ``fixed`` lists indices on the same axis that belong
    to no unit and always survive (the v rows beside a head's prunable q/k rows).
    """

    name: str
    dim: int
    index: torch.Tensor
    role: str
    fixed: torch.Tensor | None = None


@dataclass(frozen=True)
class WidthKey:
    """The ``block_widths`` entry a group sets: ``block_widths[path][key]`` (or its
    ``[position]`` element for list-valued widths such as per-head ``key_dims``)."""

    path: str
    key: str
    position: int | None = None


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """One prunable width: the tensor slices that move together and the override they set.

    ``kind`` names the block type (``mid_channels``, ``mla_heads``, ``head_conv``,
    ``head_hidden``, ``ffn_hidden``, ``key_dims``, ``merge_hidden``, ``se_hidden``,
    ``stage_width``); ``stage`` is the coarse location used by per-stage ratios (``stem``,
    ``stages.1``, ``head``). A ``"head"`` unit is a whole attention head (never split); a
    ``"channel"`` unit is ``unit_channels`` channels of the width (one, or one per head for a
    Microsoft stage width).
    """

    name: str
    kind: str
    stage: str
    width: WidthKey
    unit: str
    slices: tuple[ParamSlice, ...] = field(repr=False)
    unit_channels: int = 1

    @property
    def units(self) -> int:
        return int(self.slices[0].index.shape[0])


# --------------------------------------------------------------------------------------------
# slice helpers


def _channels(n: int) -> torch.Tensor:
    return torch.arange(n).unsqueeze(1)


def _tensor_names(module: nn.Module, prefix: str, keys: Sequence[str]) -> list[str]:
    return [f"{prefix}.{k}" for k in keys if getattr(module, k, None) is not None]


def _norm_slices(norm: nn.Module, prefix: str, index: torch.Tensor) -> list[ParamSlice]:
    """Per-channel affine parameters and running statistics of a BatchNorm / LayerNorm."""
    if isinstance(norm, nn.Identity):
        return []
    if not isinstance(norm, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
        raise AssertionError(f"unexpected norm {type(norm).__name__} at {prefix}")
    return [ParamSlice(name, 0, index, "norm") for name in _tensor_names(norm, prefix, _BN_KEYS)]


def _conv_out(conv: nn.Conv2d | nn.Linear, prefix: str, index: torch.Tensor) -> list[ParamSlice]:
    """Output rows of a conv / linear (weight and bias)."""
    slices = [ParamSlice(f"{prefix}.weight", 0, index, "out")]
    if conv.bias is not None:
        slices.append(ParamSlice(f"{prefix}.bias", 0, index, "norm"))
    return slices


def _producer(cna: nn.Module, prefix: str, index: torch.Tensor,
              fixed: torch.Tensor | None = None) -> list[ParamSlice]:
    """Output rows of a conv-norm(-act) module (MIT ``ConvNormAct`` or MSRA ``ConvNorm``)."""
    norm_name = "norm" if hasattr(cna, "norm") else "bn"
    slices = (_conv_out(cna.conv, f"{prefix}.conv", index)
              + _norm_slices(getattr(cna, norm_name), f"{prefix}.{norm_name}", index))
    return [ParamSlice(s.name, s.dim, s.index, s.role, fixed) for s in slices]


def _consumer(name: str, index: torch.Tensor) -> ParamSlice:
    """Input columns of a dense conv / linear weight."""
    return ParamSlice(name, 1, index, "in")


def _stage_of(path: str) -> str:
    parts = path.removeprefix("backbone.").split(".")  # a segmentation model's backbone: same stages
    if parts[0] == "stages":
        return ".".join(parts[:2])
    return parts[0]


def _group(path: str, key: str, kind: str, unit: str, slices: list[ParamSlice],
           position: int | None = None) -> ChannelGroup:
    suffix = f"[{position}]" if position is not None else ""
    return ChannelGroup(name=f"{path}:{key}{suffix}", kind=kind, stage=_stage_of(path),
                        width=WidthKey(path, key, position), unit=unit, slices=tuple(slices))


# --------------------------------------------------------------------------------------------
# MIT family (B / L series)


def _mit_groups(model: mit.EfficientVitMit) -> Iterator[ChannelGroup]:
    for path, m in model.named_modules():
        if isinstance(m, mit.MBConv):
            idx = _channels(m.inverted_conv.conv.out_channels)
            slices = (_producer(m.inverted_conv, f"{path}.inverted_conv", idx)
                      + _producer(m.depth_conv, f"{path}.depth_conv", idx)
                      + [_consumer(f"{path}.point_conv.conv.weight", idx)])
            yield _group(path, "mid_channels", "mid_channels", "channel", slices)
        elif isinstance(m, mit.FusedMBConv):
            idx = _channels(m.spatial_conv.conv.out_channels)
            slices = (_producer(m.spatial_conv, f"{path}.spatial_conv", idx)
                      + [_consumer(f"{path}.point_conv.conv.weight", idx)])
            yield _group(path, "mid_channels", "mid_channels", "channel", slices)
        elif isinstance(m, mit.ConvBlock):
            idx = _channels(m.conv1.conv.out_channels)
            slices = (_producer(m.conv1, f"{path}.conv1", idx)
                      + [_consumer(f"{path}.conv2.conv.weight", idx)])
            yield _group(path, "mid_channels", "mid_channels", "channel", slices)
        elif isinstance(m, mit.LiteMLA):
            yield _lite_mla_heads(m, path)
        elif isinstance(m, mit.ClassifierHead):
            yield from _mit_head(m, path)
        elif isinstance(m, seg.SegHead) and isinstance(m.expand, mit.ConvNormAct):
            idx = _channels(m.expand.conv.out_channels)  # the optional expansion before the classifier
            slices = (_producer(m.expand, f"{path}.expand", idx)
                      + [_consumer(f"{path}.classifier.weight", idx)])
            yield _group(f"{path}.expand", "width", "head_hidden", "channel", slices)


def _lite_mla_heads(m: mit.LiteMLA, path: str) -> ChannelGroup:
    """Whole LiteMLA heads.

    qkv has ``heads`` contiguous blocks ``[q | k | v]`` of ``3·dim`` channels; every aggregation
    branch keeps that layout (its grouped 1×1 conv has 3 groups per head, so a head's channels
    never mix with another's). After attention the branches are concatenated, so the projection
    reads head ``h`` of branch ``b`` at input channels ``b·heads·dim + h·dim + [0, dim)``.
    """
    dim = m.dim
    heads = m.qkv.conv.out_channels // (3 * dim)
    total = heads * dim
    branches = 1 + len(m.aggreg)
    qkv_rows = torch.arange(heads * 3 * dim).view(heads, 3 * dim)
    proj_cols = torch.cat([b * total + torch.arange(total).view(heads, dim)
                           for b in range(branches)], dim=1)
    slices = [ParamSlice(f"{path}.qkv.conv.weight", 0, qkv_rows, "out")]
    for i, _ in enumerate(m.aggreg):
        # depthwise k×k then grouped 1×1: both keep qkv's channel layout on their output rows;
        # the grouped conv's input axis is per group (3·dim/3 wide) and does not shrink.
        slices.append(ParamSlice(f"{path}.aggreg.{i}.0.weight", 0, qkv_rows, "out"))
        slices.append(ParamSlice(f"{path}.aggreg.{i}.1.weight", 0, qkv_rows, "out"))
    slices.append(_consumer(f"{path}.proj.conv.weight", proj_cols))
    return _group(path, "heads", "mla_heads", "head", slices)


def _mit_head(m: mit.ClassifierHead, path: str) -> Iterator[ChannelGroup]:
    """The classifier's two hidden widths, both set through ``block_widths['head']['widths']``."""
    idx0 = _channels(m.in_conv.conv.out_channels)
    slices0 = (_producer(m.in_conv, f"{path}.in_conv", idx0)
               + [_consumer(f"{path}.classifier.0.weight", idx0)])
    yield _group(path, "widths", "head_conv", "channel", slices0, position=0)
    hidden = m.classifier[0]
    idx1 = _channels(hidden.out_features)
    slices1 = (_conv_out(hidden, f"{path}.classifier.0", idx1)
               + _norm_slices(m.classifier[1], f"{path}.classifier.1", idx1))
    if isinstance(m.classifier[4], nn.Linear):  # num_classes=0 leaves no final Linear
        slices1.append(_consumer(f"{path}.classifier.4.weight", idx1))
    yield _group(path, "widths", "head_hidden", "channel", slices1, position=1)


# --------------------------------------------------------------------------------------------
# Microsoft family (M series)


def _msra_groups(model: msra.EfficientVitMsra) -> Iterator[ChannelGroup]:
    for path, m in model.named_modules():
        if isinstance(m, msra.ConvMlp):
            idx = _channels(m.pw1.conv.out_channels)
            slices = _producer(m.pw1, f"{path}.pw1", idx) + [_consumer(f"{path}.pw2.conv.weight", idx)]
            yield _group(path, "hidden", "ffn_hidden", "channel", slices)
        elif isinstance(m, msra.CascadedGroupAttention):
            yield from _cga_key_dims(m, path)
        elif isinstance(m, msra.PatchMerging):
            idx = _channels(m.conv1.conv.out_channels)
            slices = (_producer(m.conv1, f"{path}.conv1", idx)
                      + _producer(m.conv2, f"{path}.conv2", idx)
                      + _conv_out(m.se.fc2, f"{path}.se.fc2", idx)
                      + [_consumer(f"{path}.se.fc1.weight", idx),
                         _consumer(f"{path}.conv3.conv.weight", idx)])
            yield _group(path, "hidden", "merge_hidden", "channel", slices)
            se_idx = _channels(m.se.fc1.out_channels)
            se_slices = (_conv_out(m.se.fc1, f"{path}.se.fc1", se_idx)
                         + [_consumer(f"{path}.se.fc2.weight", se_idx)])
            yield _group(f"{path}.se", "hidden", "se_hidden", "channel", se_slices)


def _msra_stage_widths(model: msra.EfficientVitMsra) -> Iterator[ChannelGroup]:
    """Each stage's residual width: written by the patch embedding or the patch merging, added
    into by every residual branch of the stage (and of the next stage's first downsample half),
    read by the next patch merging or the classifier.

    Unit ``j`` is channel ``j`` of every head's chunk (channels ``j, vd + j, …`` with
    ``vd = dim / heads``): head ``i``'s v row ``j`` is added to chunk ``i + 1``'s channel ``j``, so
    the two go together and every chunk keeps the same width."""
    stages = list(model.stages)
    for s, stage in enumerate(stages):
        path = f"stages.{s}"
        heads = stage.blocks[0].mixer.m.attn.num_heads
        vd = stage.blocks[0].mixer.m.attn.val_dim
        idx = (torch.arange(heads) * vd).unsqueeze(0) + torch.arange(vd).unsqueeze(1)  # (vd, heads)
        if s == 0:
            slices = _producer(model.patch_embed.conv4, "patch_embed.conv4", idx)
        else:
            slices = _producer(stage.downsample.patchmerge.conv3, f"{path}.downsample.patchmerge.conv3", idx)
        residuals = [] if s == 0 else [(f"{path}.downsample.res2.{k}", r)
                                       for k, r in enumerate(stage.downsample.res2)]
        for b, block in enumerate(stage.blocks):
            residuals += [(f"{path}.blocks.{b}.{n}", getattr(block, n))
                          for n in ("dw0", "ffn0", "mixer", "dw1", "ffn1")]
        if s + 1 < len(stages):
            nxt = f"stages.{s + 1}.downsample"
            residuals += [(f"{nxt}.res1.{k}", r) for k, r in enumerate(stages[s + 1].downsample.res1)]
            slices.append(_consumer(f"{nxt}.patchmerge.conv1.conv.weight", idx))
        elif isinstance(model.head, msra.NormLinear):
            slices += _norm_slices(model.head.bn, "head.bn", idx) + [_consumer("head.linear.weight", idx)]
        for rpath, residual in residuals:
            slices += _stage_branch(residual.m, f"{rpath}.m", idx, vd)
        yield ChannelGroup(name=f"{path}:dim", kind="stage_width", stage=path, width=WidthKey(path, "dim"),
                           unit="channel", slices=tuple(slices), unit_channels=heads)


def _stage_branch(m: nn.Module, path: str, idx: torch.Tensor, vd: int) -> list[ParamSlice]:
    """The slices of one residual branch that read and write the stage width."""
    if isinstance(m, msra.ConvNorm):  # depthwise: one row per channel
        return _producer(m, path, idx)
    if isinstance(m, msra.ConvMlp):
        return [_consumer(f"{path}.pw1.conv.weight", idx)] + _producer(m.pw2, f"{path}.pw2", idx)
    if isinstance(m, msra.LocalWindowAttention):
        attn, chunk = m.attn, _channels(vd)
        slices = ([_consumer(f"{path}.attn.proj.1.conv.weight", idx)]
                  + _producer(attn.proj[1], f"{path}.attn.proj.1", idx))
        for i, kd in enumerate(attn.key_dims):
            slices.append(_consumer(f"{path}.attn.qkvs.{i}.conv.weight", chunk))
            slices += _producer(attn.qkvs[i], f"{path}.attn.qkvs.{i}", 2 * kd + chunk, fixed=torch.arange(2 * kd))
        return slices
    raise AssertionError(f"unexpected residual branch {type(m).__name__} at {path}")


def _cga_key_dims(m: msra.CascadedGroupAttention, path: str) -> Iterator[ChannelGroup]:
    """Per-head q/k width: q channel c and k channel c are one unit (they meet only in qᵀk).

    Head ``i``'s qkv conv emits ``[q (kd) | k (kd) | v (val_dim)]``; the depthwise conv on q
    keeps q's channels. v is tied to the cascade (head i−1's output is added to input chunk i),
    so its width follows the stage width and is not grouped here.
    """
    for i, kd in enumerate(m.key_dims):
        qk_rows = torch.stack([torch.arange(kd), kd + torch.arange(kd)], dim=1)
        v_rows = 2 * kd + torch.arange(m.val_dim)
        q_rows = _channels(kd)
        slices = (_producer(m.qkvs[i], f"{path}.qkvs.{i}", qk_rows, fixed=v_rows)
                  + _producer(m.dws[i], f"{path}.dws.{i}", q_rows))
        yield _group(path, "key_dims", "key_dims", "channel", slices, position=i)


# --------------------------------------------------------------------------------------------
# public API


def channel_groups(model: nn.Module, *, stage_widths: bool = False) -> list[ChannelGroup]:
    """Every prunable group of ``model``, in module order; with ``stage_widths``, a Microsoft
    model's residual stage widths too (after the block-internal groups).

    Raises :class:`VitedgeError` for a model that is not one of the two EfficientViT families.
    """
    if isinstance(model, (mit.EfficientVitMit, seg.EfficientVitSeg)):
        groups = list(_mit_groups(model))
    elif isinstance(model, msra.EfficientVitMsra):
        groups = list(_msra_groups(model)) + (list(_msra_stage_widths(model)) if stage_widths else [])
    else:
        raise VitedgeError(f"cannot prune a {type(model).__name__}: only EfficientViT models built "
                           "by vitedge.create_model have known channel groups")
    _check_groups(model, groups)
    return groups


def _check_groups(model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
    # Our own invariant: no index of a (tensor, axis) is a unit of two groups (a stage width
    # shares the qkv rows with the key dims: v rows are its units, q/k rows theirs), and every
    # index table fits its tensor. A violation is a bug in the group definitions above.
    state = model.state_dict()
    owned: dict[tuple[str, int], set[int]] = {}
    for g in groups:
        for s in g.slices:
            units = set(s.index.reshape(-1).tolist())
            mine = owned.setdefault((s.name, s.dim), set())
            assert not units & mine, f"{s.name} axis {s.dim}: an index is a unit of two groups"
            mine |= units
            assert s.name in state, f"group {g.name} names unknown tensor {s.name}"
            assert s.index.shape[0] == g.units, f"{s.name}: unit count differs within {g.name}"
            covered = s.index.reshape(-1) if s.fixed is None else torch.cat([s.index.reshape(-1), s.fixed])
            assert torch.equal(covered.sort().values, torch.arange(state[s.name].shape[s.dim])), \
                f"{s.name} axis {s.dim}: units and fixed indices must cover the axis exactly once"


def slice_state_dict(state: Mapping[str, torch.Tensor], groups: Sequence[ChannelGroup],
                     kept: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with only the ``kept`` units (per group name) of every group left.

    Indices are sorted before slicing: every narrower block lays its surviving channels out in
    their original order (branch-major for LiteMLA's projection input), so sorted = new layout.
    An axis that two groups share loses the dropped units of both.
    """
    keep: dict[tuple[str, int], torch.Tensor] = {}
    for g in groups:
        dropped = torch.ones(g.units, dtype=torch.bool)
        dropped[kept[g.name]] = False
        for s in g.slices:
            mask = keep.setdefault((s.name, s.dim), torch.ones(state[s.name].shape[s.dim], dtype=torch.bool))
            mask[s.index[dropped].reshape(-1)] = False
    out = dict(state)
    for (name, dim), mask in keep.items():
        out[name] = out[name].index_select(dim, mask.nonzero().reshape(-1).to(out[name].device))
    return out


def block_widths_from(groups: Sequence[ChannelGroup], kept: Mapping[str, torch.Tensor],
                      ) -> dict[str, dict[str, Any]]:
    """The ``block_widths`` overrides that build a model with ``kept`` units per group.

    Every group is recorded, pruned or not, so no width depends on a default derived from
    another (the squeeze-excite width, for one, defaults to a quarter of patch merging's).
    """
    widths: dict[str, dict[str, Any]] = {}
    for g in groups:
        n = int(len(kept[g.name])) * g.unit_channels
        entry = widths.setdefault(g.width.path, {})
        if g.width.position is None:
            entry[g.width.key] = n
        else:
            values = entry.setdefault(g.width.key, [])
            values.extend([None] * (g.width.position + 1 - len(values)))
            values[g.width.position] = n
    for path, entry in widths.items():
        for key, value in entry.items():
            assert not isinstance(value, list) or None not in value, f"{path}.{key} incomplete"
    return widths
