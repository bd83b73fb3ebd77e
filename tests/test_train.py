"""Trainer: schedule, distillation, EMA, sampler, config; a killed run resumes bit-identically."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from parity import input_dependent
from safetensors import safe_open
from safetensors.torch import load_file

from vitedge.data import ArrayDataset
from vitedge.data.transforms import eval_transform
from vitedge.errors import VitedgeError
from vitedge.train import DataConfig, DistillConfig, EMAConfig, ModelEMA, OptimConfig, TrainConfig, fit
from vitedge.train.config import config_differences
from vitedge.train.distill import distillation_loss
from vitedge.train.optim import lr_at, make_optimizer, set_lr
from vitedge.train.sampling import TrainBatchSampler
from vitedge.train.trainer import build_model


def test_cosine_schedule_with_warmup():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_lr=1e-6)
    lrs = [lr_at(s, 100, 10, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-6) and lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))      # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))      # cosine falls
    # 89 decay steps from step 10 to the last step (99)
    assert lrs[55] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 45 / 89)))


def test_learned_step_sizes_get_their_own_learning_rate():
    from vitedge.quantization import Quantizer, QuantSpec

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Quantizer(QuantSpec(), "input"))
    model[1].learn(True)
    opt = make_optimizer(model, OptimConfig(weight_decay=0.05, step_size_lr_mult=10.0))
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1, 1]   # weight / bias / step size
    assert opt.param_groups[2]["params"][0] is model[1].log_scale
    assert opt.param_groups[2]["weight_decay"] == 0.0
    set_lr(opt, 2e-5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-5, 2e-5, 2e-4])
    with pytest.raises(VitedgeError, match="step_size_lr_mult"):
        OptimConfig(step_size_lr_mult=0.0)


def test_distillation_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    targets = torch.randint(0, 5, (8,))
    ce = F.cross_entropy(student, targets)
    assert torch.allclose(distillation_loss(student, teacher, targets, alpha=0.0), ce)
    # Same logits: the KL term vanishes.
    same = distillation_loss(student, student, targets, alpha=1.0)
    assert torch.allclose(same, torch.tensor(0.0), atol=1e-6)
    t = 3.0
    p = F.softmax(teacher / t, -1)
    kl = (p * (p.log() - F.log_softmax(student / t, -1))).sum(-1).mean() * t * t
    got = distillation_loss(student, teacher, targets, alpha=0.3, temperature=t)
    assert torch.allclose(got, 0.7 * ce + 0.3 * kl, atol=1e-6)


def test_ema_update():
    model = torch.nn.BatchNorm1d(3)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.num_batches_tracked.fill_(5)
    ema.update(model)
    assert torch.allclose(ema.module.weight, torch.full((3,), 1.1))  # 0.9 * 1 + 0.1 * 2
    assert int(ema.module.num_batches_tracked) == 5                    # integers are copied


def test_sampler_order_is_a_function_of_seed_and_epoch():
    def batches(epoch, rank=0, world=1, seed=0):
        s = TrainBatchSampler(50, 8, seed=seed, rank=rank, world_size=world)
        s.set_epoch(epoch)
        return list(s)

    assert batches(3) == batches(3) and batches(3) != batches(4) and batches(3) != batches(3, seed=1)
    assert len(batches(0)) == 6 and all(len(b) == 8 for b in batches(0))  # full batches only
    # Two ranks split each global batch: together they see exactly the single-process batch.
    for single, r0, r1 in zip(batches(2), batches(2, 0, 2), batches(2, 1, 2)):
        assert r0 + r1 == single
    with pytest.raises(VitedgeError, match="does not split evenly"):
        TrainBatchSampler(50, 9, seed=0, world_size=2)
    with pytest.raises(VitedgeError, match="fewer than one batch"):
        TrainBatchSampler(5, 8, seed=0)


def test_config_round_trip_and_differences():
    cfg = TrainConfig(epochs=3, data=DataConfig(scale=(0.3, 1.0)), optim=OptimConfig(lr=2e-3),
                      ema=EMAConfig(0.99), distill=DistillConfig(teacher="t.safetensors"))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    changed = cfg.with_overrides({"optim.lr": 1e-3, "data.workers": 4, "out": "elsewhere"})
    assert config_differences(cfg, changed) == ["optim.lr: 0.002 -> 0.001"]  # workers/out are free
    with pytest.raises(VitedgeError, match="unknown TrainConfig field 'data.bogus'"):
        cfg.with_overrides({"data.bogus": 1})
    with pytest.raises(VitedgeError, match="alpha"):
        DistillConfig(alpha=1.5)


# --- end-to-end on real Fashion-MNIST images, efficientvit_b0 at 32 px ---------------------------

def tiny_sets(fashion, n_train=96, n_eval=32):
    train = ArrayDataset(fashion.images[:n_train], fashion.targets[:n_train], fashion.classes)
    evaluation = ArrayDataset(fashion.images[-n_eval:], fashion.targets[-n_eval:], fashion.classes,
                              transform=eval_transform(32, {"crop_pct": 1.0}))
    return train, evaluation


def tiny_config(out, **changes) -> TrainConfig:
    cfg = TrainConfig(model="efficientvit_b0", epochs=3, seed=3, out=str(out), device="cpu",
                      data=DataConfig(img_size=32, batch_size=16, scale=(0.5, 1.0)),
                      optim=OptimConfig(lr=2e-3, warmup_epochs=0.5), ema=EMAConfig(0.9))
    return cfg.with_overrides(changes)


RUN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from vitedge.data import build_dataset
    from vitedge.train import fit
    from vitedge.train.trainer import build_model
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config, tiny_sets

    out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    train, evaluation = tiny_sets(build_dataset("fashion-mnist", split="test"))
    torch.manual_seed(0)
    model, data_config = build_model("efficientvit_b0", train.classes, 32)

    def kill(info):
        if info.step == kill_at:  # a real kill: no cleanup, no exception handling
            os.kill(os.getpid(), signal.SIGKILL)

    # The resumed run also loads data with worker processes: the result must not depend on it.
    cfg = tiny_config(out, resume=resume, **{{"data.workers": 2 if resume else 0}})
    fit(model, train, evaluation, cfg, data_config=data_config, hooks=[kill], verbose=False)
""")


def test_killed_run_resumes_bit_identical(fashion_test, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(tests=str(Path(__file__).parent)))

    def run(out, kill_at=-1, resume=False):
        return subprocess.run([sys.executable, str(script), str(out), str(kill_at), str(int(resume))],
                              capture_output=True, text=True, timeout=300)

    whole = run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = run(tmp_path / "killed", kill_at=9)  # 6 steps per epoch: step 9 is mid-epoch 2
    assert killed.returncode == -9, killed.stderr
    state = tmp_path / "killed" / "train_state.safetensors"
    with safe_open(state, "pt") as f:
        assert json.loads(f.metadata()["meta"])["epoch"] == 1  # the last completed epoch
    resumed = run(tmp_path / "killed", resume=True)
    assert resumed.returncode == 0, resumed.stderr

    for name in ("train_state.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "killed" / name)
        assert a.keys() == b.keys()
        assert any(k.startswith("optim.") for k in a) or name == "model.safetensors"
        for key in a:
            assert torch.equal(a[key], b[key]), key
    history = [json.loads((tmp_path / run_dir / "metrics.json").read_text())["history"]
               for run_dir in ("whole", "killed")]
    assert [h["top1"] for h in history[0]] == [h["top1"] for h in history[1]]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


def test_run_folder_guards(fashion_test, tmp_path):
    train, evaluation = tiny_sets(fashion_test, n_train=32, n_eval=16)
    model, data_config = build_model("efficientvit_b0", train.classes, 32)
    cfg = tiny_config(tmp_path, epochs=1, **{"ema.decay": None})
    with pytest.raises(VitedgeError, match="no training state .*drop --resume"):
        fit(model, train, evaluation, cfg.replace(resume=True), data_config=data_config, verbose=False)
    fit(model, train, evaluation, cfg, data_config=data_config, verbose=False)
    with pytest.raises(VitedgeError, match="already holds a training run .*--resume"):
        fit(model, train, evaluation, cfg, data_config=data_config, verbose=False)
    with pytest.raises(VitedgeError, match=r"settings differ .*optim.lr: 0.002 -> 0.1"):
        fit(model, train, evaluation, cfg.with_overrides({"resume": True, "optim.lr": 0.1}),
            data_config=data_config, verbose=False)


def test_distillation_from_a_teacher_checkpoint(fashion_test, tmp_path):
    from vitedge import create_model, save
    from vitedge.train.trainer import build_teacher

    train, evaluation = tiny_sets(fashion_test, n_train=32, n_eval=16)
    teachers = [save(input_dependent(create_model("efficientvit_b0", num_classes=10, img_size=32), seed=seed),
                     tmp_path / f"t{seed}.safetensors") for seed in (0, 1)]

    def train_loss(teacher_path, alpha: float) -> float:
        """The epoch's training loss from the same student, data order and augmentation."""
        changes = {"distill.alpha": alpha}
        if teacher_path is not None:
            changes["distill.teacher"] = str(teacher_path)
        cfg = tiny_config(tmp_path / f"run-{len(list(tmp_path.iterdir()))}", epochs=1, **changes)
        torch.manual_seed(0)  # the same student every time
        model, data_config = build_model("efficientvit_b0", train.classes, 32)
        teacher = None if teacher_path is None else build_teacher(str(teacher_path), 10)
        result = fit(model, train, evaluation, cfg, data_config=data_config, verbose=False, teacher=teacher)
        assert len(result.history) == 1
        return result.history[0]["train_loss"]

    alone = train_loss(None, 0.7)
    assert train_loss(None, 0.7) == alone
    first, second = train_loss(teachers[0], 0.7), train_loss(teachers[1], 0.7)
    assert math.isfinite(first) and math.isfinite(second)
    # the teacher's logits enter the loss: another teacher, another loss; alpha 0 ignores it
    assert abs(first - alone) > 1e-3 and abs(first - second) > 1e-3, (alone, first, second)
    assert train_loss(teachers[0], 0.0) == pytest.approx(alone, abs=1e-6)
    with pytest.raises(VitedgeError, match="predicts 10 classes but the data has 7"):
        build_teacher(str(teachers[0]), 7)


def test_eval_every_skips_evaluations_but_always_scores_the_last_epoch(fashion_test, tmp_path):
    train, evaluation = tiny_sets(fashion_test, n_train=32, n_eval=16)
    model, data_config = build_model("efficientvit_b0", train.classes, 32)
    cfg = tiny_config(tmp_path, epochs=3, eval_every=2, **{"ema.decay": None})
    result = fit(model, train, evaluation, cfg, data_config=data_config, verbose=False)
    assert ["top1" in r for r in result.history] == [False, True, True]  # epoch 2, then the last
    assert result.metrics["top1"] == result.history[-1]["top1"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "top1" not in saved["history"][0] and saved["final"]["top1"] == result.metrics["top1"]
    with pytest.raises(VitedgeError, match="eval_every must be at least 1"):
        tiny_config(tmp_path, eval_every=0)
