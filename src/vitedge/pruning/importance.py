"""Importance criteria: each maps a :class:`ChannelGroup` to a 1-D score per unit (higher = keep).

- ``l2`` — Frobenius norm of a unit's weights across every coupled parameter (producer rows,
  norm affine parameters and biases, consumer columns): the classic filter-norm recipe, extended
  to the whole group as Torch-Pruning's magnitude importance does. Running statistics are
  buffers, not weights, and do not count.
- ``l1`` — the same with absolute values.
- ``taylor`` — first-order Taylor saliency ``Σ |w · ∂L/∂w|`` over a unit's coupled parameters,
  accumulated over a few labelled batches (Molchanov et al., 2019, in its |·| form).
- ``random`` — uniform scores from a seeded generator: the control every criterion must beat.

Example::

    imp = make_importance("l2", model)
    scores = imp(channel_groups(model)[0])   # one score per hidden channel
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.pruning.groups import ChannelGroup

__all__ = [
    "CRITERIA",
    "Importance",
    "MagnitudeImportance",
    "RandomImportance",
    "TaylorImportance",
    "check_criterion",
    "make_importance",
]

Importance = Callable[[ChannelGroup], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

CRITERIA = ("l2", "l1", "taylor", "random")
_ALIASES = {"frobenius": "l2", "fro": "l2", "magnitude": "l2"}


def _unit_reduce(values: Mapping[str, torch.Tensor], group: ChannelGroup,
                 fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``Σ fn(v)`` over each unit's entries in every slice whose tensor is in ``values``."""
    total = torch.zeros(group.units, dtype=torch.float64)
    for s in group.slices:
        if s.name not in values:  # a buffer (running statistics): not a weight
            continue
        t = values[s.name].detach()
        # reduce to one value per index along the axis first, then gather units (cheap)
        per_index = fn(t.double()).movedim(s.dim, 0).reshape(t.shape[s.dim], -1).sum(dim=1)
        total += per_index.cpu()[s.index].sum(dim=1)
    return total


class MagnitudeImportance:
    """Lp norm (p = 1 or 2) of each unit's weights over all coupled parameters."""

    def __init__(self, model: nn.Module, p: int = 2) -> None:
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}")
        self.p = p
        self.params = dict(model.named_parameters())

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        if self.p == 1:
            return _unit_reduce(self.params, group, torch.abs)
        return _unit_reduce(self.params, group, torch.square).sqrt()


class TaylorImportance:
    """``Σ |w · ∂L/∂w|`` per unit, gradients summed over ``batches``.

    The model runs in eval mode (running BN statistics, no dropout) and its ``.grad`` fields and
    ``requires_grad`` flags are left exactly as they were: gradients come from
    :func:`torch.autograd.grad`, never ``backward()``.
    """

    def __init__(self, model: nn.Module, batches: Iterable[Any], loss_fn: LossFn | None = None,
                 max_batches: int = 8) -> None:
        loss_fn = loss_fn or F.cross_entropy
        named = dict(model.named_parameters())
        saliency = {name: torch.zeros_like(p) for name, p in named.items()}
        flags = {name: p.requires_grad for name, p in named.items()}
        was_training = model.training
        device = next(model.parameters()).device
        seen = 0
        model.eval()
        try:
            for p in named.values():
                p.requires_grad_(True)
            for batch in batches:
                if seen >= max_batches:
                    break
                inputs, targets = _unpack(batch)
                with torch.enable_grad():
                    loss = loss_fn(model(inputs.to(device)), targets.to(device))
                    grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
                for (name, p), g in zip(named.items(), grads):
                    if g is not None:
                        saliency[name] += (p.detach() * g).abs()
                seen += 1
        finally:
            for name, p in named.items():
                p.requires_grad_(flags[name])
            model.train(was_training)
        if seen == 0:
            raise VitedgeError("criterion 'taylor' got no batches: pass example_batches, an "
                               "iterable of (images, labels) batches from the training set")
        self.saliency = saliency
        self.batches = seen

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        return _unit_reduce(self.saliency, group, lambda t: t)


class RandomImportance:
    """Uniform random scores, reproducible from ``seed`` (groups are scored in a fixed order)."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        return torch.rand(group.units, generator=self.generator, dtype=torch.float64)


def _unpack(batch: Any) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(
            isinstance(t, torch.Tensor) for t in batch[:2]):
        return batch[0], batch[1]
    raise VitedgeError("criterion 'taylor' needs (images, labels) batches; got a "
                       f"{type(batch).__name__}; pass e.g. a DataLoader or a list of tuples")


def check_criterion(criterion: str) -> str:
    """The canonical criterion name, or a :class:`VitedgeError` with close matches."""
    name = _ALIASES.get(criterion, criterion) if isinstance(criterion, str) else criterion
    if name in CRITERIA:
        return name
    close = difflib.get_close_matches(str(criterion), [*CRITERIA, *_ALIASES], n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(CRITERIA)}"
    raise VitedgeError(f"unknown pruning criterion {criterion!r}: {hint}")


def make_importance(
    criterion: str,
    model: nn.Module,
    *,
    example_batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    max_batches: int = 8,
    seed: int = 0,
) -> Importance:
    """Build the importance for ``criterion`` (``taylor`` consumes up to ``max_batches``)."""
    name = check_criterion(criterion)
    if name == "l2":
        return MagnitudeImportance(model, p=2)
    if name == "l1":
        return MagnitudeImportance(model, p=1)
    if name == "random":
        return RandomImportance(seed)
    if example_batches is None:
        raise VitedgeError("criterion 'taylor' needs data: pass example_batches (a few "
                           "(images, labels) batches), or use criterion='l2'")
    return TaylorImportance(model, example_batches, loss_fn, max_batches)
