"""Structured pruning: dependency-aware channel groups, importance criteria, a pruner.

Vocabulary (after Torch-Pruning): a *group* is a set of coupled tensor slices that must shrink
together; an *importance* maps a group to one score per unit; the *pruner* steps through the
groups, keeps the best-scored units and rebuilds a physically smaller model.

Example::

    import vitedge
    small = vitedge.prune(vitedge.load("b0.safetensors"), ratio=0.4, criterion="l2")
    vitedge.save(small, "b0_p40.safetensors")
"""

from vitedge.pruning.groups import ChannelGroup, ParamSlice, WidthKey, channel_groups
from vitedge.pruning.importance import (
    CRITERIA,
    MagnitudeImportance,
    RandomImportance,
    TaylorImportance,
    make_importance,
)
from vitedge.pruning.pruner import PruneConfig, PrunePlan, apply_plan, plan_pruning, prune, stage_names

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "MagnitudeImportance",
    "ParamSlice",
    "PruneConfig",
    "PrunePlan",
    "RandomImportance",
    "TaylorImportance",
    "WidthKey",
    "apply_plan",
    "channel_groups",
    "make_importance",
    "plan_pruning",
    "prune",
    "stage_names",
]
