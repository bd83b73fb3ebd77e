"""The guard every parity test goes through fails a comparison that could not have failed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from parity import assert_input_dependent, assert_parity, input_dependent

import vitedge


class ConstantLogits(nn.Module):
    """Ignores its input: the model every vacuous parity test would also pass."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_guard_fails_a_constant_output_model():
    model = ConstantLogits()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    with pytest.raises(pytest.fail.Exception, match="vacuous comparison"):
        assert_parity(out, out, tol=1e-4)  # image 0 against image 1 of the batch
    with pytest.raises(pytest.fail.Exception, match="vacuous comparison"):
        assert_parity(out[:1], out[:1], other=model(torch.randn(1, 3, 32, 32)).detach(), tol=1e-4)


def test_guard_fails_default_initialised_b0_and_passes_input_dependent_weights():
    """Timm-style initialisation makes B0 nearly constant (the problem); the helper fixes it."""
    x = torch.randn(2, 3, 128, 128)
    default = vitedge.create_model("efficientvit_b0").eval()
    with torch.no_grad():
        out = default(x)
    with pytest.raises(pytest.fail.Exception, match="vacuous"):
        assert_input_dependent(out, out.roll(1, 0), tol=1e-4)
    informative = input_dependent(vitedge.create_model("efficientvit_b0"), resolution=128)
    with torch.no_grad():
        out = informative(x)
    assert assert_input_dependent(out, out.roll(1, 0), tol=1e-4) >= 1e-2


def test_guard_catches_the_reference_fed_another_image():
    """A model that is right passes; the same model compared with its output for other images fails."""
    model = input_dependent(vitedge.create_model("efficientvit_m0"))
    x, y = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, wrong = model(x), model(y)
    assert assert_parity(expected.clone(), expected, tol=1e-4) == 0.0
    with pytest.raises(AssertionError, match="difference"):
        assert_parity(wrong, expected, tol=1e-4)


def test_input_dependent_keeps_batchnorm_statistics_non_trivial():
    model = input_dependent(vitedge.create_model("efficientvit_b0"), resolution=64)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not model.training and all(not m.training and m.momentum == 0.1 for m in norms)
    means = torch.cat([m.running_mean for m in norms])
    variances = torch.cat([m.running_var for m in norms])
    assert means.abs().mean() > 0.05 and (variances - 1).abs().mean() > 0.1
    assert torch.isfinite(variances).all() and variances.min() > 0
