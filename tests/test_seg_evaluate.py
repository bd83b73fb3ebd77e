"""Segmentation loss (ignore index, distillation) and evaluation over a loader."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vitedge.train.seg_evaluate import evaluate_seg, seg_loss
from vitedge.train.seg_metrics import IGNORE_INDEX


def test_ignored_pixels_do_not_move_the_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 4, 4, generator=g)
    masks = torch.randint(0, 4, (2, 4, 4), generator=g)
    masks[:, :, :2] = IGNORE_INDEX  # same size as the logits: no resampling mixes pixels
    changed = logits.clone()
    changed[:, :, :, :2] += 10 * torch.randn(2, 4, 4, 2, generator=g)
    assert torch.allclose(seg_loss(logits, masks), seg_loss(changed, masks))
    teacher = torch.randn(2, 4, 4, 4, generator=g)
    assert torch.allclose(seg_loss(logits, masks, teacher), seg_loss(changed, masks, teacher))


def test_distillation_term():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 2, generator=g)
    masks = torch.randint(0, 3, (1, 4, 4), generator=g)  # masks larger than the logits: upsampled
    ce = seg_loss(logits, masks)
    assert torch.allclose(seg_loss(logits, masks, logits.clone(), alpha=0.3), 0.7 * ce)  # KL(p||p) = 0
    assert seg_loss(logits, masks, -logits, alpha=0.3) > 0.7 * ce


class _Oracle(nn.Module):
    """Predicts class 1 on the left half and class 0 elsewhere, at output stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 2, h // 2, w // 2)
        logits[:, 1, :, : w // 4], logits[:, 1, :, w // 4:] = 10.0, -10.0  # bilinear: flips at w / 2
        return logits


def test_evaluate_seg_on_a_loader():
    images = torch.zeros(4, 3, 8, 8)
    masks = torch.zeros(4, 8, 8, dtype=torch.long)
    masks[:, :, :4] = 1
    masks[0, :, :4] = 0           # one image disagrees on its left half: 32 wrong pixels of 256
    masks[1, 0, :] = IGNORE_INDEX  # 8 ignored pixels
    loader = torch.utils.data.DataLoader(list(zip(images, masks)), batch_size=3)
    m = evaluate_seg(_Oracle(), loader, classes=["bg", "fg"])
    # class 0: tp 128 - 4 = 124 (row 0 of image 1 ignored), gt 124 + 32, pred 124 -> IoU 124/156
    # class 1: tp 96 - 4 = 92, gt 92, pred 92 + 32 -> IoU 92/124
    assert m["num_pixels"] == 248 and m["num_images"] == 4
    assert math.isclose(m["per_class_iou"]["bg"], 100 * 124 / 156)
    assert math.isclose(m["per_class_iou"]["fg"], 100 * 92 / 124)
    assert math.isclose(m["pixel_acc"], 100 * 216 / 248)
