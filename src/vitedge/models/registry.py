"""Model registry: names as timm registers them, one `create_model`, close-match suggestions.

The registry knows no family: each family module registers its models with ``@register_model``
when :mod:`vitedge.models` imports it.

Every model built here remembers how it was built (``model.arch``: the registered name plus the
keyword arguments), so a checkpoint can rebuild the exact architecture from JSON alone — pruned
widths included, since pruning records them as ``block_widths`` overrides.
"""

from __future__ import annotations

import difflib
import sys
from types import ModuleType
from typing import Any, Callable

import torch.nn as nn

from vitedge.errors import VitedgeError

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register a factory function under its own name (e.g. ``efficientvit_b0``)."""
    if fn.__name__ in _MODELS:
        raise RuntimeError(f"model {fn.__name__!r} registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered model names containing ``pattern``, sorted."""
    return sorted(name for name in _MODELS if pattern in name)


def is_model(name: str) -> bool:
    return name in _MODELS


def unknown_model_error(name: str) -> VitedgeError:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `vitedge models` to list them."
    return VitedgeError(f"unknown model {name!r}: {hint}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Example::

        model = create_model("efficientvit_b0", num_classes=10)
        model = create_model("efficientvit_m0", num_classes=10, img_size=224)
    """
    if not is_model(name):
        raise unknown_model_error(name)
    try:
        model = _MODELS[name](**kwargs)
    except TypeError as err:  # a misspelled keyword: say which model refused it
        raise VitedgeError(f"{name}: {err}; check the keyword arguments") from err
    model.arch = {"name": name, "kwargs": dict(kwargs)}
    return model


def family_module(name: str) -> ModuleType:
    """The module that defines model ``name`` (it also holds the family's official key map)."""
    if not is_model(name):
        raise unknown_model_error(name)
    return sys.modules[_MODELS[name].__module__]

