"""What a quantized model stores, point by point: kind, integer type, granularity, scale, zero
point, the float range the grid covers and the range calibration observed — plus every Trio-ViT
transform. As rows (for tests and JSON) and as a Markdown table (for people).

Example::

    rows = point_report(qmodel)
    Path("points.md").write_text(report_markdown(rows))
    Counter(r.kind for r in rows)   # {'input': 52, 'weight': 52, 'attn.q': 8, …}
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from vitedge.quantization.points import aliases, quantizers
from vitedge.quantization.qmodules import QuantConv2d
from vitedge.quantization.quantizer import Log2Quantizer, Quantizer

__all__ = ["PointRow", "count_kinds", "point_report", "report_json", "report_markdown"]


@dataclass(frozen=True)
class PointRow:
    """One quantization point or transform. Per-channel values are summarised as min…max.

    ``scale``/``zero_point``: (min, max) over channels (the log2 divisor: its exponent window,
    as powers of two). ``grid``: the float range representable, ``observed``: the calibration
    range. ``also``: other paths of a shared point.
    """

    name: str
    kind: str
    dtype: str
    granularity: str
    scale: tuple[float, float]
    zero_point: tuple[int, int]
    grid: tuple[float, float]
    observed: tuple[float, float]
    enabled: bool
    also: tuple[str, ...] = ()


def _span(t: torch.Tensor) -> tuple[float, float]:
    t = t.detach().float()
    return float(t.min()), float(t.max())


def point_report(qmodel: nn.Module) -> list[PointRow]:
    """One row per quantization point (shared points once), then one per Trio-ViT transform."""
    paths = aliases(qmodel)
    rows = []
    for name, q in quantizers(qmodel):
        also = tuple(p for p in paths[id(q)] if p != name)
        if isinstance(q, Log2Quantizer):
            lo, hi = int(q.exp_min), q.exp_max
            rows.append(PointRow(name, q.kind, f"log2 (exp {q.bits}-bit)", "per-tensor",
                                 (2.0 ** lo, 2.0 ** hi), (lo, hi), (2.0 ** lo, 2.0 ** hi),
                                 (0.0, float(q.observed_max)), q.fake_quant, also))
            continue
        assert isinstance(q, Quantizer)
        grid_lo, grid_hi = q.representable()
        n = q.scale.numel()
        rows.append(PointRow(
            name, q.kind, q.spec.dtype, f"per-channel ({n})" if q.spec.per_channel else "per-tensor",
            _span(q.scale), tuple(int(v) for v in _span(q.zero_point)),
            (float(grid_lo.min()), float(grid_hi.max())),
            (float(q.observed_min.min()), float(q.observed_max.max())), q.fake_quant, also))
    for name, m in qmodel.named_modules():
        if isinstance(m, QuantConv2d) and m.migration is not None:
            f = m.migration.factor
            rows.append(PointRow(f"{name}.migration", "trio.migration", "float", f"per-channel ({f.numel()})",
                                 _span(f), (0, 0), _span(m.migration.channel_max / f),
                                 (float(m.migration.channel_min.min()), float(m.migration.channel_max.max())),
                                 True))
        if isinstance(m, QuantConv2d) and m.shift is not None:
            z = m.shift.offset
            lo, hi = m.shift.channel_min - z, m.shift.channel_max - z
            rows.append(PointRow(f"{name}.shift", "trio.shift", "float", f"per-channel ({z.numel()})",
                                 _span(z), (0, 0), (float(lo.min()), float(hi.max())),
                                 (float(m.shift.channel_min.min()), float(m.shift.channel_max.max())), True))
    return rows


def count_kinds(rows: list[PointRow]) -> dict[str, int]:
    """Number of rows per kind."""
    return dict(sorted(Counter(r.kind for r in rows).items()))


def report_json(rows: list[PointRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)


def _g(v: float) -> str:
    return f"{v:.4g}"


def report_markdown(rows: list[PointRow]) -> str:
    """A Markdown table of every point (scales and ranges to 4 significant digits), with a
    count per kind above it."""
    counts = ", ".join(f"{k}: {n}" for k, n in count_kinds(rows).items())
    lines = [f"{len(rows)} rows — {counts}", "",
             "| point | kind | type | granularity | scale | zero point | grid range | observed range |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scale = _g(r.scale[0]) if r.scale[0] == r.scale[1] else f"{_g(r.scale[0])} … {_g(r.scale[1])}"
        zp = str(r.zero_point[0]) if r.zero_point[0] == r.zero_point[1] else f"{r.zero_point[0]} … {r.zero_point[1]}"
        name = r.name + (f" (= {', '.join(r.also)})" if r.also else "") + ("" if r.enabled else " [off]")
        lines.append(f"| `{name}` | {r.kind} | {r.dtype} | {r.granularity} | {scale} | {zp} | "
                     f"[{_g(r.grid[0])}, {_g(r.grid[1])}] | [{_g(r.observed[0])}, {_g(r.observed[1])}] |")
    return "\n".join(lines) + "\n"
