"""Precision plans: which quantization points stay in float, chosen by measurement.

Some models cannot take 8 bits everywhere. LiteMLA's numerator ``(KᵀV)·Q`` spans a range that one
per-tensor scale cannot hold on small photo datasets (flowers17 B0: −15 pt top-1 in INT8, −1 pt
with those eight points in float), while CIFAR-10 loses 0.1 pt. A rule cannot tell these apart;
the model's own outputs can. :func:`auto_plan` measures, on held-out *training* images, how far
the quantized logits are from the float model's (KL divergence, and how often the predicted
class agrees), then:

1. If INT8 everywhere is already close (:func:`close_enough`: KL below ``MIN_KL``, logits that
   barely move, the disagreements near-ties; or ``target_agreement`` % of the predictions agree
   and KL stays below ``AGREED_KL``), nothing is kept in float.
2. Otherwise every *kind* of point (``attn.num``, ``conv.output``, ``weight`` …) is left in
   float in turn; the kind that removes the most divergence is kept in float if it removes at
   least ``min_gain`` of what remains. Repeated for at most ``max_kinds`` kinds, until the
   model is close enough.
3. When a chosen kind brings the model close enough, each of its points then goes back to INT8
   unless that alone costs more than ``refine_slack`` of the divergence the kind removed: only
   the layers that need float keep it. Short of the target, every point of the kind counts and
   all of them stay in float.

Explicit choices (``QuantConfig.keep_float``: point paths, kinds or layer paths) are applied
first and never undone. The plan is stored with the model (``qmodel.precision_plan``), written
into quantized checkpoints, honoured by the export (a point in float has no Q/DQ pair) and shown
in the study's report.

Example::

    plan = auto_plan(qmodel, float_model, holdout_batches)
    print(plan.summary())   # "kept in float: attn.num (3 points) — held-out KL 0.285 → 0.05 …"
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.errors import VitedgeError
from vitedge.quantization.points import aliases, quantizers
from vitedge.quantization.qmodules import LinearAttentionPoints
from vitedge.quantization.quantizer import Log2Quantizer, Quantizer

__all__ = ["PrecisionPlan", "Score", "auto_plan", "fixed_plan", "keep_in_float", "replan", "select_points"]

TARGET_AGREEMENT = 99.0
# A kind that removes a fifth of what remains is worth its float points: flowers17 B0 pruned 20 % on
# ONNX Runtime needs attn.num, attn.kv and attn.ksum in float (−0.7 pt on the test split), and the
# third removed 47 % of what the first two left
MIN_GAIN = 0.2
MAX_KINDS = 5  # flowers17 B0 on ORT: the four attention kinds and the conv outputs, −0.7 pt (3 kinds: −1.8)
REFINE_SLACK = 0.1
MIN_KL = 0.002  # below this the logits barely move: disagreements are near-ties, not damage
# Agreement on a few hundred held-out images resolves a flip in 128 or 256 at best, so above this KL
# the plan goes on even when every held-out prediction agrees (flowers17 B0 pruned 20 % on
# OpenVINO: held-out 100 % and KL 0.0044, then −1.1 pt on the test split)
AGREED_KL = 2 * MIN_KL

AnyQuantizer = Quantizer | Log2Quantizer


@dataclass(frozen=True)
class Score:
    """How close quantized logits are to the float model's on the held-out images: mean KL
    divergence KL(float ‖ quantized) per prediction, and the % of predicted classes (per
    pixel for segmentation) that agree."""

    kl: float
    agreement: float

    def __str__(self) -> str:
        return f"KL {self.kl:.4g}, agreement {self.agreement:.2f} %"


@dataclass
class PrecisionPlan:
    """Which points stay in float, and the measurements behind the choice.

    ``point_kinds``: each point path left in float, with its kind (``float_points``: the paths).
    ``requested``: the points among them that were asked for by name rather than measured.
    ``int8``: the score with every point in INT8; ``planned``: with this plan.
    ``kinds``: the score with each kind of point in float alone (the sensitivity table).
    ``reasons``: one line per decision, for the report. ``predictions``: how many held-out
    predictions the scores are over. ``latency``: per group of points timed in float on the
    runtime (:mod:`vitedge.bench.latency_plan`), its latency relative to the all-INT8 model.
    """

    point_kinds: dict[str, str] = field(default_factory=dict)
    requested: tuple[str, ...] = ()
    int8: Score | None = None
    planned: Score | None = None
    kinds: dict[str, Score] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    predictions: int = 0
    latency: dict[str, float] = field(default_factory=dict)  # group → latency in float / all-INT8
    learned_steps: int = 0  # step sizes learned this many steps after the plan (0: calibrated)

    @property
    def float_points(self) -> tuple[str, ...]:
        return tuple(self.point_kinds)

    def summary(self) -> str:
        """One line for the report."""
        learned = (f"; step sizes learned {self.learned_steps} steps: held-out {self.planned}"
                   if self.learned_steps and self.planned is not None else "")
        if not self.float_points:
            if self.int8 is None:
                return "every point in INT8 (no sensitivity pass)"
            return f"every point in INT8: held-out {self.int8}{learned}"
        kinds = Counter(self.point_kinds.values())
        text = ", ".join(f"{k} ({n} point{'s' if n > 1 else ''})" for k, n in kinds.items())
        timed = ("; timed in float on the runtime: " + ", ".join(f"{g} {r:.2f}×" for g, r in self.latency.items())
                 if self.latency else "")
        if self.int8 is None or self.planned is None:
            return f"kept in float: {text}{timed}"
        if not self.accuracy_points:
            return f"kept in float: {text} (held-out {self.int8}){learned}{timed}"
        return (f"kept in float: {text} — held-out KL {self.int8.kl:.4g} → {self.planned.kl:.4g}, "
                f"agreement {self.int8.agreement:.2f} → {self.planned.agreement:.2f} %{learned}{timed}")

    @property
    def accuracy_points(self) -> tuple[str, ...]:
        """The points in float for accuracy (measured or requested), not for speed."""
        return tuple(p for p, kind in self.point_kinds.items() if not kind.endswith("(latency)"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrecisionPlan:
        def score(v: Any) -> Score | None:
            return None if v is None else Score(float(v["kl"]), float(v["agreement"]))

        return cls(point_kinds=dict(data.get("point_kinds", {})), requested=tuple(data.get("requested", ())),
                   int8=score(data.get("int8")), planned=score(data.get("planned")),
                   kinds={k: score(v) for k, v in data.get("kinds", {}).items()},
                   reasons=tuple(data.get("reasons", ())), predictions=int(data.get("predictions", 0)),
                   latency={k: float(v) for k, v in data.get("latency", {}).items()},
                   learned_steps=int(data.get("learned_steps", 0)))


def select_points(qmodel: nn.Module, selectors: Sequence[str]) -> list[str]:
    """The point paths that ``selectors`` name: a point's path (any of a shared point's paths),
    a kind (``attn.num``) or a layer's path (every point under it). A selector that names
    nothing is an error."""
    points = dict(quantizers(qmodel))
    paths = aliases(qmodel)
    path_of = {alias: name for name, q in points.items() for alias in paths[id(q)]}
    kinds = sorted({q.kind for q in points.values()})
    chosen: dict[str, None] = {}
    for sel in selectors:
        found = [path_of[sel]] if sel in path_of else [n for n, q in points.items() if q.kind == sel]
        if not found:
            prefix = sel.rstrip(".") + "."
            found = sorted({path_of[a] for a in path_of if a.startswith(prefix)}, key=list(points).index)
        if not found:
            raise VitedgeError(f"the precision plan names {sel!r}, which is no quantization point, kind or "
                               f"layer of this model; use a kind ({', '.join(kinds)}) or a layer path "
                               "(see points.md)")
        chosen.update(dict.fromkeys(found))
    return list(chosen)


def keep_in_float(qmodel: nn.Module, names: Iterable[str]) -> None:
    """Keep the points at ``names`` in float for good (``in_float``; calibration, QAT and
    ``set_quant_state`` leave them off), with the points they need in float (:func:`companions`)."""
    points = dict(quantizers(qmodel))
    for q in _with_companions([points[name] for name in names], companions(qmodel)):
        q.in_float = True
        q.fake_quant = False


def companions(qmodel: nn.Module) -> dict[int, tuple[AnyQuantizer, ...]]:
    """``id(point)`` → the points that must be in float whenever it is. A linear-attention
    denominator in float needs its ``Kᵀ1`` in float: a quantized ``Kᵀ1`` rounds small sums to 0,
    and with no INT8 floor under the float denominator ``num / (0 + eps)`` explodes (flowers17
    B0: NaN logits). Only the INT8 denominator carries that floor."""
    return {id(m.den): (m.ksum,) for m in qmodel.modules()
            if isinstance(m, LinearAttentionPoints) and not m.operands_only}


def _with_companions(group: Iterable[AnyQuantizer], needs: Mapping[int, tuple[AnyQuantizer, ...]]
                     ) -> list[AnyQuantizer]:
    chosen = {id(q): q for q in group}
    for q in list(chosen.values()):
        chosen.update((id(c), c) for c in needs.get(id(q), ()))
    return list(chosen.values())


def fixed_plan(qmodel: nn.Module) -> PrecisionPlan:
    """The plan of the points already in float, without measurements (``auto_float`` off)."""
    floated = {n: q.kind for n, q in quantizers(qmodel) if q.in_float}
    return PrecisionPlan(point_kinds=floated, requested=tuple(floated))


@torch.no_grad()
def score_against(qmodel: nn.Module, float_model: nn.Module, batches: Sequence[torch.Tensor]) -> Score:
    """How close ``qmodel``'s logits are to ``float_model``'s on ``batches`` (both in eval mode)."""
    qmodel.eval()
    float_model.eval()
    return score_logits(_flat_logits(qmodel, batches), _flat_logits(float_model, batches))


def close_enough(score: Score, target_agreement: float = TARGET_AGREEMENT) -> bool:
    """Whether quantized logits are close enough to the float ones that the plan stops: KL below
    ``MIN_KL``, or ``target_agreement`` % of the predictions agreeing with KL below ``AGREED_KL``."""
    return score.kl <= MIN_KL or (score.agreement >= target_agreement and score.kl <= AGREED_KL)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """``(predictions, classes)`` logits: a segmentation model's ``(N, C, H, W)`` one row per pixel."""
    logits = logits.float()
    if logits.ndim == 4:
        logits = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    return logits.cpu()


def _flat_logits(model: nn.Module, batches: Sequence[torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([predictions(model(x.to(device))) for x in batches])


def score_logits(got: torch.Tensor, reference: torch.Tensor) -> Score:
    """How close ``got`` is to ``reference`` (both from :func:`predictions`): KL(reference ‖ got)
    per prediction and the % of equal argmax predictions."""
    kl = F.kl_div(F.log_softmax(got, -1), F.log_softmax(reference, -1), log_target=True, reduction="batchmean")
    agree = (got.argmax(-1) == reference.argmax(-1)).float().mean()
    return Score(max(float(kl), 0.0), 100.0 * float(agree))


class _Switch:
    """Turns sets of points to float and back, scoring each state against the float logits."""

    def __init__(self, qmodel: nn.Module, reference: torch.Tensor, batches: Sequence[torch.Tensor]) -> None:
        self.qmodel, self.reference, self.batches = qmodel, reference, batches
        self.needs = companions(qmodel)

    def score(self, floated: Iterable[AnyQuantizer] = ()) -> Score:
        floated = [q for q in _with_companions(floated, self.needs) if q.fake_quant]
        for q in floated:
            q.fake_quant = False
        try:
            return score_logits(_flat_logits(self.qmodel, self.batches), self.reference)
        finally:
            for q in floated:
                q.fake_quant = True


@torch.no_grad()
def auto_plan(qmodel: nn.Module, float_model: nn.Module, batches: Sequence[torch.Tensor], *,
              target_agreement: float = TARGET_AGREEMENT, min_gain: float = MIN_GAIN,
              max_kinds: int = MAX_KINDS, refine_slack: float = REFINE_SLACK) -> PrecisionPlan:
    """Choose and apply the points of a calibrated ``qmodel`` to keep in float (see the module
    doc); points already ``in_float`` stay so. ``batches``: held-out training images with the
    evaluation transform. Returns the plan (also set as ``qmodel.precision_plan``)."""
    was_training = qmodel.training
    qmodel.eval()
    float_model.eval()
    points = dict(quantizers(qmodel))
    requested = tuple(n for n, q in points.items() if q.in_float)
    reference = _flat_logits(float_model, batches)
    switch = _Switch(qmodel, reference, batches)
    live = {n: q for n, q in points.items() if q.fake_quant}
    by_kind: dict[str, list[str]] = {}
    for name, q in live.items():
        by_kind.setdefault(q.kind, []).append(name)

    int8 = current = switch.score()
    reasons: list[str] = []
    kinds: dict[str, Score] = {}
    first = True
    if not close_enough(current, target_agreement):
        kinds = {kind: switch.score(live[n] for n in names) for kind, names in by_kind.items()}
        reasons.append(f"INT8 everywhere: held-out {int8} (target: KL ≤ {MIN_KL:g}, or {target_agreement:g} % "
                       f"agreement with KL ≤ {AGREED_KL:g})")
        for _ in range(max_kinds):
            if close_enough(current, target_agreement) or not by_kind:
                break
            # every remaining kind is re-scored after a choice: one dominant kind masks the others
            # (flowers17 B0 on ORT: attn.kv alone is worth nothing until attn.num is in float,
            # then it removes 78 % of what remains)
            trial = {kind: kinds[kind] for kind in by_kind} if first else {
                kind: switch.score(live[n] for n in by_kind[kind]) for kind in by_kind}
            first = False
            kind = min(trial, key=lambda k: trial[k].kl)
            gain = (current.kl - trial[kind].kl) / current.kl if current.kl > 0 else 0.0
            if gain < min_gain:
                reasons.append(f"no kind removes {min_gain:.0%} of the remaining divergence (best: {kind}, "
                               f"{gain:.0%}): the rest stays INT8")
                break
            before = current
            names = by_kind.pop(kind)
            group = [live[n] for n in names]
            # short of the target every point counts: refined on 128 held-out images, flowers17 B0
            # pruned 20 % on ORT kept 1 of 8 attn.num points and lost 1.8 pt on the test split
            kept = (_refine(switch, group, trial[kind], before, refine_slack)
                    if close_enough(trial[kind], target_agreement) else group)
            for q in _with_companions(kept, switch.needs):
                q.in_float, q.fake_quant = True, False
            kept_names = [n for n in names if live[n] in kept]
            current = switch.score()
            reasons.append(f"{kind}: {len(kept_names)} of {len(names)} points kept in float, "
                           f"held-out {before} → {current}")
    plan = PrecisionPlan(point_kinds={n: q.kind for n, q in points.items() if q.in_float}, requested=requested,
                         int8=int8, planned=current, kinds=kinds, reasons=tuple(reasons),
                         predictions=int(reference.shape[0]))
    qmodel.precision_plan = plan
    qmodel.train(was_training)
    return plan


@torch.no_grad()
def replan(qmodel: nn.Module, float_model: nn.Module, batches: Sequence[torch.Tensor]) -> PrecisionPlan:
    """The accuracy plan again, from the state a speed plan left (points kept in float because
    they run faster so, :mod:`vitedge.bench.latency_plan`): with those in float, the kind that
    matters most can be another one (flowers17 B0 pruned 40 % on ONNX Runtime: once the whole
    attention ran in float, the conv outputs held half the remaining divergence). The new points
    join the plan; its INT8 score and sensitivity table stay those of the first pass. A plan with
    no point in float for speed is returned as it is."""
    before = getattr(qmodel, "precision_plan", None) or fixed_plan(qmodel)
    if set(before.float_points) == set(before.accuracy_points):
        return before
    fresh = auto_plan(qmodel, float_model, batches)
    added = {n: k for n, k in fresh.point_kinds.items() if n not in before.point_kinds}
    reasons = tuple(r.replace("INT8 everywhere:", "with the speed plan's points in float:", 1)
                    for r in fresh.reasons)
    plan = dataclasses.replace(before, point_kinds={**before.point_kinds, **added}, int8=before.int8 or fresh.int8,
                               planned=fresh.planned, reasons=before.reasons + reasons)
    qmodel.precision_plan = plan
    return plan


def _refine(switch: _Switch, group: list[AnyQuantizer], all_float: Score, before: Score,
            slack: float) -> list[AnyQuantizer]:
    """The points of ``group`` that must stay in float: each goes back to INT8, cheapest first,
    while the divergence stays within ``slack`` of what keeping the whole group in float removed."""
    budget = all_float.kl + slack * max(before.kl - all_float.kl, 0.0)
    if len(group) == 1:
        return group
    # what each point alone costs back in INT8 (the rest of the group in float)
    cost = {id(q): switch.score(p for p in group if p is not q).kl - all_float.kl for q in group}
    order = sorted(group, key=lambda p: cost[id(p)])
    # the cheapest points whose costs add up within the budget go back together: one check
    spent, back = 0.0, []
    for q in order:
        if all_float.kl + spent + max(cost[id(q)], 0.0) > budget:
            break
        spent += max(cost[id(q)], 0.0)
        back.append(q)
    if back and switch.score(p for p in group if p not in back).kl <= budget:
        return [p for p in group if p not in back]
    # costs did not add up: one point at a time
    in_float = list(group)
    for q in order:
        trial = [p for p in in_float if p is not q]
        if switch.score(trial).kl <= budget:
            in_float = trial
    return in_float
