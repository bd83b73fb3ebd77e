"""Shared test helpers: timm as the oracle, with BatchNorm statistics made non-trivial."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running stats, so folding is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def timm_oracle(name: str, **kwargs) -> nn.Module:
    """timm's randomly initialised model of the same name, in eval mode, BN randomized."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    return randomize_batchnorm(model).eval()


def is_mit(name: str) -> bool:
    return not name.startswith("efficientvit_m")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
