"""Parity that can fail: weights whose output depends on the input, and a guard against vacuous
comparisons.

With PyTorch's or timm's default initialisation the MIT classifiers are nearly constant functions
(B0-B3 logits move by 2-3e-6 between two random images), so "same logits within 1e-4" holds for a
model that ignores its input, or for the reference fed another image. Every parity test here
therefore (1) draws weights with :func:`input_dependent` and (2) checks with :func:`assert_parity`,
which first requires the reference outputs for two different inputs to differ by at least
``VACUITY_FACTOR`` times the tolerance, and fails the test as vacuous otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

VACUITY_FACTOR = 100.0


@torch.no_grad()
def input_dependent(model: nn.Module, seed: int = 0, resolution: int | tuple[int, int] | None = None,
                    batch: int = 2) -> nn.Module:
    """Give ``model`` weights whose output depends on its input; returns it in eval mode.

    Conv and linear weights are normal with variance 1/fan-in, biases N(0, 0.1²), norm affines
    in [0.5, 1.5] / N(0, 0.1²), attention biases N(0, 0.5²). BatchNorm running statistics are
    non-trivial but sized to the network: the batch statistics of ``batch`` random images at
    ``resolution`` (default: the model's own input size; above 256 px, 128 px: the statistics
    barely depend on the size, the cost does), so activations neither vanish nor explode with
    depth. Measured over the zoo: two random images' logits differ by 0.03-2.8 (max abs), while
    float32 reorderings such as BN folding move them by 1e-6-7e-5.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if name.endswith("attention_biases"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    channels, height, width = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    if resolution is not None:
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    elif max(height, width) > 256:
        height = width = 128
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:  # cumulative average over this one batch, then back to the usual momentum
        bn.reset_running_stats()
        bn.momentum, bn.training = None, True
    model(torch.randn(batch, channels, height, width, generator=g))
    for bn in norms:
        bn.momentum, bn.training = 0.1, False
        # A few noise images estimate some channels' variance far too low (a global attention
        # output or a pooled feature is nearly one number per image), and a new image would then
        # come out of that BN many times larger, compounding block after block (B3's last stage:
        # 1e6). Flooring each channel at the layer's mean variance keeps every BN's gain ≤ 1.
        bn.running_var.clamp_(min=float(bn.running_var.mean()))
    return model


def distinct_images(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """Images that differ in brightness, contrast and texture (smooth patterns plus noise at random
    levels): i.i.d. noise images all look alike to these networks (B3's logits move by 0.06 between
    two of them, against 1.1 between two of these)."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=resolution, mode="bicubic",
                           align_corners=False)
    noise = torch.randn(n, 3, resolution, resolution, generator=g)
    contrast, grain, level = torch.rand(3, n, 1, 1, 1, generator=g)
    return smooth * 4 * contrast + noise * 3 * grain + (4 * level - 2)


@torch.no_grad()
def spread_predictions(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Shift the classifier's bias so the mean logit over ``images`` is zero for every class.

    Input-dependent logits can still share one large class-wise offset (the same argmax for every
    image); a test on predictions (top-k, accuracy, agreement) needs them spread over classes.
    """
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    classifier.bias.sub_(model.eval()(images).mean(0))
    return model


def distance(a, b, metric: str = "max") -> float:
    """``max``: largest absolute difference; ``rel``: ‖a − b‖ / ‖b‖."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    if metric == "max":
        return float((a - b).abs().max())
    if metric == "rel":
        return float((a - b).norm() / b.norm())
    raise ValueError(f"unknown metric {metric!r}")


def assert_input_dependent(reference, other, tol: float, metric: str = "max", what: str = "",
                           factor: float = VACUITY_FACTOR) -> float:
    """Fail the test as vacuous unless the reference outputs for two different inputs differ by at
    least ``factor`` × ``tol``; returns that spread."""
    spread = distance(other, reference, metric)
    if not spread >= factor * tol:
        pytest.fail(f"vacuous comparison{' (' + what + ')' if what else ''}: the reference outputs for two "
                    f"different inputs differ by {spread:.2e} ({metric}), less than {factor:g} × the "
                    f"tolerance {tol:.1e}; give the model input-dependent weights (parity.input_dependent)")
    return spread


def assert_parity(actual, expected, *, tol: float, other=None, metric: str = "max", what: str = "",
                  factor: float = VACUITY_FACTOR) -> float:
    """``actual`` matches ``expected`` within ``tol``, and the comparison could have failed.

    ``other`` is the reference output for different inputs; by default the batch rolled by one
    (image i against image i+1), so a batch of two or more different images needs nothing else.
    ``factor`` is lowered below 100 only where the effect checked is itself a sizeable part of
    that spread (bf16 or fp16 end to end: 8 or 11 mantissa bits through a deep net), and the call
    says so. Returns the measured distance.
    """
    expected = torch.as_tensor(expected)
    if other is None:
        if expected.shape[0] < 2:
            raise ValueError("assert_parity needs `other` (the reference for another input) at batch 1")
        other = expected.roll(1, dims=0)
    assert_input_dependent(expected, other, tol, metric, what, factor)
    measured = distance(actual, expected, metric)
    assert measured <= tol, f"{what or 'parity'}: {metric} difference {measured:.3e} > tolerance {tol:.1e}"
    return measured


def assert_identical(actual, expected, *, other=None, what: str = "", min_spread: float = 1e-3) -> None:
    """Bit-identical outputs (a reload, a key renaming), from a model whose outputs for two
    different inputs differ by at least ``min_spread``: equality of constant outputs proves little."""
    expected = torch.as_tensor(expected)
    if other is None:
        other = expected.roll(1, dims=0)
    spread = distance(other, expected)
    if not spread >= min_spread:
        pytest.fail(f"vacuous comparison{' (' + what + ')' if what else ''}: outputs for two different inputs "
                    f"differ by only {spread:.2e}; give the model input-dependent weights (parity.input_dependent)")
    assert torch.equal(torch.as_tensor(actual), expected), \
        f"{what or 'outputs'} differ: {distance(actual, expected):.3e}"
