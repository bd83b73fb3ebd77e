"""Depth pruning: removing whole blocks of an EfficientViT is exact (every part of a Microsoft block is
residual, and so is every body block of a B/L stage), renumbers what is left so it saves and
reloads, combines with width pruning, and refuses what cannot be done in one line."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import vitedge
from vitedge.errors import VitedgeError
from vitedge.pruning import prune
from vitedge.pruning.depth import block_counts, drop_blocks, removable_blocks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def m0():
    torch.manual_seed(0)
    model = vitedge.create_model("efficientvit_m0", num_classes=10, img_size=64).eval()
    # the residual branches end in zero-initialised BatchNorms: give them weights, or every block is
    # already the identity and removing one proves nothing
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.weight.data.normal_(0, 0.5)
            module.bias.data.normal_(0, 0.1)
    return model


def _identities(model: nn.Module, blocks: dict[int, list[int]]) -> nn.Module:
    """A copy of ``model`` with the named blocks (stage index → block indices) replaced by the identity."""
    reference = copy.deepcopy(model)
    for stage, indices in blocks.items():
        for index in indices:
            reference.stages[stage].blocks[index] = nn.Identity()
    return reference


def test_removing_blocks_equals_replacing_them_by_the_identity(m0):
    assert block_counts(m0) == {"stages.0": 1, "stages.1": 2, "stages.2": 3}
    x = torch.randn(2, 3, 64, 64)
    smaller = drop_blocks(m0, {"stages.1": [0], "stages.2": [0, 2]}).eval()
    reference = _identities(m0, {1: [0], 2: [0, 2]})
    assert block_counts(smaller) == {"stages.0": 1, "stages.1": 1, "stages.2": 1}
    assert torch.equal(smaller(x), reference(x))
    assert not torch.allclose(m0(x), reference(x), atol=1e-3)  # the removed blocks did something
    assert drop_blocks(m0, {}) is m0


def test_blocks_and_widths_together_save_and_reload(m0, tmp_path):
    pruned = prune(m0, 0.4, stage_widths=True, drop_blocks={"stages.2": [1]}).eval()
    assert pruned.arch["kwargs"]["depth"] == (1, 2, 2)
    assert all(".blocks.2." not in path for path in pruned.arch["kwargs"]["block_widths"] if "stages.2" in path)
    x = torch.randn(2, 3, 64, 64)
    path = vitedge.save(pruned, tmp_path / "m0.safetensors")
    assert torch.equal(vitedge.load(path).eval()(x), pruned(x))
    # pruned widths first, then a block removed: the block's width overrides leave with it
    again = drop_blocks(prune(m0, 0.4, stage_widths=True), {"stages.2": [0]})
    assert again.arch["kwargs"]["depth"] == (1, 2, 2)


@pytest.mark.parametrize("drops, message", [
    ({"stages.7": [0]}, "'stages.7' is not a stage of this model"),
    ({"stages.2": [3]}, "give distinct indices in 0…2"),
    ({"stages.2": [1, 1]}, "give distinct indices"),
    ({"stages.1": [0, 1]}, "stages.1 has 2 block(s); keep at least one"),
])
def test_what_cannot_be_removed_is_one_line(m0, drops, message):
    with pytest.raises(VitedgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        drop_blocks(m0, drops)


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return vitedge.create_model("efficientvit_b0", num_classes=10, img_size=64).eval()


def test_a_b_model_loses_body_blocks_exactly_and_keeps_its_stride_2_blocks(b0, tmp_path):
    """B/L stages: block 0 is the stride-2 block (no shortcut) and stays; body blocks (residual
    MBConv, or residual LiteMLA then residual MBConv) go exactly."""
    assert block_counts(b0) == {"stages.0": 2, "stages.1": 2, "stages.2": 3, "stages.3": 3}
    assert removable_blocks(b0) == {"stages.0": [1], "stages.1": [1], "stages.2": [1, 2], "stages.3": [1, 2]}
    x = torch.randn(2, 3, 64, 64)
    smaller = drop_blocks(b0, {"stages.1": [1], "stages.3": [1, 2]}).eval()
    reference = _identities(b0, {1: [1], 3: [1, 2]})
    assert block_counts(smaller) == {"stages.0": 2, "stages.1": 1, "stages.2": 3, "stages.3": 1}
    assert smaller.arch["kwargs"]["depths"] == (1, 2, 1, 2, 0)  # stem first; attention stages count bodies
    assert torch.equal(smaller(x), reference(x))
    assert not torch.allclose(b0(x), reference(x), atol=1e-3)  # the removed blocks did something
    # with pruned widths, saved and reloaded
    pruned = prune(b0, 0.4, drop_blocks={"stages.2": [2]}).eval()
    assert pruned.arch["kwargs"]["depths"] == (1, 2, 2, 1, 2)
    path = vitedge.save(pruned, tmp_path / "b0.safetensors")
    assert torch.equal(vitedge.load(path).eval()(x), pruned(x))


def test_what_cannot_be_removed_from_a_b_model_is_one_line(b0):
    with pytest.raises(VitedgeError, match="block 0 of stages.1 is its stride-2 block and stays"):
        drop_blocks(b0, {"stages.1": [0]})
    with pytest.raises(VitedgeError, match="only the EfficientViT classifiers"):
        drop_blocks(nn.Sequential(nn.Linear(2, 2)), {"stages.1": [1]})
    with pytest.raises(VitedgeError, match="drop_blocks.stages.1.0: input should be a valid integer"):
        prune(b0, 0.2, drop_blocks={"stages.1": ["x"]})
    with pytest.raises(VitedgeError, match=r"drop_blocks\['stages.1'\] must list block indices \(ints >= 0\)"):
        prune(b0, 0.2, drop_blocks={"stages.1": [-1]})