"""The pruner: score every group, choose the surviving units, build the smaller model.

``prune`` never edits the model it is given. It records the surviving widths as ``block_widths``
overrides, builds a fresh model through ``create_model`` (so the result is an ordinary model of
the same class, saved and reloaded like any other) and copies the sliced weights into it.

Two ways to spend the ratio:

- ``scope="layer"``: every group loses ``ratio`` of its units (rounded to the nearest unit);
- ``scope="global"``: scores are divided by their group's mean, so groups of different sizes
  and magnitudes compare, and the lowest ``ratio`` of all units (a head counts as one unit) go.

Either way a group keeps at least one head, or ``min_channels`` channels, so no path is ever cut.

Example::

    small = prune(model, ratio=0.4, criterion="l2")
    small = prune(model, 0.4, "taylor", example_batches=itertools.islice(loader, 8))
    small = prune(model, 0.4, stage_ratios={"head": 0.0, "stages.3": 0.6})
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from vitedge.errors import VitedgeError
from vitedge.models.registry import create_model
from vitedge.pruning.depth import drop_blocks as drop_blocks_of
from vitedge.pruning.groups import ChannelGroup, block_widths_from, channel_groups, slice_state_dict
from vitedge.pruning.importance import Importance, LossFn, check_criterion, make_importance
from vitedge.settings import config_class

__all__ = ["PruneConfig", "PrunePlan", "apply_plan", "plan_pruning", "prune", "stage_channels", "stage_names"]

SCOPES = ("layer", "global")


@config_class
class PruneConfig:
    """What to prune and how; validated on construction (bad values raise VitedgeError).

    ``ratio`` is the fraction of prunable units removed, in [0, 1). ``stage_ratios`` overrides
    it per stage (``"stem"``, ``"stages.0"`` … ``"head"``, as :func:`stage_names` lists).
    ``round_to`` makes kept channel counts multiples of it (nearest multiple). It defaults to 8
    because runtimes pay for odd widths: ONNX Runtime's CPU convolutions work on blocks of 8 or
    16 channels, and B0 pruned 40 % with ``round_to=1`` ran *slower* than the dense model there
    (1.15×) while ``round_to=8`` ran at 0.66–0.69×. ``min_channels`` is the fewest channels a
    group keeps (head groups keep at least one head).
    ``stage_widths`` also prunes a Microsoft model's residual stage widths (one unit: a channel
    of every head's chunk), which the classic recipe leaves whole: without them M0 pruned 40 %
    keeps 0.70× of its MACs. MIT models have no such groups.

    ``drop_blocks`` removes whole blocks first (stage → block indices; a B/L model's body blocks, see
    :mod:`vitedge.pruning.depth`); the widths are then pruned on what is left.

    ``max_batches`` bounds what the Taylor criterion consumes. ``bn_images`` is used by the
    recipe (:func:`~vitedge.workflows.prune.prune_checkpoint`): that many training images
    re-estimate the BatchNorm statistics of the pruned model (no training).
    """

    ratio: float = 0.4
    criterion: str = "l2"
    scope: str = "layer"
    stage_ratios: Mapping[str, float] | None = None
    round_to: int = 8
    min_channels: int = 8
    stage_widths: bool = False
    drop_blocks: Mapping[str, Sequence[int]] | None = None  # whole blocks removed first
    seed: int = 0
    max_batches: int = 8
    bn_images: int = 512               # recipe only: BatchNorm re-estimation after pruning (0: off)

    def __post_init__(self) -> None:
        _check_ratio(self.ratio, "ratio")
        object.__setattr__(self, "criterion", check_criterion(self.criterion))
        if self.scope not in SCOPES:
            close = difflib.get_close_matches(str(self.scope), SCOPES, n=1, cutoff=0.3)
            hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(SCOPES)}"
            raise VitedgeError(f"unknown pruning scope {self.scope!r}: {hint}")
        for key, value in (self.stage_ratios or {}).items():
            _check_ratio(value, f"stage_ratios[{key!r}]")
        if isinstance(self.bn_images, bool) or not isinstance(self.bn_images, int) or self.bn_images < 0:
            raise VitedgeError(f"bn_images must be an int >= 0, got {self.bn_images!r}")
        for name in ("round_to", "min_channels", "max_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VitedgeError(f"{name} must be a positive int, got {value!r}")
        if self.stage_ratios is not None:
            object.__setattr__(self, "stage_ratios", dict(self.stage_ratios))
        if self.drop_blocks is not None:
            for stage, blocks in self.drop_blocks.items():
                if isinstance(blocks, (str, bytes)) or not all(
                        isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in blocks):
                    raise VitedgeError(f"drop_blocks[{stage!r}] must list block indices (ints >= 0), got {blocks!r}")
            object.__setattr__(self, "drop_blocks", {k: tuple(v) for k, v in self.drop_blocks.items()})


def _check_ratio(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise VitedgeError(f"{what} must be a number in [0, 1), got {value!r}; 0.4 removes 40 % "
                           "of the prunable channels")


@dataclass(frozen=True, eq=False)
class PrunePlan:
    """The units each group keeps (sorted indices, keyed by group name)."""

    groups: tuple[ChannelGroup, ...]
    kept: Mapping[str, torch.Tensor] = field(repr=False)

    def block_widths(self) -> dict[str, dict[str, Any]]:
        """The ``block_widths`` overrides of the pruned architecture."""
        return block_widths_from(self.groups, self.kept)

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per group: where it is, its size and what survives."""
        return [dict(group=g.name, kind=g.kind, stage=g.stage, units=g.units,
                     kept=int(len(self.kept[g.name]))) for g in self.groups]


def stage_names(model: nn.Module, stage_widths: bool = False) -> list[str]:
    """The stage keys ``stage_ratios`` accepts for ``model``, in model order."""
    return list(dict.fromkeys(g.stage for g in channel_groups(model, stage_widths=stage_widths)))


def stage_channels(model: nn.Module) -> dict[str, int]:
    """The prunable channels of each stage of ``model`` (every group's units × channels per unit,
    residual stage widths included): a pruned model's kept channels, stage by stage."""
    channels: dict[str, int] = {}
    for g in channel_groups(model, stage_widths=True):
        channels[g.stage] = channels.get(g.stage, 0) + g.units * g.unit_channels
    return channels


def _min_keep(group: ChannelGroup, config: PruneConfig) -> int:
    return 1 if group.unit == "head" else min(group.units, -(-config.min_channels // group.unit_channels))


def _round_keep(group: ChannelGroup, keep: float, config: PruneConfig) -> int:
    """Nearest whole unit (then a multiple of ``round_to`` channels, where a unit's channels
    allow), clamped to the group."""
    step = max(1, config.round_to // group.unit_channels) if group.unit == "channel" else 1
    n = step * math.floor(keep / step + 0.5)
    return max(_min_keep(group, config), min(group.units, n))


def _layer_counts(groups: Sequence[ChannelGroup], ratio: float,
                  config: PruneConfig) -> dict[str, int]:
    """The same share of every group. A ratio that leaves some group less than one unit would
    delete it — an error rather than a silent clamp, so the model is never pruned less than asked
    without saying so (rounding to ``round_to`` / ``min_channels`` only moves small counts)."""
    for g in groups:
        if (1.0 - ratio) * g.units < 1.0:
            raise VitedgeError(
                f"ratio {ratio:g} would remove every {g.unit} of {g.name} ({g.units} {g.unit}s); "
                f"use a ratio below {1 - 1 / g.units:.3f}, prune that stage less (stage_ratios), "
                "or rank globally (scope='global', which keeps min_channels per group)")
    return {g.name: _round_keep(g, (1.0 - ratio) * g.units, config) for g in groups}


def _global_counts(groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor],
                   ratio: float, config: PruneConfig) -> dict[str, int]:
    """Remove the lowest ``ratio`` of all units by group-mean-normalised score."""
    candidates: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    for i, g in enumerate(groups):
        s = scores[g.name]
        # normalise by the group mean: groups differ in fan-in and in how many tensors they span
        normed = s / s.mean().clamp_min(1e-12)
        protected = torch.argsort(s, descending=True, stable=True)[:_min_keep(g, config)]
        mask = torch.ones(g.units, dtype=torch.bool)
        mask[protected] = False
        candidates.append(normed[mask])
        owners.append(torch.full((int(mask.sum()),), i))
    total = sum(g.units for g in groups)
    pool, owner = torch.cat(candidates), torch.cat(owners)
    n_remove = min(math.floor(ratio * total + 0.5), len(pool))
    removed = torch.bincount(owner[torch.argsort(pool, stable=True)[:n_remove]],
                             minlength=len(groups))
    return {g.name: _round_keep(g, g.units - int(removed[i]), config)
            for i, g in enumerate(groups)}


def plan_pruning(
    model: nn.Module,
    config: PruneConfig,
    *,
    example_batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    importance: Importance | None = None,
) -> PrunePlan:
    """Score every group of ``model`` and choose the units to keep.

    ``importance`` overrides ``config.criterion`` with any callable mapping a group to scores.
    """
    groups = tuple(channel_groups(model, stage_widths=config.stage_widths))
    stages = list(dict.fromkeys(g.stage for g in groups))
    unknown = sorted(set(config.stage_ratios or {}) - set(stages))
    if unknown:
        close = difflib.get_close_matches(unknown[0], stages, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise VitedgeError(f"stage_ratios has unknown stage {unknown[0]!r}; {hint}this model's "
                           f"stages are {', '.join(stages)}")
    if importance is None:
        importance = make_importance(config.criterion, model, example_batches=example_batches,
                                     loss_fn=loss_fn, max_batches=config.max_batches,
                                     seed=config.seed)
    scores = {g.name: importance(g) for g in groups}
    for g in groups:
        if tuple(scores[g.name].shape) != (g.units,):
            raise VitedgeError(f"the importance returned shape {tuple(scores[g.name].shape)} for "
                               f"{g.name}; it must return one score per unit, shape ({g.units},)")

    # Partition: each stage with its own ratio is ranked alone; the rest share `ratio`.
    stage_ratios = config.stage_ratios or {}
    partitions: dict[str, list[ChannelGroup]] = {}
    for g in groups:
        partitions.setdefault(g.stage if g.stage in stage_ratios else "", []).append(g)
    counts: dict[str, int] = {}
    for key, members in partitions.items():
        ratio = stage_ratios.get(key, config.ratio)
        if config.scope == "global":
            counts.update(_global_counts(members, scores, ratio, config))
        else:
            counts.update(_layer_counts(members, ratio, config))

    kept = {}
    for g in groups:
        top = torch.argsort(scores[g.name], descending=True, stable=True)[:counts[g.name]]
        kept[g.name] = top.sort().values
    return PrunePlan(groups, kept)


@torch.no_grad()
def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """A new, physically smaller model of ``model``'s architecture holding the kept units.

    Built by ``create_model`` with the plan's ``block_widths`` merged over any the model already
    has, on the model's device and dtype, in its train/eval mode; ``model`` is not modified.
    """
    arch = getattr(model, "arch", None)
    if arch is None:
        raise VitedgeError("this model was not built by vitedge.create_model, so it cannot be "
                           "rebuilt narrower; build it with create_model and load the weights")
    old = arch["kwargs"].get("block_widths") or {}
    widths = {path: dict(entry) for path, entry in old.items()}
    for path, entry in plan.block_widths().items():
        widths.setdefault(path, {}).update(entry)
    pruned = create_model(arch["name"], **{**arch["kwargs"], "block_widths": widths})
    state = slice_state_dict(model.state_dict(), plan.groups, plan.kept)
    ref = next(model.parameters())
    pruned.to(device=ref.device, dtype=ref.dtype)
    pruned.load_state_dict(state, strict=True)
    return pruned.train(model.training)


def prune(
    model: nn.Module,
    ratio: float = 0.4,
    criterion: str = "l2",
    *,
    scope: str = "layer",
    stage_ratios: Mapping[str, float] | None = None,
    round_to: int = 8,
    min_channels: int = 8,
    stage_widths: bool = False,
    drop_blocks: Mapping[str, Sequence[int]] | None = None,
    example_batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    seed: int = 0,
) -> nn.Module:
    """Remove the least important ``ratio`` of prunable channels; return a new, smaller model.

    Prunable: MBConv / fused-MBConv / ResBlock hidden channels, LiteMLA heads (whole heads) and
    the classifier's hidden widths (MIT); FFN and patch-merging hidden channels, squeeze-excite
    width and per-head q/k dims (Microsoft), and with ``stage_widths`` the Microsoft residual
    stage widths. ``criterion`` is ``"l2"`` (Frobenius norm),
    ``"l1"``, ``"taylor"`` (needs ``example_batches`` of (images, labels); ``loss_fn`` defaults
    to cross-entropy) or ``"random"`` (seeded by ``seed``). See :class:`PruneConfig` for the rest.

    Example::

        small = vitedge.prune(model, ratio=0.4, criterion="l2")
        vitedge.save(small, "b0_p40.safetensors")     # reloads with vitedge.load
    """
    config = PruneConfig(ratio=ratio, criterion=criterion, scope=scope, stage_ratios=stage_ratios,
                         round_to=round_to, min_channels=min_channels, stage_widths=stage_widths,
                         drop_blocks=drop_blocks, seed=seed)
    model = drop_blocks_of(model, config.drop_blocks or {})
    plan = plan_pruning(model, config, example_batches=example_batches, loss_fn=loss_fn)
    return apply_plan(model, plan)
