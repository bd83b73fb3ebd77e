"""The trainer on a segmentation set: same loop, the segmentation task (mIoU, per-pixel loss)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import vitedge
from vitedge.data.segmentation import CAMVID_CLASSES, SegEvalTransform, build_seg_dataset
from vitedge.train import DataConfig, OptimConfig, TrainConfig, train
from vitedge.train.seg_evaluate import evaluate_seg


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 64×96 frame: a bright 'road' band (class 3) at a random height over 'sky' (class 0)."""
    image = rng.integers(0, 60, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    top = int(rng.integers(16, 48))
    image[top:] += 150
    mask[top:] = 3
    mask[:, :4] = 11  # CamVid's unlabelled value
    return image, mask


@pytest.fixture(scope="module")
def camvid_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for folder in (split, f"{split}annot"):
            (root / "CamVid" / folder).mkdir(parents=True)
        for i in range(n):
            image, mask = _scene(rng)
            Image.fromarray(image).save(root / "CamVid" / split / f"{i}.png")
            Image.fromarray(mask).save(root / "CamVid" / f"{split}annot" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(camvid_like, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("seg-run")
    cfg = TrainConfig(model="efficientvit_seg_b0", epochs=2, seed=0, out=str(out / "run"), device="cpu",
                      data=DataConfig(dataset="camvid", root=str(camvid_like), img_size=64, batch_size=4,
                                      seg_scale=(0.75, 1.25)),
                      optim=OptimConfig(lr=3e-3, warmup_epochs=0.5))
    return train(cfg, verbose=False), out / "run"


def test_segmentation_training_end_to_end(camvid_like, trained):
    result, run = trained
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"miou", "pixel_acc", "test_loss", "train_top1"} <= set(history[-1]) and "top1" not in history[-1]
    m = result.metrics
    assert 0 <= m["miou"] <= 100 and m["num_pixels"] == 4 * 64 * 92  # unlabelled columns not scored
    assert set(m["per_class_iou"]) == set(CAMVID_CLASSES)
    report = json.loads((run / "metrics.json").read_text())
    assert report["final"]["miou"] == pytest.approx(m["miou"])
    # the saved model is a segmentation model that reloads and scores the same
    model = vitedge.load(run / "model.safetensors")
    assert model.num_classes == 11
    test = build_seg_dataset("camvid", camvid_like, "test", transform=SegEvalTransform())
    again = evaluate_seg(model, torch.utils.data.DataLoader(test, batch_size=4))
    assert again["miou"] == pytest.approx(m["miou"], abs=1e-6)


def test_eval_cli_reports_miou_and_renders_overlays(camvid_like, trained, tmp_path, monkeypatch, capsys):
    from test_cli import run_cli

    result, run = trained
    png, report = tmp_path / "overlays.png", tmp_path / "eval.json"
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run / "model.safetensors"), "--data", "camvid",
                             "--data-dir", str(camvid_like), "--overlays", str(png), "--overlay-count", "2",
                             "--json", str(report))
    assert code == 0, err
    assert f"mIoU {result.metrics['miou']:.2f}%" in out and "pavement" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(report.read_text())["per_class_iou"].keys() == result.metrics["per_class_iou"].keys()
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run / "model.safetensors"), "--data", "cifar10",
                             "--data-dir", str(camvid_like))
    assert code != 0


def test_train_cli_on_a_segmentation_set(camvid_like, tmp_path, monkeypatch, capsys):
    from test_cli import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "train", "efficientvit_seg_b0", "--data", "camvid",
                             "--data-dir", str(camvid_like), "--img-size", "64", "--epochs", "1",
                             "--batch-size", "4", "--out", str(tmp_path / "cli-run"))
    assert code == 0, err
    assert "mIoU" in out + err
    final = json.loads((tmp_path / "cli-run" / "metrics.json").read_text())["final"]
    # mIoU is the mean over the classes that occur (sky, road) of the per-class IoU, over the
    # labelled pixels only, and it is what the saved model scores when evaluated again
    ious = [v for v in final["per_class_iou"].values() if not math.isnan(v)]
    assert len(ious) >= 2 and final["miou"] == pytest.approx(sum(ious) / len(ious))
    assert final["num_pixels"] == 4 * 64 * 92
    model = vitedge.load(tmp_path / "cli-run" / "model.safetensors")
    test = build_seg_dataset("camvid", camvid_like, "test", transform=SegEvalTransform())
    again = evaluate_seg(model, torch.utils.data.DataLoader(test, batch_size=4))
    assert again["miou"] == pytest.approx(final["miou"], abs=1e-6)
    assert again["per_class_iou"] == pytest.approx(final["per_class_iou"], abs=1e-6, nan_ok=True)

    code, out, err = run_cli(monkeypatch, capsys, "train", "efficientvit_seg_b0", "--data", "camvid",
                             "--data-dir", str(camvid_like), "--train-split", "trainvall", "--epochs", "1",
                             "--out", str(tmp_path / "bad-split"))
    assert code != 0 and "CamVid split must be one of" in err


def test_prune_and_quantize_recipes_on_a_segmentation_checkpoint(camvid_like, trained, tmp_path, monkeypatch,
                                                                 capsys):
    from test_cli import run_cli

    from vitedge.quantization import load_quantized

    _, run = trained
    data = ["--data", "camvid", "--data-dir", str(camvid_like), "--batch-size", "4"]
    code, out, err = run_cli(monkeypatch, capsys, "prune", str(run / "model.safetensors"), "--ratio", "0.4",
                             "--criterion", "taylor", "--finetune-epochs", "1", "--distill", *data,
                             "--out", str(tmp_path / "pruned"))
    assert code == 0, err
    assert "mIoU pruned" in out and "mIoU fine-tuned" in out and "top-1" not in out
    report = json.loads((tmp_path / "pruned" / "prune.json").read_text())["metrics"]
    assert report["metric"] == "miou" and report["params_pruned"] < report["params_dense"]
    code, out, err = run_cli(monkeypatch, capsys, "quantize", str(tmp_path / "pruned" / "model.safetensors"),
                             "--method", "trio", "--calib", "4", *data, "--out", str(tmp_path / "q"))
    assert code == 0, err
    assert "mIoU W8A8 PTQ" in out
    qmodel = load_quantized(tmp_path / "q" / "model.safetensors")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert qmodel(x).shape == (1, 11, 8, 12)


def test_miniature_segmentation_study(camvid_like, tmp_path, monkeypatch, capsys):
    from test_cli import run_cli

    config = tmp_path / "seg.yaml"
    config.write_text(json.dumps({
        "name": "seg-mini", "out": str(tmp_path / "runs"), "task": "seg", "model": "efficientvit_seg_b0",
        "data": {"dataset": "camvid", "root": str(camvid_like), "img_size": 64, "batch_size": 4,
                 "train_limit": None, "eval_limit": None},
        "baseline": {"epochs": 1}, "pruning": {"ratios": [0.4], "finetune": {"epochs": 1}},
        "quantization": {"calib": 4},
        # the CPU breakdown and the FPGA estimate are the classification study's to test
        "deploy": {"runs": 3, "warmup": 1, "threads": 1, "seg_latency_size": [64, 128], "breakdown": False,
                   "accelerator": None}}))
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", str(config))
    assert code == 0, err
    run = tmp_path / "runs" / "seg-mini"
    report = (run / "report.md").read_text()
    for text in ("mIoU fine-tuned", "mIoU runtime", "latency ms at 64×128", "whole test frames"):
        assert text in report, text
    assert "top-1" not in report
    rows = json.loads((run / "results.json").read_text())["rows"]
    # every runtime here (deploy.runtime auto), each measured at the frames and at 64×128
    assert {(r["variant"], r["precision"]) for r in rows} == {(v, p) for v in ("dense", "l2_p40")
                                                              for p in ("fp32", "int8")} | (
        {(v, "bf16") for v in ("dense", "l2_p40")} if any(r["precision"] == "bf16" for r in rows) else set())
    assert "onnxruntime" in {r["runtime"] for r in rows}
    assert all(0 <= r["score"] <= 100 and r["latency_ms"] > 0 and r["latency_hi_ms"] > 0 for r in rows)
    assert (run / "plots" / "accuracy_vs_latency.png").is_file()


def test_study_task_and_dataset_must_agree(camvid_like, monkeypatch, capsys):
    from test_cli import assert_one_line_error, run_cli

    code, _, err = run_cli(monkeypatch, capsys, "study", "--data", "camvid", "--data-dir", str(camvid_like))
    assert_one_line_error(code, err, "segmentation dataset", "--task seg")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--task", "seg")
    assert_one_line_error(code, err, "task segmentation needs a segmentation dataset")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--task", "seg", "--data", "camvid", "--data-dir",
                           str(camvid_like), "--model", "efficientvit_b0")
    assert_one_line_error(code, err, "task segmentation needs a segmentation model")
