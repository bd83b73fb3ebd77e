"""Evaluation metrics on known logits, the evaluate loop, the confusion PNG and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from parity import input_dependent, spread_predictions
from test_cli import run_cli

import vitedge
from vitedge.data import build_dataset
from vitedge.data.transforms import EvalTransform
from vitedge.errors import VitedgeError
from vitedge.train import evaluate, metrics_from_logits, save_confusion_png

# 6 samples, 4 classes. argmax: 0, 1, 1, 3, 2, 0; labels: 0, 1, 2, 3, 3, 2.
LOGITS = torch.tensor([[5., 1, 0, 0], [0, 4, 3, 1], [1, 5, 4, 0], [0, 0, 1, 3], [0, 1, 2, 1.5], [3, 2, 1, 0]])
LABELS = torch.tensor([0, 1, 2, 3, 3, 2])
CLASSES = ["a", "b", "c", "d"]


def test_metrics_on_known_logits():
    m = metrics_from_logits(LOGITS, LABELS, CLASSES, topk=2)
    assert m["top1"] == pytest.approx(100 * 3 / 6)
    # top-2 hits: all but sample 5 (label 2, top-2 = {0, 1}).
    assert m["top2"] == pytest.approx(100 * 5 / 6)
    assert m["per_class"] == pytest.approx({"a": 100.0, "b": 100.0, "c": 0.0, "d": 50.0})
    assert m["confusion"] == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]
    assert m["num_samples"] == 6
    top5 = metrics_from_logits(LOGITS, LABELS, CLASSES)  # k beyond the class count: everything hits
    assert top5["top5"] == 100.0


class PassThrough(nn.Module):
    """A 'model' whose inputs are already the logits."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.anchor


def test_evaluate_loop_matches_batchless_metrics():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(LOGITS, LABELS), batch_size=4)
    model = PassThrough().train()
    m = evaluate(model, loader, classes=CLASSES)
    expected = metrics_from_logits(LOGITS, LABELS, CLASSES)
    assert {k: m[k] for k in ("top1", "top5", "per_class", "confusion")} == \
           {k: expected[k] for k in ("top1", "top5", "per_class", "confusion")}
    assert m["loss"] == pytest.approx(float(nn.functional.cross_entropy(LOGITS, LABELS)))
    assert model.training  # the caller's mode is restored


def test_evaluate_label_out_of_range():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(LOGITS, LABELS + 3), batch_size=6)
    with pytest.raises(VitedgeError, match="label 6 is out of range for the model's 4 outputs"):
        evaluate(PassThrough(), loader)
    with pytest.raises(VitedgeError, match="4 outputs but the data has 3 classes"):
        evaluate(PassThrough(), loader, classes=["a", "b", "c"])


def test_confusion_png(tmp_path):
    m = metrics_from_logits(LOGITS, LABELS, CLASSES)
    path = save_confusion_png(m["confusion"], CLASSES, tmp_path / "sub" / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_train_then_eval(monkeypatch, capsys, cifar_jpeg, tmp_path):
    # From input-dependent weights, centred on real images, at a tiny lr: a from-scratch epoch on
    # 200 images predicts one class for every image, and then any preprocessing scores 10 %.
    model = input_dependent(vitedge.create_model("efficientvit_b0", num_classes=10, img_size=32))
    train_set = build_dataset("cifar10", root=cifar_jpeg, split="train")
    transform = EvalTransform(32, mean=model.data_config["mean"], std=model.data_config["std"])
    spread_predictions(model, torch.stack([transform(train_set.image(i)) for i in range(0, 200, 4)]))
    start = vitedge.save(model, tmp_path / "start.safetensors")
    run = tmp_path / "run"
    code, out, err = run_cli(monkeypatch, capsys, "train", str(start), "--data", str(cifar_jpeg),
                             "--epochs", "1", "--img-size", "32", "--batch-size", "40", "--out", str(run),
                             "--lr", "1e-6")
    assert code == 0, err
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["config"]["data"]["img_size"] == 32 and saved["config"]["optim"]["lr"] == 1e-6
    assert saved["config"]["epochs"] == 1 and len(saved["history"]) == 1

    png = tmp_path / "confusion.png"
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run / "model.safetensors"), "--data",
                             str(cifar_jpeg), "--confusion", str(png), "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    assert png.is_file() and "top-1" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_samples"] == 100 and metrics["input_size"] == 32
    assert list(metrics["per_class"]) == saved["classes"]
    # same preprocessing as training: the same confusion matrix, from a model whose predictions
    # spread over several classes (so another crop or normalisation would move some of them)
    predicted = torch.tensor(metrics["confusion"]).sum(dim=0)
    assert (predicted > 0).sum() >= 4, predicted.tolist()
    for key in ("top1", "top5", "loss", "per_class"):
        assert metrics[key] == pytest.approx(saved["final"][key], abs=1e-4), key

    # Resuming a finished run with its saved settings is a no-op; changing one is refused.
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", "--out", str(run))
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", "--out", str(run), "--lr", "0.1")
    assert code == 2 and "settings differ" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,fragment", [
    (("eval", "missing.safetensors"), "does not exist"),
    (("train", "--resume", "--out", "nowhere"), "nothing to resume"),
    (("train", "efficientvit_b0", "--data", "cifar10"), "needs --data-dir"),
    (("train", "efficientvit_b0", "--data", "no/such/folder"), "neither a registered dataset"),
])
def test_cli_user_errors(monkeypatch, capsys, tmp_path, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
