"""mIoU, per-class IoU and pixel accuracy against hand-computed values."""

from __future__ import annotations

import math

import torch

from vitedge.train.seg_metrics import IGNORE_INDEX, SegMetricCounts, predict


def _onehot_logits(pred: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, classes).permute(0, 3, 1, 2).float()


def test_hand_computed_iou_and_ignore():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, IGNORE_INDEX, IGNORE_INDEX]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 2]]])
    counts = SegMetricCounts(num_classes=4)
    counts.update(_onehot_logits(pred, 4), target, loss_sum=2.0)
    s = counts.summary(["a", "b", "c", "d"])
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3;
    # class 2: tp 1, gt 2, pred 1 -> 1/2; class 3: never seen -> no IoU
    assert math.isclose(s["per_class_iou"]["a"], 100 / 3) and math.isclose(s["per_class_iou"]["b"], 200 / 3)
    assert math.isclose(s["per_class_iou"]["c"], 50.0) and math.isnan(s["per_class_iou"]["d"])
    assert math.isclose(s["miou"], (100 / 3 + 200 / 3 + 50) / 3)
    assert s["num_pixels"] == 6 and math.isclose(s["pixel_acc"], 400 / 6)  # ignored pixels not counted
    assert math.isclose(s["mean_acc"], (50 + 100 + 50) / 3) and s["loss"] == 2.0


def test_counts_add_up_across_batches():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 4, 4, generator=g)
    masks = torch.randint(0, 5, (6, 8, 8), generator=g)
    masks[0, :2] = IGNORE_INDEX
    whole, parts = SegMetricCounts(5), SegMetricCounts(5)
    whole.update(logits, masks)
    for i in range(0, 6, 2):
        parts.update(logits[i:i + 2], masks[i:i + 2])
    assert torch.equal(whole.confusion, parts.confusion)
    assert whole.summary()["num_pixels"] == 6 * 64 - 16


def test_logits_are_resized_to_the_label_size():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, :, 0], logits[0, 1, :, 1] = -5.0, 5.0  # class 1 rises from left to right
    pred = predict(logits, (4, 8))
    assert pred.shape == (1, 4, 8)
    assert (pred[0, :, :4] == 0).all() and (pred[0, :, 4:] == 1).all()  # bilinear: the sign flips mid-way
