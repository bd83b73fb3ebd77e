"""Per-stage pruning searched under a measured latency budget instead of one ratio everywhere.

Two measurements and a search:

- **latency**: :class:`~vitedge.bench.latency_model.LatencyTable`, a configuration's latency on
  the target predicted as the dense model's plus one change per pruned stage;
- **sensitivity**: :func:`measure_sensitivity` prunes each stage alone at each ratio of the grid,
  re-estimates BatchNorm, and measures on held-out *training* images (never the test split) how
  far the model moved from the dense one: the mean KL divergence of its predictions (per pixel
  for segmentation) and the task's score;
- **search** (:func:`search`): the configuration (a ratio per stage, 0 included) with the least
  summed divergence whose predicted latency meets the budget.

Why exhaustive: the pruned widths are per stage, so the space is the grid to the power of the
stage count (B0: 4 ratios, 5 stages → 1,024 configurations; M0: 64), small enough to enumerate in
milliseconds. An evolutionary or NetAdapt-style greedy search would only approximate the optimum
of the same additive model; they pay off once the choices are per layer (widths and precisions).
Why KL and not the accuracy drop: on a few hundred held-out images a small cut moves top-1 by a
single image or none, which cannot rank 1,024 configurations; the divergence of the predictions
resolves those differences and is label-free (the same for a segmenter). The score drop is
recorded beside it, and summed for the prediction shown to the user.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitedge.bench.latency_model import LatencyTable
from vitedge.errors import VitedgeError
from vitedge.pruning import prune
from vitedge.pruning.batchnorm import recalibrate_batchnorm
from vitedge.pruning.pruner import stage_names
from vitedge.train.task_data import TaskData

__all__ = ["SearchResult", "Sensitivity", "measure_sensitivity", "search"]


@dataclasses.dataclass
class Sensitivity:
    """Per stage and grid ratio: the mean KL divergence from the dense model and the score change
    (points of the task's metric) on held-out training images."""

    metric: str
    ratios: tuple[float, ...]
    dense_score: float
    images: int
    kl: dict[str, dict[str, float]]     # stage → f"{ratio:g}" → mean KL(dense ‖ pruned)
    score: dict[str, dict[str, float]]  # stage → f"{ratio:g}" → score − dense score

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sensitivity:
        return cls(**{**data, "ratios": tuple(data["ratios"])})


@dataclasses.dataclass
class SearchResult:
    """The chosen ratio per stage (pruned stages only) and what the models predict for it."""

    stage_ratios: dict[str, float]
    predicted_ms: float
    budget_ms: float
    predicted_kl: float
    predicted_score: float
    candidates: int    # configurations within the budget


def _kl(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Mean KL(dense ‖ pruned) over images (and pixels: class scores are dim 1)."""
    p = F.log_softmax(dense.float(), dim=1)
    q = F.log_softmax(pruned.float(), dim=1)
    return float((p.exp() * (p - q)).sum(dim=1).mean())


@torch.no_grad()
def measure_sensitivity(model: nn.Module, data: TaskData, *, ratios: Sequence[float], images: int = 256,
                        bn_images: int = 256, seed: int = 0, round_to: int = 8,
                        log: Callable[[str], None] = print) -> Sensitivity:
    """Each stage of ``model`` pruned alone (L2) at each ratio, BatchNorm re-estimated on
    ``bn_images`` training images, then compared with the dense model on ``images`` other
    training images."""
    model = model.eval()
    bn = data.sample(bn_images, seed=seed)
    held = data.sample(images, seed=seed, labels=True, skip=bn_images)
    if not held:
        raise VitedgeError(f"the training split has no images left after {bn_images} for BatchNorm; "
                           "lower bn_images")
    dense_logits = [model(x) for x, _ in held]
    dense_score = _score(data, dense_logits, held)
    stages = stage_names(model)
    kl: dict[str, dict[str, float]] = {s: {} for s in stages}
    score: dict[str, dict[str, float]] = {s: {} for s in stages}
    for i, (stage, ratio) in enumerate(itertools.product(stages, ratios), 1):
        variant = prune(model, 0.0, stage_ratios={stage: ratio}, round_to=round_to)
        recalibrate_batchnorm(variant, bn)
        logits = [variant.eval()(x) for x, _ in held]
        weighted = sum(_kl(d, p) * len(x) for d, p, (x, _) in zip(dense_logits, logits, held))
        kl[stage][f"{ratio:g}"] = weighted / sum(len(x) for x, _ in held)
        score[stage][f"{ratio:g}"] = _score(data, logits, held) - dense_score
        log(f"sensitivity {i}/{len(stages) * len(ratios)}: {stage} at {ratio:.0%}: KL "
            f"{kl[stage][f'{ratio:g}']:.4f}, {data.task.label} {score[stage][f'{ratio:g}']:+.2f}")
    return Sensitivity(data.metric, tuple(ratios), dense_score, sum(len(x) for x, _ in held), kl, score)


def _score(data: TaskData, logits: Sequence[torch.Tensor], batches: Sequence[Any]) -> float:
    scorer = data.task.scorer(data.classes)
    for out, (_, targets) in zip(logits, batches):
        scorer.update(out, targets)
    return scorer.score()


def search(table: LatencyTable, sensitivity: Sensitivity, budget_ms: float) -> SearchResult:
    """The configuration of least summed divergence whose predicted latency is at most
    ``budget_ms`` (ties: the faster); every stage of the table takes 0 or a ratio both measured."""
    ratios = [r for r in sensitivity.ratios if f"{r:g}" in next(iter(table.deltas.values()), {})]
    stages = [s for s in table.stages if s in sensitivity.kl]
    if not stages or not ratios:
        raise VitedgeError("the latency table and the sensitivity share no stage or ratio; measure both "
                           "for the same model and grid")
    best: tuple[float, float, dict[str, float]] | None = None
    feasible, fastest = 0, float("inf")
    for choice in itertools.product((0.0, *ratios), repeat=len(stages)):
        config = {s: r for s, r in zip(stages, choice) if r > 0}
        ms = table.predict(config)
        fastest = min(fastest, ms)
        if ms > budget_ms:
            continue
        feasible += 1
        divergence = sum(sensitivity.kl[s][f"{r:g}"] for s, r in config.items())
        if best is None or (divergence, ms) < best[:2]:
            best = (divergence, ms, config)
    if best is None:
        raise VitedgeError(f"a latency of {budget_ms:.3f} ms cannot be met: the fastest configuration of the "
                           f"grid is predicted at {fastest:.3f} ms (dense {table.dense_ms:.3f} ms); "
                           "allow more time or measure a wider ratio grid")
    divergence, ms, config = best
    predicted = sensitivity.dense_score + sum(sensitivity.score[s][f"{r:g}"] for s, r in config.items())
    return SearchResult(config, ms, budget_ms, divergence, predicted, feasible)
