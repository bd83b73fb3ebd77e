"""Quantization ablation ladders: one float model under a sequence of quantization configs, each
rung scored, the results kept in one JSON file that a re-run resumes from.

A ladder is a list of :class:`Step` (a name and a :class:`~vitedge.quantization.QuantConfig`;
``None`` is the float model). :func:`run_ladder` quantizes the model with each step's config on
the same calibration batches, scores it, and rewrites the results file atomically after every
step, so a killed run loses at most the step in progress. A re-run with the same ``setup`` (what
the scores depend on besides the config: checkpoint, data, calibration) keeps every recorded step
whose name and config are unchanged.

Example::

    rows = run_ladder(model, trio_ladder(), calib, lambda net: evaluate(net, test_loader),
                      path=Path("runs/quant_b0/results.json"), setup={"checkpoint": ckpt, "calib": 1024})
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from vitedge.io import write_json
from vitedge.quantization import QuantConfig, TrioConfig, quantize

__all__ = ["Step", "finished_steps", "run_ladder", "seg_trio_ladder", "select", "trio_ladder",
           "write_results"]

@dataclass(frozen=True)
class Step:
    """One rung of a ladder: a name, the quantization config (None: the float model), and tags
    copied into the step's record (e.g. ``{"w8a8": False}`` for a row outside a W8A8 comparison)."""

    name: str
    config: QuantConfig | None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any] | None:
        """The config as it reads back from JSON (what a recorded step is compared with)."""
        return None if self.config is None else json.loads(json.dumps(self.config.to_dict()))


# What a step's score function returns: metric name → value (the first one is logged).
Score = Callable[[nn.Module], Mapping[str, Any]]
# Called after each step with the step, the records so far (this step's last) and the quantized
# model (None when the record was kept from an earlier run).
OnStep = Callable[[Step, list[dict[str, Any]], nn.Module | None], None]


def trio_ladder() -> list[Step]:
    """The classification ablation of the Trio-ViT recipe: W8A8 per-tensor min-max, then each
    transform added in turn, Trio's MSE ranges, the variants ORT deploys, and W4A8 Trio. Tag
    ``w8a8``: the step competes for the best W8A8 PTQ row."""
    only = lambda m, s, log2: TrioConfig(migration=m, shifting=s, log2_divisor=log2)
    row = lambda name, config, w8a8=True: Step(name, config, {"w8a8": w8a8})
    return [
        row("FP32", None, w8a8=False),
        row("W8A8 per-tensor min-max", QuantConfig(method="minmax", per_channel=False)),
        row("+ per-channel weights", QuantConfig(method="minmax", trio=only(False, False, False))),
        row("+ migration", QuantConfig(method="minmax", trio=only(True, False, False))),
        row("+ shifting", QuantConfig(method="minmax", trio=only(True, True, False))),
        row("+ log2 divisor", QuantConfig(method="minmax", trio=only(True, True, True))),
        row("+ log2 divisor, window at the calibration max",
            QuantConfig(method="minmax", trio=TrioConfig(divisor_exp_min=None))),
        row("Trio (MSE ranges, all transforms)", QuantConfig(method="trio")),
        row("Trio without log2 divisor (MSE ranges)", QuantConfig(method="trio", trio=only(True, True, False))),
        row("Trio + conv outputs (what ORT runs as integer convs)", QuantConfig(method="trio", conv_outputs=True)),
        row("Trio + step sizes learned on the calibration set (300 steps)",
            QuantConfig(method="trio", reconstruct_iters=300)),
        row("Trio + conv outputs, attention operands in float",
            QuantConfig(method="trio", conv_outputs=True, attention=False)),
        row("min-max, attention operands in float", QuantConfig(method="minmax", attention=False)),
        row("W4A8 Trio", QuantConfig(method="trio", w_bits=4), w8a8=False),
    ]


def seg_trio_ladder(reconstruct: int = 0) -> list[Step]:
    """The segmentation ablation: Trio W8A8 with conv-output points (what ORT runs) under each
    log2-divisor window, without the divisor, with attention in float, at 7-bit weights; with
    ``reconstruct`` > 0 also W8A8 and W7A8 with step sizes learned for that many steps."""
    trio = lambda **kw: QuantConfig(method="trio", conv_outputs=True, **kw)
    learned = [Step(f"Trio W{b}A8 + step sizes learned on the calibration frames ({reconstruct} steps)",
                    trio(w_bits=b, reconstruct_iters=reconstruct)) for b in (8, 7)] if reconstruct else []
    return [
        Step("FP32", None),
        Step("Trio W8A8, spec's fixed divisor window −6…9", trio(trio=TrioConfig(divisor_slide=False))),
        Step("Trio W8A8, window slid up past saturation (default)", trio()),
        Step("Trio W8A8, window at the calibration max", trio(trio=TrioConfig(divisor_exp_min=None))),
        Step("Trio W8A8 without log2 divisor", trio(trio=TrioConfig(log2_divisor=False))),
        Step("Trio W8A8, attention in float", trio(attention=False)),
        Step("Trio W7A8 (default window)", trio(w_bits=7)),
        *learned,
    ]


def select(ladder: Sequence[Step], patterns: Sequence[str] | None, *, keep: Sequence[str] = ()) -> list[Step]:
    """The steps whose name contains one of ``patterns`` (case-insensitive; none given: all),
    plus the steps named in ``keep`` (a reference every other step is compared with)."""
    if not patterns:
        return list(ladder)
    wanted = [p.lower() for p in patterns]
    return [s for s in ladder if s.name in keep or any(p in s.name.lower() for p in wanted)]


def finished_steps(path: Path, setup: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of an earlier run's results file by step name: none if there is no readable
    file or it measured another ``setup``; records marked ``pending`` did not finish."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if previous.get("setup") != json.loads(json.dumps(setup)):
        return {}
    return {r["name"]: r for r in previous.get("rows", []) if not r.get("pending")}


def write_results(path: Path, setup: Mapping[str, Any], rows: list[dict[str, Any]],
                  meta: Mapping[str, Any] | None = None) -> Path:
    """The results file as it stands: ``meta`` (e.g. the command), the setup, every record."""
    return write_json(path, {**(meta or {}), "setup": dict(setup), "rows": rows}, indent=1)


def run_ladder(
    model: nn.Module,
    ladder: Sequence[Step],
    calib: Sequence[Any],
    score: Score,
    *,
    path: Path | None = None,
    setup: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    on_step: OnStep | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Quantize ``model`` with each step's config on ``calib`` and ``score`` it, in ladder order.

    Each record: ``name``, the step's tags, the scores, ``seconds`` (to quantize),
    ``score_seconds`` and ``config``. With ``path``, a record of the same ``setup`` with the same
    name and config there is kept instead of recomputed, and the file is rewritten after every
    computed step (:func:`write_results`, with ``meta``)."""
    setup = dict(setup or {})
    done = finished_steps(path, setup) if path is not None else {}
    rows: list[dict[str, Any]] = []
    for step in ladder:
        config = step.config_dict()
        kept = done.get(step.name)
        net = None
        if kept is not None and kept.get("config") == config:
            rows.append(kept)
            log(f"{step.name:55s} {_headline(kept)}  (from the previous run)")
        else:
            start = time.perf_counter()
            net = model if step.config is None else quantize(model, calib, config=step.config)
            seconds = time.perf_counter() - start
            scores = dict(score(net))
            rows.append({"name": step.name, **step.tags, **scores, "seconds": seconds,
                         "score_seconds": time.perf_counter() - start - seconds, "config": config})
            log(f"{step.name:55s} {_headline(rows[-1])}  ({seconds:.1f} s to quantize)")
            if path is not None:
                write_results(path, setup, rows, meta)
        if on_step is not None:
            on_step(step, rows, net)
    return rows


def _headline(record: dict[str, Any]) -> str:
    """The first score of a record, e.g. ``top1 91.20``."""
    name = next((k for k in record if k not in ("name", "config") and isinstance(record[k], float)), None)
    return "" if name is None else f"{name} {record[name]:6.2f}"
