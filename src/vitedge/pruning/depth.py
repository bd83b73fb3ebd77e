"""Depth pruning: whole blocks removed from the stages of an EfficientViT.

Microsoft M models: every part of a block is residual (DW conv, FFN, cascaded group attention, DW
conv, FFN), so any block can go. MIT B/L models: a stage's first block (stride 2, no shortcut)
stays; its body blocks (residual MBConv, or residual LiteMLA then residual MBConv) can go. Either
way removing a block is exact: the pruned model computes what the full one computes with that
block's branches set to zero. It pays where widths do not: at low resolution M0's latency is set by
its number of operators (four attention heads per block, each a chain of small ops) more than by
their widths. At 96 px, on this project's Zen 4 EPYC, depth (1, 1, 2) instead of (1, 2, 3) ran
0.74-0.77× the dense latency (ONNX Runtime FP32, OpenVINO FP32 and bf16), while 40 % of every width
with the residual stage widths (0.46× the MACs) ran 0.78-0.85×.

Blocks are named by stage and index (``{"stages.2": [1]}``); the survivors are renumbered, their
width overrides with them, so the smaller model saves and reloads like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import nn

from vitedge.errors import VitedgeError
from vitedge.models import create_model
from vitedge.models.efficientvit_mit import EfficientVitMit, backbone_variant

__all__ = ["block_counts", "drop_blocks", "removable_blocks"]

_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)(\..*)?$")


def block_counts(model: nn.Module) -> dict[str, int]:
    """Stage → its number of blocks, for a model whose blocks can be removed (EfficientViT M, and
    the B/L classifiers); empty for any other model. :func:`removable_blocks` says which."""
    family = _family(model)
    if family is None:
        return {}
    return {f"stages.{i}": len(stage.blocks) for i, stage in enumerate(model.stages)}


def removable_blocks(model: nn.Module) -> dict[str, list[int]]:
    """Stage → the indices of the blocks that can be removed (M: all but one must stay, any of
    them; B/L: the body blocks after the stride-2 first one); stages with none left out."""
    first = 1 if _family(model) == "mit" else 0
    return {stage: list(range(first, n)) for stage, n in block_counts(model).items() if n >= 2}


def _family(model: nn.Module) -> str | None:
    name = str((getattr(model, "arch", None) or {}).get("name", ""))
    if name.startswith("efficientvit_m"):
        return "msra"
    if isinstance(model, EfficientVitMit):
        return "mit"
    return None


def drop_blocks(model: nn.Module, drops: Mapping[str, Sequence[int]]) -> nn.Module:
    """A new model of ``model``'s architecture without the blocks ``drops`` names (stage → block
    indices); ``model`` is not modified. An M model's stage keeps at least one block, a B/L
    model's stage its stride-2 first block."""
    if not any(drops.values()):
        return model
    counts = block_counts(model)
    if not counts:
        raise VitedgeError("only the EfficientViT classifiers (efficientvit_m*, _b*, _l*) have blocks that can be "
                           "removed whole; prune widths instead")
    mit = _family(model) == "mit"
    removed: dict[int, set[int]] = {}
    for stage, blocks in drops.items():
        if stage not in counts:
            raise VitedgeError(f"{stage!r} is not a stage of this model; its stages: {', '.join(counts)}")
        chosen = {int(b) for b in blocks}
        if any(not 0 <= b < counts[stage] for b in chosen) or len(chosen) != len(blocks):
            raise VitedgeError(f"blocks {list(blocks)} of {stage}: give distinct indices in 0…{counts[stage] - 1}")
        if mit and 0 in chosen:
            raise VitedgeError(f"block 0 of {stage} is its stride-2 block and stays; remove body blocks "
                               f"1…{counts[stage] - 1}")
        if len(chosen) >= counts[stage]:
            raise VitedgeError(f"{stage} has {counts[stage]} block(s); keep at least one")
        removed[int(stage.split(".")[1])] = chosen

    def renamed(path: str) -> str | None:
        """The path in the smaller model, or None for a removed block's."""
        match = _BLOCK.match(path)
        if match is None:
            return path
        stage, block, rest = int(match[1]), int(match[2]), match[3] or ""
        gone = removed.get(stage, set())
        if block in gone:
            return None
        return f"stages.{stage}.blocks.{block - sum(b < block for b in gone)}{rest}"

    arch = model.arch
    widths = {new: dict(entry) for path, entry in (arch["kwargs"].get("block_widths") or {}).items()
              if (new := renamed(path)) is not None}
    if mit:  # depths count the stem first; a stage's entry drops by the blocks it loses
        depths = list(arch["kwargs"].get("depths") or backbone_variant(arch["name"])[1]["depths"])
        depth_kwargs = {"depths": tuple(d - len(removed.get(i - 1, ())) for i, d in enumerate(depths))}
    else:
        depth_kwargs = {"depth": tuple(n - len(removed.get(i, ())) for i, n in enumerate(counts.values()))}
    smaller = create_model(arch["name"], **{**arch["kwargs"], **depth_kwargs, "block_widths": widths})
    state = {new: value for key, value in model.state_dict().items() if (new := renamed(key)) is not None}
    ref = next(model.parameters())
    smaller.to(device=ref.device, dtype=ref.dtype)
    smaller.load_state_dict(state, strict=True)
    return smaller.train(model.training)
