"""Analytical cycle model of the Trio-ViT / EfficientViT FPGA accelerator (MAT + R-MAC engines).

What the model computes, from a model's operator list (BN folded, W8A8):

- **MAT + RPE lanes** (point-wise, grouped 1×1 and generic convs, projections, linear layers):
  ``groups · ⌈C_out_g / (lanes_MAT + lanes_RPE)⌉ · ⌈C_in_g / PE⌉ · H·W · K² / L`` — the authors'
  early cycle model for one array copy, divided by the replication ``L`` (the spec's arithmetic
  scaling to 2,048 multipliers: the copies share the output pixels evenly).
- **R-MAC engine** (depth-wise convs): ``⌈H / lanes_RPE⌉ · ⌈C / PE⌉ · W · K² / L``.
- **DW → PW fusion**: a depth-wise conv feeding a point-wise conv is one layer of
  ``max(DW, PW + ⌈C/PE⌉·K²)`` cycles (the MAT starts once the first DW outputs exist).
- **Linear attention**: ``KᵀV`` and ``Q(KV)`` per head on MAT + RPE lanes as point-wise convs
  with the tokens as a large batch; the denominator (``Kᵀ1``, ``Q·Kᵀ1``) and the division (a
  shift, log2-quantized divisor) on the R-MAC engine, overlapped head by head:
  ``Σ_h max(MAT_h, RPE_{h−1}) + RPE_last``.
- **Lane sharing**: those two rules are the authors' early model, and they price the PW (or the
  matmuls) on all lanes while the RPE lanes also run the DW (or the divisor): a fused B1 layer
  then uses up to 139 % of the array. ``strict_lanes=True`` books no lane twice — the RPE joins
  the PW only after its DW share, ``max(DW, PW + DW·S/(M+S) + setup)``, and leaves the matmuls
  while it divides, ``heads·MAT_h + heads·RPE_h·S/(M+S) + RPE_last·M/(M+S)`` — at the price of
  ≈ 5 % of the FPS (B1-r224: 741.5 instead of 780.6 FPS, MAC utilisation 89.8 % instead of 94.5 %).
  The preset keeps the published model, which its reference figures come from.
- **Memory**: weights stream from DDR once per frame; a layer whose input + output feature maps
  do not fit the on-chip buffer streams them from/to DDR too. A layer takes
  ``max(compute cycles, memory cycles)`` and is ``memory``-bound when the second wins.
- Activations, residual adds, requantization, reshapes and concatenations happen in the
  engines' output stage or address generators at no extra cycles; BatchNorm is folded.
  LayerNorm, softmax and resizing have no engine: a model that needs them in the mapped region
  is refused with the operator named. The classifier head is excluded by default (the early
  model's convention; the host runs it).

Every assumption is also written into :attr:`AcceleratorEstimate.assumptions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch.nn as nn

from vitedge import settings
from vitedge.errors import VitedgeError
from vitedge.hardware.operators import Operator, OperatorList, extract_operators
from vitedge.settings import config_class
from vitedge.tables import Table

# Linear-attention scopes: the float block and the quantized one with its per-branch points.
_LINEAR_ATTENTION = {"LiteMLA", "QuantLiteMLA", "LinearAttentionPoints"}
_FREE_KINDS = {"elementwise", "reshape"}
_UNMAPPABLE = {
    "norm": "normalisation (LayerNorm/softmax/GroupNorm needs statistics at run time)",
    "resize": "resizing (bilinear/bicubic upsampling)",
    "other": "an operator outside the accelerator's instruction set",
}


@config_class
class AcceleratorConfig:
    """The array and its platform. Defaults: the published ZCU102 design,
    ``(M × N + S × T) × L = (8 × 8 + 8 × 8) × 16`` at 200 MHz, two 8-bit multiplies per DSP.

    ``buffer_kib`` and ``ddr_gbps`` are not published: 2 MiB of the ZCU102's 4 MiB of BRAM for
    feature maps, and the PS DDR4-2400 64-bit interface's 19.2 GB/s peak, are assumptions.
    """

    name: str = "trio-zcu102"
    mat_lanes: int = 8  # M: MAT lanes (output channels in parallel)
    rpe_lanes: int = 8  # S: R-MAC lanes
    pes: int = 8  # N = T: PEs per lane (input channels in parallel)
    replication: int = 16  # L: copies of the array (output pixels in parallel)
    clock_mhz: float = 200.0
    mults_per_dsp: int = 2  # two 8-bit products packed into one DSP48E2
    bits: int = 8  # weight and activation width
    buffer_kib: float = 2048.0
    ddr_gbps: float = 19.2
    strict_lanes: bool = False  # True: no lane does two jobs in one cycle (see the module doc)

    def __post_init__(self) -> None:
        for f in ("mat_lanes", "rpe_lanes", "pes", "replication", "mults_per_dsp", "bits"):
            if getattr(self, f) < 1:
                raise VitedgeError(f"accelerator {f} must be a positive integer (got {getattr(self, f)!r})")
        for f in ("clock_mhz", "buffer_kib", "ddr_gbps"):
            value = getattr(self, f)
            if not math.isfinite(value) or value <= 0:
                raise VitedgeError(f"accelerator {f} must be a positive number (got {value!r})")

    @property
    def lanes(self) -> int:
        return self.mat_lanes + self.rpe_lanes

    @property
    def multipliers(self) -> int:
        return self.lanes * self.pes * self.replication

    @property
    def rpe_multipliers(self) -> int:
        return self.rpe_lanes * self.pes * self.replication

    @property
    def dsps(self) -> float:
        return self.multipliers / self.mults_per_dsp

    @property
    def peak_gops(self) -> float:
        return 2 * self.multipliers * self.clock_mhz / 1e3

    @property
    def ddr_bytes_per_cycle(self) -> float:
        return self.ddr_gbps * 1e3 / self.clock_mhz

    def with_overrides(self, **overrides: Any) -> AcceleratorConfig:
        """A copy with some fields changed (``None`` values are ignored); unknown names are errors."""
        return settings.with_overrides(self, {k: v for k, v in overrides.items() if v is not None},
                                       what="accelerator parameter")


ACCELERATORS: dict[str, AcceleratorConfig] = {"trio-zcu102": AcceleratorConfig()}


def get_accelerator(name: str) -> AcceleratorConfig:
    """The named preset; an unknown name is an error listing the presets."""
    if name not in ACCELERATORS:
        raise VitedgeError(f"unknown accelerator {name!r}; choose one of {sorted(ACCELERATORS)}")
    return ACCELERATORS[name]


@dataclass(frozen=True)
class LayerCost:
    """One mapped layer: its operators, engine, work and cycles."""

    name: str
    kind: str
    engine: str
    macs: int
    compute_cycles: int
    memory_cycles: int
    ddr_bytes: int
    ops: tuple[str, ...] = ()

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.memory_cycles)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_cycles > self.compute_cycles else "compute"

    def utilisation(self, multipliers: int) -> float:
        return self.macs / (self.cycles * multipliers) if self.cycles else 0.0

    def to_dict(self, multipliers: int) -> dict[str, Any]:
        d = asdict(self)
        d.update(cycles=self.cycles, bound=self.bound, utilisation=self.utilisation(multipliers))
        return d


@dataclass
class AcceleratorEstimate:
    """FPS, GOPS, utilisation and the per-layer table of one model on one accelerator."""

    model: str
    resolution: tuple[int, int]
    config: AcceleratorConfig
    layers: list[LayerCost]
    excluded_macs: int
    assumptions: list[str] = field(default_factory=list)

    @property
    def cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def fps(self) -> float:
        return self.config.clock_mhz * 1e6 / self.cycles

    @property
    def latency_ms(self) -> float:
        return 1e3 / self.fps

    @property
    def gops(self) -> float:
        return 2 * self.macs * self.fps / 1e9

    @property
    def utilisation(self) -> float:
        return self.macs / (self.cycles * self.config.multipliers)

    @property
    def gops_per_dsp(self) -> float:
        return self.gops / self.config.dsps

    @property
    def memory_bound_layers(self) -> list[LayerCost]:
        return [layer for layer in self.layers if layer.bound == "memory"]

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolution": list(self.resolution),
            "accelerator": self.config.name,
            "fps": self.fps,
            "latency_ms": self.latency_ms,
            "gops": self.gops,
            "peak_gops": self.config.peak_gops,
            "mac_utilisation": self.utilisation,
            "gops_per_dsp": self.gops_per_dsp,
            "dsps": self.config.dsps,
            "macs": self.macs,
            "excluded_macs": self.excluded_macs,
            "cycles": self.cycles,
            "layers": len(self.layers),
            "memory_bound_layers": len(self.memory_bound_layers),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "config": asdict(self.config),
            "assumptions": self.assumptions,
            "layers": [layer.to_dict(self.config.multipliers) for layer in self.layers],
        }

    def summary_table(self) -> Table:
        """One row: resolution, FPS, latency, GOPS, peak, MAC utilisation, GOPS/DSP, memory-bound layers."""
        s = self.summary()
        return Table(f"{self.model} on {self.config.name} (W{self.config.bits}A{self.config.bits})",
                     ["res", "FPS", "ms", "GOPS", "peak", "MAC util %", "GOPS/DSP", "mem-bound layers"],
                     [[s["resolution"][0], f"{s['fps']:.1f}", f"{s['latency_ms']:.3f}", f"{s['gops']:.1f}",
                       f"{s['peak_gops']:.1f}", f"{100 * s['mac_utilisation']:.1f}",
                       f"{s['gops_per_dsp']:.3f}",
                       f"{s['memory_bound_layers']}/{s['layers']}"]], align="r" * 8)

    def layer_table(self) -> Table:
        """Per layer: kind, engine, MACs, compute and memory cycles, which bounds it, utilisation."""
        return Table("", ["layer", "kind", "engine", "MMAC", "compute cyc", "memory cyc", "bound", "util %"],
                     [[layer.name, layer.kind, layer.engine, f"{layer.macs / 1e6:.2f}", layer.compute_cycles,
                       layer.memory_cycles, layer.bound,
                       f"{100 * layer.utilisation(self.config.multipliers):.1f}"]
                      for layer in self.layers], align="lllrrrlr")

    def to_markdown(self) -> str:
        s = self.summary()
        lines = [
            f"## {self.model} at {self.resolution[0]}×{self.resolution[1]} on {self.config.name}",
            "",
            f"{s['fps']:.1f} FPS ({s['latency_ms']:.3f} ms), {s['gops']:.1f} GOPS of "
            f"{s['peak_gops']:.1f} peak, "
            f"MAC utilisation {100 * s['mac_utilisation']:.1f} %, {s['gops_per_dsp']:.3f} GOPS/DSP "
            f"({s['dsps']:.0f} DSPs), {s['memory_bound_layers']} of {s['layers']} layers memory-bound.",
            "",
            self.layer_table().markdown(heading="").rstrip("\n"),
        ]
        lines += ["", "Assumptions:", ""] + [f"- {a}" for a in self.assumptions]
        return "\n".join(lines) + "\n"


def estimate(
    model: nn.Module | OperatorList,
    accelerator: str | AcceleratorConfig = "trio-zcu102",
    resolution: int | None = None,
    include_head: bool = False,
) -> AcceleratorEstimate:
    """Estimate ``model`` (or its operator list) on the accelerator.

    Example::

        >>> est = estimate(create_model("efficientvit_b1"))
        >>> round(est.fps), round(100 * est.utilisation)
        (779, 95)
    """
    cfg = get_accelerator(accelerator) if isinstance(accelerator, str) else accelerator
    ops = model if isinstance(model, OperatorList) else extract_operators(model, resolution, fold_bn=True)
    if ops.input_shape[0] != 1:
        raise VitedgeError("the accelerator model estimates one frame at a time; extract with batch_size=1")
    mapped = [o for o in ops if include_head or not _in_head(o)]
    layers = _Mapper(cfg).map(mapped)
    if layers:  # the input image comes from DDR
        first = layers[0]
        image_bytes = math.prod(ops.input_shape) * cfg.bits // 8
        layers[0] = replace(
            first,
            ddr_bytes=first.ddr_bytes + image_bytes,
            memory_cycles=math.ceil((first.ddr_bytes + image_bytes) / cfg.ddr_bytes_per_cycle),
        )
    excluded = ops.macs - sum(o.macs for o in mapped)
    return AcceleratorEstimate(
        model=ops.model,
        resolution=tuple(ops.input_shape[2:]),
        config=cfg,
        layers=layers,
        excluded_macs=excluded,
        assumptions=assumptions(cfg, include_head),
    )


_PUBLISHED_LANE_RULES = [
    "DW → PW fusion: max(DW, PW + ⌈C/PE⌉·K²) cycles (the authors' early model: the PW is priced on "
    "all lanes while the RPE runs the DW, so a fused layer may show > 100 % utilisation; "
    "strict_lanes=True books no lane twice)",
    "linear attention: KᵀV and Q(KV) per head on MAT + RPE lanes (tokens as the batch); "
    "denominator and division (log2 divisor: a shift) on the R-MAC engine, pipelined head by head: "
    "Σ max(MAT_h, RPE_h−1) + RPE_last",
]
_STRICT_LANE_RULES = [
    "DW → PW fusion: max(DW, PW + DW·S/(M+S) + ⌈C/PE⌉·K²) cycles (strict lanes: the RPE "
    "joins the PW after its DW share)",
    "linear attention: KᵀV and Q(KV) per head on MAT + RPE lanes (tokens as the batch); "
    "denominator and division (log2 divisor: a shift) on the R-MAC engine while the next head's "
    "matmuls run on the MAT lanes: heads·MAT_h + heads·RPE_h·S/(M+S) + RPE_last·M/(M+S)",
]


def assumptions(cfg: AcceleratorConfig, include_head: bool) -> list[str]:
    """The model's assumptions, in words, with this configuration's numbers."""
    return [
        f"array ({cfg.mat_lanes}×{cfg.pes} + {cfg.rpe_lanes}×{cfg.pes}) × {cfg.replication} = "
        f"{cfg.multipliers} multipliers at {cfg.clock_mhz:g} MHz, peak {cfg.peak_gops:.1f} GOPS "
        "(2 ops per MAC); "
        f"{cfg.mults_per_dsp} {cfg.bits}-bit products per DSP → {cfg.dsps:.0f} DSPs",
        f"W{cfg.bits}A{cfg.bits}: weights, feature maps and DDR traffic at {cfg.bits} bits per element",
        "point-wise / grouped 1×1 / generic convs and linear layers on MAT + RPE lanes: "
        "groups·⌈Cout_g/lanes⌉·⌈Cin_g/PE⌉·H·W·K²/L cycles (the authors' early model for one copy of the "
        "array; the L copies share the output pixels evenly)",
        "depth-wise convs on the R-MAC engine: ⌈H/lanes_RPE⌉·⌈C/PE⌉·W·K²/L cycles",
        *(_STRICT_LANE_RULES if cfg.strict_lanes else _PUBLISHED_LANE_RULES),
        "activations, residual adds, requantization, reshapes, concatenations: output stage / address "
        "generation, no extra cycles; BatchNorm folded into the convs",
        f"memory: weights read from DDR once per frame; feature maps stay on chip when a layer's input + "
        f"output fit in {cfg.buffer_kib:g} KiB, else they stream from/to DDR; DDR {cfg.ddr_gbps:g} GB/s = "
        f"{cfg.ddr_bytes_per_cycle:.1f} B/cycle (buffer size and bandwidth are assumptions, not published)",
        "per layer max(compute cycles, memory cycles); layers run back to back (no inter-layer overlap "
        "beyond DW → PW fusion)",
        "classifier head included"
        if include_head
        else "classifier head excluded (run by the host, as in the authors' early model)",
    ]


def _in_head(op: Operator) -> bool:
    return op.scope == "head" or op.scope.startswith("head.")


class _Mapper:
    def __init__(self, cfg: AcceleratorConfig) -> None:
        self.cfg = cfg

    def map(self, ops: Sequence[Operator]) -> list[LayerCost]:
        layers: list[LayerCost] = []
        fused_into: set[int] = set()
        attention: dict[str, list[Operator]] = {}
        for i, op in enumerate(ops):
            if i in fused_into:
                continue
            if op.module_type in _LINEAR_ATTENTION and op.kind in ("matmul", "pool", "elementwise"):
                if op.kind == "matmul" or op.scope in attention:
                    if op.scope not in attention:
                        attention[op.scope] = []
                        layers.append(LayerCost(op.scope, "attention", "", 0, 0, 0, 0))  # placeholder
                    attention[op.scope].append(op)
                continue
            if op.kind in _FREE_KINDS:
                continue
            if op.kind in _UNMAPPABLE:
                raise VitedgeError(
                    f"{op.name} ({op.op}) cannot be mapped on {self.cfg.name}: "
                    f"{_UNMAPPABLE[op.kind]}; this accelerator runs convolutions and ReLU "
                    "linear attention only"
                )
            if op.kind == "depthwise":
                consumer = _consumer(ops, i)
                if consumer is not None:
                    fused_into.add(consumer)
                    layers.append(self._fused(op, ops[consumer]))
                    continue
                layers.append(self._layer(op, "depthwise", "RPE", self._dw_cycles(op)))
            elif op.kind in ("pointwise", "conv"):
                layers.append(self._layer(op, op.kind, "MAT+RPE", self._conv_cycles(op)))
            elif op.kind == "matmul":  # a linear layer outside attention
                m, k = _rows(op), op.input_shapes[0][-1]
                n = op.output_shape[-1]
                layers.append(self._layer(op, "matmul", "MAT+RPE", self._pw_cycles(n, k, m)))
            elif op.kind == "pool":
                layers.append(
                    self._layer(op, "pool", "RPE", math.ceil(op.input_elems / self.cfg.rpe_multipliers))
                )
            else:  # pragma: no cover - KINDS is closed
                raise AssertionError(op.kind)
        return [
            self._attention(layer.name, attention[layer.name])
            if layer.kind == "attention" and not layer.engine
            else layer
            for layer in layers
        ]

    # ---- cycle formulas -----------------------------------------------------------------
    def _pw_cycles(self, c_out: int, c_in: int, pixels: int, kernel: int = 1, groups: int = 1) -> int:
        c = self.cfg
        return math.ceil(
            groups * math.ceil(c_out / c.lanes) * math.ceil(c_in / c.pes) * pixels * kernel / c.replication
        )

    def _conv_cycles(self, op: Operator) -> int:
        _, c_out, h, w = op.output_shape
        return self._pw_cycles(
            c_out // op.groups,
            op.weight_shape[1],
            op.output_shape[0] * h * w,
            math.prod(op.kernel),
            op.groups,
        )

    def _dw_cycles(self, op: Operator) -> int:
        c = self.cfg
        n, ch, h, w = op.output_shape
        return math.ceil(
            n * math.ceil(h / c.rpe_lanes) * math.ceil(ch / c.pes) * w * math.prod(op.kernel) / c.replication
        )

    # ---- layers -------------------------------------------------------------------------
    def _memory(self, ops: Sequence[Operator]) -> int:
        """DDR bytes of a layer: its weights, plus its feature maps if they overflow the buffer."""
        per_elem = self.cfg.bits / 8
        weights = sum(o.weight_elems for o in ops) * per_elem
        maps = (ops[0].input_elems + ops[-1].output_elems) * per_elem
        spill = maps if maps > self.cfg.buffer_kib * 1024 else 0
        return int(math.ceil(weights + spill))

    def _layer(
        self, op: Operator, kind: str, engine: str, cycles: int, ops: Sequence[Operator] = ()
    ) -> LayerCost:
        ops = tuple(ops) or (op,)
        ddr = self._memory(ops)
        return LayerCost(
            op.scope or op.name,
            kind,
            engine,
            sum(o.macs for o in ops),
            int(cycles),
            math.ceil(ddr / self.cfg.ddr_bytes_per_cycle),
            ddr,
            tuple(o.name for o in ops),
        )

    def _fused(self, dw: Operator, pw: Operator) -> LayerCost:
        c = self.cfg
        dw_cycles = self._dw_cycles(dw)
        setup = math.ceil(dw.output_shape[1] / c.pes) * math.prod(dw.kernel)
        # strict: the RPE joins the PW only once its DW share is done
        rpe_busy = math.ceil(dw_cycles * c.rpe_lanes / c.lanes) if c.strict_lanes else 0
        cycles = max(dw_cycles, self._conv_cycles(pw) + rpe_busy + setup)
        layer = self._layer(dw, "dw→pw", "RPE→MAT+RPE", cycles, (dw, pw))
        return replace(layer, name=f"{dw.scope} → {pw.scope}")

    def _attention(self, scope: str, ops: list[Operator]) -> LayerCost:
        """KᵀV and Q(KV) on the MAT, denominator and division on the RPE, pipelined per head."""
        heads = max(o.input_shapes[0][0] for o in ops if o.kind == "matmul")
        mat_per_head = 0
        rpe_work = 0  # multiply-accumulates and divisions on the R-MAC engine, all heads
        float_ones_column = ops[0].module_type == "LiteMLA"
        for o in ops:
            if o.kind == "matmul":
                *outer, m, k = o.input_shapes[0]  # a matmul by a constant (Kᵀ1) arrives as a 2-D mm
                batch = math.prod(outer)
                n = o.input_shapes[1][-1] if len(o.input_shapes) > 1 else o.output_shape[-1]
                den_cols = n if n == 1 else (1 if float_ones_column else 0)
                if n - den_cols:
                    mat_per_head += self._pw_cycles(n - den_cols, k, m) * batch // heads
                rpe_work += batch * m * k * den_cols
            elif o.kind == "elementwise" and o.op == "div":
                rpe_work += o.output_elems
            elif o.kind == "pool":  # Kᵀ1 as a sum over tokens
                rpe_work += o.input_elems
        c = self.cfg
        rpe_per_head = math.ceil(rpe_work / heads / c.rpe_multipliers)
        if c.strict_lanes:  # while the RPE divides, the matmuls run on the MAT lanes alone
            cycles = (
                heads * mat_per_head
                + math.ceil(heads * rpe_per_head * c.rpe_lanes / c.lanes)
                + math.ceil(rpe_per_head * c.mat_lanes / c.lanes)
            )
        else:  # head h's divisor overlaps head h+1's matmuls
            cycles = (heads - 1) * max(mat_per_head, rpe_per_head) + mat_per_head + rpe_per_head
        matmuls = [o for o in ops if o.kind == "matmul"]
        return self._layer(matmuls[0], "attention", "MAT+RPE/RPE", cycles, ops)


def _rows(op: Operator) -> int:
    return math.prod(op.input_shapes[0][:-1])


def _consumer(ops: Sequence[Operator], i: int) -> int | None:
    """Index of the point-wise conv that reads depth-wise conv ``i``'s output (through free ops only)."""
    shape = ops[i].output_shape
    for j in range(i + 1, len(ops)):
        if ops[j].kind in _FREE_KINDS:
            continue
        if ops[j].kind == "pointwise" and ops[j].input_shapes and ops[j].input_shapes[0] == shape:
            return j
        return None
    return None
