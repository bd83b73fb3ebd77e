"""Structured pruning: exact slicing per group type, size falls with the ratio, artifacts reload,
criteria behave, bad input fails with one clear line.

Models are small (B0 and M0 at 128 px, L1 at 64 px), with weights drawn so that the logits
depend on the input (PyTorch's default init makes these deep random nets nearly constant) and
randomised BatchNorm statistics, so a wrong slice of any norm, conv or linear shows in the logits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from parity import input_dependent

import vitedge
from vitedge.errors import VitedgeError
from vitedge.pruning import (
    MagnitudeImportance,
    PruneConfig,
    PrunePlan,
    apply_plan,
    channel_groups,
    plan_pruning,
    prune,
)

# name -> (build kwargs, input resolution)
MODELS = {
    "efficientvit_b0": ({}, 128),
    "efficientvit_m0": ({"img_size": 128}, 128),
    "efficientvit_l1": ({}, 64),
    "efficientvit_seg_b0": ({"img_size": 64}, 64),  # backbone + segmentation head
}
_CACHE: dict[str, nn.Module] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def dense(name: str) -> nn.Module:
    """A randomly initialised 10-class model in eval mode (cached: pruning never edits it)."""
    if name not in _CACHE:
        kwargs, res = MODELS[name]
        _CACHE[name] = input_dependent(vitedge.create_model(name, num_classes=10, **kwargs), resolution=res)
    return _CACHE[name]


def inputs(name: str, batch: int = 2) -> torch.Tensor:
    res = MODELS[name][1]
    return torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model: nn.Module, name: str) -> torch.Tensor:
    return model.eval()(inputs(name))


def sizes(model: nn.Module, name: str) -> tuple[int, int]:
    stats = vitedge.profile(model, resolution=MODELS[name][1])
    return stats["params"], stats["macs"]


# --------------------------------------------------------------------------------------------
# acceptance: ratio 0, monotone size, shape, reload


@pytest.mark.parametrize("name", list(MODELS))
def test_ratio_zero_reproduces_logits_exactly(name):
    model = dense(name)
    same = prune(model, ratio=0.0)
    assert same is not model and type(same) is type(model)
    assert torch.equal(logits(same, name), logits(model, name))


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_m0"])
def test_size_falls_strictly_with_ratio_and_output_shape_holds(name):
    model = dense(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    costs = []
    for ratio in (0.0, 0.2, 0.4, 0.6):
        pruned = prune(model, ratio=ratio)
        assert logits(pruned, name).shape == (2, 10)
        assert not pruned.training
        costs.append(sizes(pruned, name))
    params, macs = zip(*costs)
    assert all(a > b for a, b in zip(params, params[1:])), params
    assert all(a > b for a, b in zip(macs, macs[1:])), macs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), \
        "prune must leave the original model untouched"


def test_segmentation_model_shrinks_with_the_ratio_and_keeps_its_output_shape():
    name = "efficientvit_seg_b0"
    costs = []
    for ratio in (0.0, 0.2, 0.4):
        pruned = prune(dense(name), ratio=ratio)
        assert type(pruned) is type(dense(name)) and logits(pruned, name).shape == (2, 10, 8, 8)
        costs.append(sizes(pruned, name))
    params, macs = zip(*costs)
    assert all(a > b for a, b in zip(params, params[1:])), params
    assert all(a > b for a, b in zip(macs, macs[1:])), macs
    widths = prune(dense(name), ratio=0.4).arch["kwargs"]["block_widths"]
    assert widths["head.middle.0.main"]["mid_channels"] < 128 and widths["head.expand"]["width"] < 128
    assert any(path.startswith("backbone.stages.") for path in widths)
    with pytest.raises(VitedgeError, match="match no block"):  # a typo must not build the dense model
        vitedge.create_model(name, block_widths={"head.middle.7.main": {"mid_channels": 8}})


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_m0", "efficientvit_seg_b0"])
def test_pruned_checkpoint_reloads_to_identical_logits(name, tmp_path):
    pruned = prune(dense(name), ratio=0.4)
    path = vitedge.save(pruned, tmp_path / "pruned.safetensors")
    reloaded = vitedge.load(path)
    assert reloaded.arch == pruned.arch
    assert torch.equal(logits(reloaded, name), logits(pruned, name))


def test_stage_widths_cut_m0_macs_in_whole_chunks_and_reload(tmp_path):
    model = dense("efficientvit_m0")
    base = sizes(model, "efficientvit_m0")[1]
    blocks_only = prune(model, ratio=0.4)
    pruned = prune(model, ratio=0.4, stage_widths=True)
    # the residual widths hold most of M0's MACs: block-internal pruning alone keeps ~0.7×
    assert sizes(blocks_only, "efficientvit_m0")[1] > 0.65 * base
    assert sizes(pruned, "efficientvit_m0")[1] < 0.5 * base
    widths = pruned.arch["kwargs"]["block_widths"]
    dims = [widths[f"stages.{i}"]["dim"] for i in range(3)]
    assert dims == [40, 80, 112]  # 0.6 of (64, 128, 192) in whole multiples of 8 channels (2 per head)
    assert "stages.0" not in blocks_only.arch["kwargs"]["block_widths"]
    reloaded = vitedge.load(vitedge.save(pruned, tmp_path / "m0_sw40.safetensors"))
    assert torch.equal(logits(reloaded, "efficientvit_m0"), logits(pruned, "efficientvit_m0"))
    with pytest.raises(VitedgeError, match="multiple of the stage's 4 heads"):
        vitedge.create_model("efficientvit_m0", block_widths={"stages.1": {"dim": 66}})
    with pytest.raises(VitedgeError, match="PruneConfig field stage_widths"):
        PruneConfig(0.4, stage_widths="yes")


def test_a_pruned_model_prunes_again_and_reloads(tmp_path):
    twice = prune(prune(dense("efficientvit_m0"), 0.2, round_to=1), 0.2, round_to=1)
    attn = "stages.0.blocks.0.mixer.m.attn"
    assert twice.arch["kwargs"]["block_widths"][attn] == {"key_dims": [10] * 4}  # 16 → 13 → 10
    reloaded = vitedge.load(vitedge.save(twice, tmp_path / "twice.safetensors"))
    assert torch.equal(logits(reloaded, "efficientvit_m0"), logits(twice, "efficientvit_m0"))


def test_train_mode_and_dtype_are_kept():
    model = vitedge.create_model("efficientvit_b0", num_classes=10).train().double()
    pruned = prune(model, 0.2)
    assert pruned.training and next(pruned.parameters()).dtype == torch.float64


# --------------------------------------------------------------------------------------------
# exactness: the pruned model equals the dense one with the removed units silenced


def _silencers(group, units: torch.Tensor) -> list[tuple[str, int, torch.Tensor]]:
    """(tensor, axis, indices) to zero in the dense model so ``units`` contribute nothing.

    Mostly the consumer's input columns. Patch merging feeds a squeeze-excite whose pooled
    input sees every channel, so there the channel is zeroed at its source (BN weight and bias
    → 0, ReLU(0) = 0). A q/k pair is silenced by zeroing q after its depthwise conv: the pair
    then adds 0 to qᵀk, exactly what removing it does (the scale is not renormalised).
    """
    if group.kind == "stage_width":  # zero at every writer: the channel stays 0 through every add
        picked = [s for s in group.slices if s.role == "norm" and s.name.endswith(("bn.weight", "bn.bias"))]
    elif group.kind == "merge_hidden":
        picked = [s for s in group.slices if ".conv2.bn." in s.name and s.name.endswith(("weight", "bias"))]
    elif group.kind == "key_dims":
        picked = [s for s in group.slices if ".dws." in s.name and ".bn." in s.name
                  and s.name.endswith(("weight", "bias"))]
    else:
        picked = [s for s in group.slices if s.role == "in"]
    assert picked, f"no silencer for {group.kind}"
    return [(s.name, s.dim, s.index[units].reshape(-1)) for s in picked]


def _exactness(name: str, kinds: set[str], path_part: str = "") -> None:
    model = dense(name)
    groups = channel_groups(model, stage_widths="stage_width" in kinds)
    chosen = [g for g in groups if g.kind in kinds and path_part in g.name]
    assert chosen, f"{name} has no {kinds} group"
    gen = torch.Generator().manual_seed(0)
    kept, zero = {}, []
    for g in groups:
        if g in chosen:  # drop a random half (at least one unit, never all)
            perm = torch.randperm(g.units, generator=gen)
            n_drop = max(1, g.units // 2)
            kept[g.name] = perm[n_drop:].sort().values
            zero += _silencers(g, perm[:n_drop])
        else:
            kept[g.name] = torch.arange(g.units)
    pruned = apply_plan(model, PrunePlan(tuple(groups), kept))

    silenced = vitedge.create_model(name, num_classes=10, **MODELS[name][0]).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for tensor, dim, idx in zero:
        state[tensor].index_fill_(dim, idx, 0.0)
    silenced.load_state_dict(state)

    out, ref, full = logits(pruned, name), logits(silenced, name), logits(model, name)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (out - full).abs().max() > 1e-3, "the test must remove something that matters"
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kinds,where", [
    ("efficientvit_b0", {"mid_channels"}, "stages.0."),  # MBConv with BN after every conv
    ("efficientvit_b0", {"mid_channels"}, "stages.3."),  # fewer-norm MBConv (conv biases)
    ("efficientvit_b0", {"mla_heads"}, ""),
    ("efficientvit_b0", {"head_conv"}, ""),
    ("efficientvit_l1", {"mid_channels"}, "stem."),      # ResBlock (L stem)
    ("efficientvit_l1", {"mid_channels"}, "stages.0."),  # FusedMBConv, GELU
    ("efficientvit_m0", {"ffn_hidden"}, ""),
    ("efficientvit_m0", {"merge_hidden", "se_hidden"}, ""),
    ("efficientvit_m0", {"key_dims"}, ""),
    ("efficientvit_m0", {"stage_width"}, ""),                     # residual stage widths, heads' v rows
    ("efficientvit_m0", {"stage_width", "key_dims", "ffn_hidden"}, "stages.1"),  # shared qkv rows
    ("efficientvit_seg_b0", {"mid_channels"}, "head.middle."),      # the head's residual MBConv
    ("efficientvit_seg_b0", {"head_hidden"}, "head.expand"),        # the expansion before the classifier
    ("efficientvit_seg_b0", {"mid_channels", "mla_heads"}, "backbone.stages.3."),
])
def test_pruning_equals_silencing_the_removed_units(name, kinds, where):
    _exactness(name, kinds, where)


def test_head_hidden_pruning_matches_a_manual_reference():
    # The hidden width feeds a LayerNorm, whose statistics change when features go: no dense
    # model silences that exactly, so compare with the head computed by hand on kept features.
    model = dense("efficientvit_b0")
    groups = channel_groups(model)
    kept = {g.name: torch.arange(g.units) for g in groups}
    hidden = next(g for g in groups if g.kind == "head_hidden")
    keep = torch.randperm(hidden.units, generator=torch.Generator().manual_seed(0))[:700].sort().values
    kept[hidden.name] = keep
    pruned = apply_plan(model, PrunePlan(tuple(groups), kept))
    assert pruned.head.classifier[0].out_features == 700
    assert pruned.arch["kwargs"]["block_widths"]["head"] == {"widths": [1024, 700]}

    head = model.head
    with torch.no_grad():
        x = inputs("efficientvit_b0")
        pooled = head.in_conv(model.forward_features(x)).mean(dim=(2, 3))
        z = pooled @ head.classifier[0].weight[keep].T
        ln = head.classifier[1]
        z = nn.functional.layer_norm(z, (700,), ln.weight[keep], ln.bias[keep], ln.eps)
        fc = head.classifier[4]
        ref = head.classifier[2](z) @ fc.weight[:, keep].T + fc.bias
    torch.testing.assert_close(logits(pruned, "efficientvit_b0"), ref, rtol=1e-4, atol=1e-5)


def test_key_dim_pruning_shapes_and_kept_dot_products():
    model = dense("efficientvit_m0")
    pruned = prune(model, ratio=0.4, stage_ratios={"stages.1": 0.0, "stages.2": 0.0}, round_to=1)
    attn, small = model.stages[0].blocks[0].mixer.m.attn, pruned.stages[0].blocks[0].mixer.m.attn
    vd = attn.val_dim
    assert small.key_dims == (10,) * 4 and small.scale == attn.scale
    assert small.qkvs[0].conv.out_channels == 2 * 10 + vd and small.dws[0].conv.out_channels == 10
    assert small.proj[1].conv.in_channels == attn.proj[1].conv.in_channels  # v untouched
    # the kept q/k rows are rows of the dense conv, and v rows are all there in order
    dense_rows, kept_rows = attn.qkvs[0].conv.weight, small.qkvs[0].conv.weight
    for row in kept_rows[:20]:
        assert any(torch.equal(row, r) for r in dense_rows[:32])
    assert torch.equal(kept_rows[20:], dense_rows[32:])


# --------------------------------------------------------------------------------------------
# criteria


def test_l2_scores_are_the_frobenius_norm_over_coupled_weights_and_keep_the_largest():
    model = vitedge.create_model("efficientvit_b0", num_classes=10).eval()
    path = "stages.0.blocks.0.main"
    with torch.no_grad():
        model.get_submodule(f"{path}.inverted_conv.conv").weight[5] *= 100.0
    group = next(g for g in channel_groups(model) if g.name == f"{path}:mid_channels")
    block = model.get_submodule(path)
    manual = torch.stack([
        torch.cat([block.inverted_conv.conv.weight[c].flatten(), block.inverted_conv.norm.weight[c:c + 1],
                   block.inverted_conv.norm.bias[c:c + 1], block.depth_conv.conv.weight[c].flatten(),
                   block.depth_conv.norm.weight[c:c + 1], block.depth_conv.norm.bias[c:c + 1],
                   block.point_conv.conv.weight[:, c].flatten()]).double().norm()
        for c in range(group.units)])
    scores = MagnitudeImportance(model)(group)
    torch.testing.assert_close(scores, manual.detach())
    plan = plan_pruning(model, PruneConfig(ratio=0.75, min_channels=1))
    assert 5 in plan.kept[group.name].tolist() and len(plan.kept[group.name]) == 8


def test_taylor_runs_on_a_few_batches_and_leaves_gradients_alone():
    model = dense("efficientvit_b0")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 128, 128, generator=gen), torch.randint(0, 10, (2,), generator=gen))
               for _ in range(2)]
    pruned = prune(model, 0.4, "taylor", example_batches=batches)
    assert logits(pruned, "efficientvit_b0").shape == (2, 10)
    assert all(p.grad is None for p in model.parameters())
    l2 = plan_pruning(model, PruneConfig(0.4))
    taylor = plan_pruning(model, PruneConfig(0.4, "taylor"), example_batches=batches)
    assert any(not torch.equal(l2.kept[k], taylor.kept[k]) for k in l2.kept)


def test_random_is_reproducible_from_its_seed():
    model = dense("efficientvit_m0")
    a, b = (plan_pruning(model, PruneConfig(0.4, "random", seed=3)) for _ in range(2))
    c = plan_pruning(model, PruneConfig(0.4, "random", seed=4))
    assert all(torch.equal(a.kept[k], b.kept[k]) for k in a.kept)
    assert any(not torch.equal(a.kept[k], c.kept[k]) for k in a.kept)


# --------------------------------------------------------------------------------------------
# scope, per-stage ratios, rounding, minimums


def test_global_scope_prunes_unevenly_but_respects_minimums():
    model = dense("efficientvit_b0")
    plan = plan_pruning(model, PruneConfig(0.4, scope="global"))
    fractions = {row["group"]: row["kept"] / row["units"] for row in plan.summary()}
    assert len({round(f, 2) for f in fractions.values()}) > 3, "global ranking should not be uniform"
    total = sum(r["units"] for r in plan.summary())
    kept = sum(r["kept"] for r in plan.summary())
    assert abs(kept / total - 0.6) < 0.02
    assert logits(apply_plan(model, plan), "efficientvit_b0").shape == (2, 10)


def test_stage_ratios_and_round_to():
    model = dense("efficientvit_b0")
    pruned = prune(model, 0.5, stage_ratios={"head": 0.0}, round_to=8)
    widths = pruned.arch["kwargs"]["block_widths"]
    assert widths["head"] == {"widths": [1024, 1280]}
    mids = [w["mid_channels"] for w in widths.values() if "mid_channels" in w]
    assert all(m % 8 == 0 for m in mids) and max(mids) < 512


@pytest.mark.parametrize("scope, ratio", [("layer", 0.7), ("global", 0.99)])
def test_extreme_ratio_keeps_a_head_and_min_channels_everywhere(scope, ratio):
    model = dense("efficientvit_b0")
    plan = plan_pruning(model, PruneConfig(ratio, scope=scope))
    for row in plan.summary():
        assert row["kept"] >= (1 if row["kind"] == "mla_heads" else min(8, row["units"])), row
    assert any(row["kind"] == "mla_heads" and row["kept"] == 1 for row in plan.summary())
    assert torch.isfinite(logits(apply_plan(model, plan), "efficientvit_b0")).all()


# --------------------------------------------------------------------------------------------
# bad input


def test_a_ratio_that_empties_a_group_is_a_clear_error():
    # B0's stage-2 attention has 4 heads: removing 90 % of them leaves less than one
    with pytest.raises(VitedgeError, match=r"ratio 0.9 would remove every head of stages.2.* use a ratio below 0.750"):
        prune(dense("efficientvit_b0"), 0.9)
    with pytest.raises(VitedgeError, match="would remove every"):
        prune(dense("efficientvit_m0"), 0.2, stage_ratios={"stages.0": 0.95})


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, True, "0.4", float("nan")])
def test_ratio_outside_unit_interval_is_refused(ratio):
    # a wrong type is refused by the config model, a wrong number by PruneConfig's rule
    with pytest.raises(VitedgeError, match=r"ratio(: input should be a valid number| must be a number in \[0, 1\))"):
        prune(dense("efficientvit_b0"), ratio=ratio)


def test_unknown_criterion_suggests_close_matches():
    with pytest.raises(VitedgeError, match="unknown pruning criterion 'l3': did you mean"):
        prune(dense("efficientvit_b0"), 0.4, "l3")


def test_other_bad_settings_name_the_fix():
    model = dense("efficientvit_b0")
    with pytest.raises(VitedgeError, match="unknown stage 'stage.3'; did you mean 'stages.3'"):
        prune(model, 0.4, stage_ratios={"stage.3": 0.5})
    with pytest.raises(VitedgeError, match=r"stage_ratios\['head'\] must be a number"):
        prune(model, 0.4, stage_ratios={"head": 1.0})
    with pytest.raises(VitedgeError, match="'taylor' needs data"):
        prune(model, 0.4, "taylor")
    with pytest.raises(VitedgeError, match="unknown pruning scope 'globl': did you mean 'global'"):
        prune(model, 0.4, scope="globl")
    with pytest.raises(VitedgeError, match="round_to must be a positive int"):
        prune(model, 0.4, round_to=0)
    with pytest.raises(VitedgeError, match="bn_images must be an int >= 0"):
        PruneConfig(0.4, bn_images=-1)
    with pytest.raises(VitedgeError, match="cannot prune a Sequential"):
        prune(nn.Sequential(nn.Linear(2, 2)), 0.4)


def test_pruned_checkpoint_with_another_architecture_is_refused(tmp_path):
    pruned = prune(dense("efficientvit_b0"), 0.4)
    path = vitedge.save(pruned, tmp_path / "b0_p40.safetensors")
    with pytest.raises(VitedgeError, match="holds a efficientvit_b0 model, not efficientvit_b1"):
        vitedge.load(path, "efficientvit_b1")
    # the bare weights of a pruned model do not fit the dense architecture of the same name
    torch.save(pruned.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(VitedgeError, match="shape mismatches"):
        vitedge.load(tmp_path / "bare.pth", "efficientvit_b0")


# --------------------------------------------------------------------------------------------
# the recipe: prune a checkpoint, fine-tune with the dense teacher, evaluate, save


def _tiny_folder(root, classes=("ant", "bee"), per_split=(6, 4)):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "test"), per_split):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=gen) * 100 + 120 * c).byte().numpy()
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_prune_checkpoint_finetunes_with_the_dense_teacher_and_saves(tmp_path):
    from vitedge.train import DataConfig, DistillConfig, TrainConfig
    from vitedge.workflows.prune import prune_checkpoint

    data = _tiny_folder(tmp_path / "data")
    model = vitedge.create_model("efficientvit_b0", num_classes=2, img_size=32)
    ckpt = vitedge.save(model, tmp_path / "dense.safetensors", extra={"classes": ["ant", "bee"]})
    train = TrainConfig(epochs=1, data=DataConfig(dataset=str(data), img_size=32, batch_size=4),
                        distill=DistillConfig(teacher="dense"))
    result = prune_checkpoint(ckpt, PruneConfig(0.4, "taylor", max_batches=2), train=train,
                              out=tmp_path / "p40", verbose=False)
    m = result.metrics
    assert {"score_dense", "score_pruned", "score_bn_recalibrated", "score_finetuned"} <= set(m)
    assert m["params_pruned"] < m["params_dense"] and m["macs_pruned"] < m["macs_dense"]
    assert (tmp_path / "p40" / "prune.json").is_file() and (tmp_path / "p40" / "finetune").is_dir()
    reloaded = vitedge.load(result.path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model(x))
    extra = vitedge.models.checkpoint.read_metadata(result.path)["extra"]
    assert extra["classes"] == ["ant", "bee"] and extra["pruning"]["config"]["ratio"] == 0.4


def test_batchnorm_reestimation_matches_the_batch_statistics_and_moves_no_weight():
    from vitedge.pruning.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    batches = [torch.randn(8, 3, 10, 10) + 2.0 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches) == 1
    with torch.no_grad():
        feats = torch.cat([model[0](b) for b in batches])
    bn = model[1]
    # the average of per-batch means / unbiased variances, as momentum=None accumulates them
    means = torch.stack([model[0](b).detach().mean(dim=(0, 2, 3)) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    variances = torch.stack([model[0](b).detach().var(dim=(0, 2, 3), unbiased=True) for b in batches])
    assert torch.allclose(bn.running_var, variances.mean(0), rtol=1e-5)
    assert not torch.allclose(bn.running_var, torch.ones(4), atol=0.05)  # moved from the initial 1
    assert bn.momentum == 0.1 and not model.training and not model[3].training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())

