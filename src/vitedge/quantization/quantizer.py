"""Fake quantization: the quantize→dequantize op, range observers, and the modules that hold them.

Vocabulary: a *quantization point* is one tensor that the integer model stores in low precision.
A :class:`Quantizer` simulates one point: ``x̂ = (clamp(round(x / s) + z, qmin, qmax) − z) · s``
with ``scale`` ``s`` and ``zero_point`` ``z`` stored under those names, per tensor or per output
channel (axis 0), exactly the parameters of an ONNX ``QuantizeLinear``/``DequantizeLinear`` pair.
An *observer* watches calibration data and proposes the clipping range ``[lo, hi]`` the scale
comes from. A :class:`Log2Quantizer` rounds a positive tensor to a power of two (Trio-ViT's
attention divisor).

Gradients are straight-through: ``∂x̂/∂x`` is 1 inside the grid's range and 0 outside. While a
scale is learned (QAT), the LSQ estimator gives its gradient — ``round(x/s) − x/s`` inside,
``qmin − z`` or ``qmax − z`` outside — scaled by ``1/sqrt(n · qmax)`` (Esser et al., 2020).

Numerics: with a fixed scale the op is ``torch.fake_quantize_per_{tensor,channel}_affine``, which
the ONNX exporter turns into a Q/DQ pair; the learnable path computes the same values. In
evaluation a per-tensor point divides by its scale as ONNX Runtime does (see
:mod:`vitedge.quantization.runtime_arith`).

Example::

    q = Quantizer(QuantSpec(bits=8, symmetric=False), kind="input")
    q.observing = True; q(calibration_batch); q.observing = False
    q.update_qparams(); q.fake_quant = True
    y = q(x)            # on the 0…255 grid of q.scale, q.zero_point
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from vitedge.quantization.config import ObserverConfig, _choice
from vitedge.quantization.runtime_arith import exact_mode, quantize_to_grid, requantize

__all__ = [
    "Log2Quantizer",
    "Observer",
    "QuantSpec",
    "Quantizer",
    "fake_quantize",
    "log2_round",
    "lsq_fake_quantize",
    "make_observer",
    "qparams_from_range",
]

# The smallest scale we emit: a constant (all-zero) tensor still gets a finite positive scale.
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class QuantSpec:
    """The integer grid of one point: bits, signedness, and one scale per tensor or channel.

    ``symmetric`` grids are signed with zero point 0: ``[-2^(b-1), 2^(b-1) - 1]``, or
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` when ``narrow`` (weights: −127…127, so ``-w`` is
    representable and int8 × int8 products never reach −128·−128). Asymmetric grids are unsigned
    ``[0, 2^b − 1]`` with a zero point. ``per_channel`` puts one scale on each slice of axis 0.
    """

    bits: int = 8
    symmetric: bool = False
    narrow: bool = False
    per_channel: bool = False
    observer: str = "minmax"

    @property
    def qmin(self) -> int:
        if not self.symmetric:
            return 0
        return -(1 << (self.bits - 1)) + int(self.narrow)

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1 if not self.symmetric else (1 << (self.bits - 1)) - 1

    @property
    def dtype(self) -> str:
        """The integer type a deployment stores: ``int8``, ``uint8``, ``int4`` …"""
        return f"{'' if self.symmetric else 'u'}int{self.bits}"


# --------------------------------------------------------------------------------------------
# the op


def _view_channels(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel (axis 0) vector shaped to broadcast against an ``ndim`` tensor."""
    return t.reshape(-1, *([1] * (ndim - 1))) if t.numel() > 1 else t


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  per_channel: bool = False) -> torch.Tensor:
    """Quantize→dequantize with a fixed scale (straight-through gradient for ``x`` only).

    ``scale`` float32 and ``zero_point`` int32, one element (per tensor) or one per slice of
    axis 0 (``per_channel``). Exports to ONNX as QuantizeLinear/DequantizeLinear.
    """
    if per_channel:
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, 0, qmin, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)


# Straight-through forms that keep the forward value exact: ``a + (b - b.detach())`` is ``a``
# bit for bit (the bracket is an exact zero) with ``b``'s gradient; ``b + (a - b).detach()``
# would lose ``a`` to cancellation when ``b`` is large.


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    return torch.round(v).detach() + (v - v.detach())


def _grad_scale(t: torch.Tensor, factor: float) -> torch.Tensor:
    """``t`` in the forward pass, with its gradient multiplied by ``factor``."""
    scaled = t * factor
    return t.detach() + (scaled - scaled.detach())


def lsq_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                      qmax: int) -> torch.Tensor:
    """Quantize→dequantize with a learnable ``scale`` (LSQ gradient), same values as
    :func:`fake_quantize`. ``scale``/``zero_point`` broadcast over axis 0 when they have more
    than one element."""
    per_scale = max(1, x.numel() // max(1, scale.numel()))
    s = _grad_scale(scale.clamp(min=MIN_SCALE), 1.0 / math.sqrt(per_scale * max(1, qmax)))
    s = _view_channels(s, x.ndim)
    z = _view_channels(zero_point, x.ndim).to(x.dtype)
    q = torch.clamp(_round_ste(x * (1.0 / s)) + z, qmin, qmax)
    return (q - z) * s


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[lo, hi]`` onto ``spec``'s grid.

    Symmetric: ``s = max(|lo|, |hi|) / qmax``, ``z = 0``. Asymmetric: the range is first widened
    to contain 0 (so zero padding is exact, as ONNX requires), ``s = (hi − lo) / (qmax − qmin)``,
    ``z = round(qmin − lo / s)``.
    """
    lo, hi = lo.float(), hi.float()
    if spec.symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = (amax / spec.qmax).clamp(min=MIN_SCALE)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    scale = ((hi - lo) / (spec.qmax - spec.qmin)).clamp(min=MIN_SCALE)
    zero_point = torch.round(spec.qmin - lo / scale).clamp(spec.qmin, spec.qmax)
    return scale, zero_point.to(torch.int32)


# --------------------------------------------------------------------------------------------
# observers


class _Sample:
    """A uniform random subsample of every value seen, at most ``cap`` values.

    Each batch contributes the same number of values; when the pool overflows, it is halved at
    random and later batches contribute half as many, so every batch keeps equal weight.
    """

    def __init__(self, cap: int, seed: int = 0) -> None:
        self.cap = cap
        self.per_batch = cap // 8
        self.chunks: list[torch.Tensor] = []
        self.size = 0
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        if flat.numel() > self.per_batch:
            idx = torch.randint(flat.numel(), (self.per_batch,), generator=self.gen)
            flat = flat[idx.to(flat.device)]
        self.chunks.append(flat)
        self.size += flat.numel()
        if self.size > self.cap:
            pool = torch.cat(self.chunks)
            keep = torch.randperm(pool.numel(), generator=self.gen)[: pool.numel() // 2]
            self.chunks = [pool[keep.to(pool.device)]]
            self.size = self.chunks[0].numel()
            self.per_batch = max(1, self.per_batch // 2)

    def values(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0)


class Observer:
    """Tracks the exact min and max of what it sees (per tensor, or per slice of axis 0) and
    proposes a clipping range for a grid. Subclasses choose the range differently."""

    name = "minmax"

    def __init__(self, cfg: ObserverConfig, per_channel: bool) -> None:
        self.cfg = cfg
        self.per_channel = per_channel
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    @property
    def seen(self) -> bool:
        return self.lo is not None

    def reset(self) -> None:
        self.lo = self.hi = None

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().float()
        if self.per_channel:
            flat = x.reshape(x.shape[0], -1)
            return flat.amin(dim=1), flat.amax(dim=1)
        return x.amin().reshape(1), x.amax().reshape(1)

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)

    def observed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range seen so far."""
        if self.lo is None:
            raise RuntimeError("observer saw no data")  # invariant: calibrate feeds every point
        return self.lo, self.hi

    def choose(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The range to quantize (min-max: what was seen)."""
        return self.observed()


class EMAObserver(Observer):
    """Exponential moving average of each batch's min and max (QAT's running range)."""

    name = "ema"

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            m = self.cfg.ema_momentum
            self.lo = (1 - m) * self.lo + m * lo
            self.hi = (1 - m) * self.hi + m * hi


class _SampledObserver(Observer):
    """Keeps values to search a range on: every value of a per-channel tensor (weights, seen
    once), a bounded random subsample of a per-tensor activation."""

    def __init__(self, cfg: ObserverConfig, per_channel: bool) -> None:
        super().__init__(cfg, per_channel)
        self._data: list[torch.Tensor] = []
        self._sample = _Sample(cfg.samples)

    def reset(self) -> None:
        super().reset()
        self._data, self._sample = [], _Sample(self.cfg.samples)

    def update(self, x: torch.Tensor) -> None:
        super().update(x)
        if self.per_channel:
            self._data.append(x.detach().float().reshape(x.shape[0], -1))
        else:
            self._sample.add(x)

    def values(self) -> torch.Tensor:
        """(C, n) for per-channel, (1, n) for per-tensor observers."""
        if self.per_channel:
            return torch.cat(self._data, dim=1)
        return self._sample.values().reshape(1, -1)


class PercentileObserver(_SampledObserver):
    """Clips at the ``percentile`` (and ``100 − percentile``) of the values seen."""

    name = "percentile"

    def choose(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.values()
        p = self.cfg.percentile / 100.0
        if spec.symmetric:
            hi = torch.quantile(values.abs(), p, dim=1)
            return -hi, hi
        return torch.quantile(values, 1.0 - p, dim=1), torch.quantile(values, p, dim=1)


class MSEObserver(_SampledObserver):
    """Searches ``[lo, hi]·(1 − 0.01 i)``, i < ``mse_candidates``, for the least
    ``mean |x − Q(x)|^mse_norm`` (per channel for per-channel points)."""

    name = "mse"

    def choose(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.values()
        lo0, hi0 = self.observed()
        best_err = torch.full_like(lo0, float("inf"))
        best_lo, best_hi = lo0.clone(), hi0.clone()
        for i in range(self.cfg.mse_candidates):
            shrink = 1.0 - 0.01 * i
            lo, hi = lo0 * shrink, hi0 * shrink
            scale, zp = qparams_from_range(lo, hi, spec)
            q = torch.clamp(torch.round(values / scale[:, None]) + zp[:, None], spec.qmin, spec.qmax)
            err = ((q - zp[:, None]) * scale[:, None] - values).abs().pow(self.cfg.mse_norm).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
        return best_lo, best_hi


_OBSERVERS: dict[str, type[Observer]] = {
    "minmax": Observer, "ema": EMAObserver, "percentile": PercentileObserver, "mse": MSEObserver,
}


def make_observer(name: str, cfg: ObserverConfig, per_channel: bool) -> Observer:
    """An observer by name: ``minmax``, ``percentile``, ``mse`` or ``ema``."""
    return _OBSERVERS[_choice(name, tuple(_OBSERVERS), "observer")](cfg, per_channel)


# --------------------------------------------------------------------------------------------
# modules


class Quantizer(nn.Module):
    """One quantization point: buffers ``scale`` (float32), ``zero_point`` (int32) and the
    observed range ``observed_min``/``observed_max`` (for the report).

    Three switches, all off until calibration turns fake quantization on:

    - ``fake_quant``: apply quantize→dequantize (off: the identity); never on while ``in_float``
      (the precision plan keeps the point in float: :mod:`~vitedge.quantization.plan`);
    - ``observing``: feed each input to the observer (``track``: also refresh the scale from
      it after every batch, the classic QAT fake-quant with an EMA observer);
    - :meth:`learn`: learn the scale with the LSQ gradient, through the parameter
      ``log_scale`` (``scale = exp(log_scale)``): the step size stays positive and Adam's
      roughly constant-size updates become relative ones — a linear step size of 1e-3 would not
      survive a few AdamW steps at the trainer's learning rate. ``scale`` follows every forward,
      so checkpoints, the report and export always see the current value.

    ``kind`` says what the point is (``"weight"``, ``"input"``, ``"residual"``, ``"attn.q"``…).
    """

    def __init__(self, spec: QuantSpec, kind: str, channels: int = 1,
                 observer_cfg: ObserverConfig | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.kind = kind
        self.observer_cfg = observer_cfg or ObserverConfig()
        # per tensor: 0-d, as ONNX QuantizeLinear wants (ORT's QLinearAdd refuses shape (1,))
        shape = (channels,) if spec.per_channel else ()
        self.register_buffer("scale", torch.ones(shape))
        self.register_parameter("log_scale", None)
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("observed_min", torch.zeros(shape))
        self.register_buffer("observed_max", torch.zeros(shape))
        self.observer = make_observer(spec.observer, self.observer_cfg, spec.per_channel)
        self.in_float = False  # the precision plan keeps it in float: fake_quant stays off
        self.fake_quant = False
        self.observing = False
        self.track = False

    @property
    def learning(self) -> bool:
        return self.log_scale is not None

    @property
    def fixed(self) -> bool:
        """Fake-quantizing with a scale that does not change in this forward: a calibrated one,
        or a learned one under evaluation mid-QAT (no gradient). Where the integer runtime's
        arithmetic is emulated (:mod:`~vitedge.quantization.runtime_arith`)."""
        if not self.fake_quant:
            return False
        if self.learning:
            if not exact_mode(self.log_scale):
                return False
            # an optimizer step (or an EMA update) moved log_scale since the last forward: the
            # integer paths read ``scale``, so the frozen model's value must be there
            self.sync_scale()
        return True

    @property
    def span(self) -> float:
        """The largest ``|q − z|`` on this (per-tensor) point's grid: a bound for accumulators."""
        z = self.zero_point
        return float(max(self.spec.qmax - z.max(), z.min() - self.spec.qmin))

    def grid_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """``q − z`` as the runtime's QuantizeLinear stores ``x`` (a division; as float)."""
        return quantize_to_grid(x, self.scale, self.zero_point, self.spec.qmin, self.spec.qmax)

    def requantize(self, acc: torch.Tensor, acc_scale: torch.Tensor) -> torch.Tensor:
        """``q − z`` of an integer accumulator worth ``acc · acc_scale``, rounded as ONNX Runtime's
        QLinearConv / QLinearMatMul round it (``m = acc_scale / s`` in float32)."""
        return requantize(acc, acc_scale / self.scale, self.zero_point, self.spec.qmin, self.spec.qmax)

    def learn(self, enabled: bool = True) -> None:
        """Start learning the scale (a ``log_scale`` parameter from the current scale) or stop
        (keep the learned value in ``scale``, drop the parameter)."""
        if enabled and self.log_scale is None:
            self.log_scale = nn.Parameter(self.scale.detach().clamp(min=MIN_SCALE).log())
        elif not enabled and self.log_scale is not None:
            self.sync_scale()
            del self.log_scale
            self.register_parameter("log_scale", None)

    @torch.no_grad()
    def sync_scale(self) -> None:
        """While learning, set ``scale`` from ``log_scale`` (an optimizer step changes the latter)."""
        if self.log_scale is not None:
            self.scale.copy_(self.log_scale.exp())

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # torch's hook
        self.sync_scale()  # a checkpoint's ``scale`` is always the current step size
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def set_observer(self, name: str) -> None:
        """Swap the observer (e.g. to ``"ema"`` for QAT), starting from the current range."""
        observer = make_observer(name, self.observer_cfg, self.spec.per_channel)
        observer.lo = self.observed_min.detach().clone().reshape(-1)
        observer.hi = self.observed_max.detach().clone().reshape(-1)
        self.observer = observer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            if self.track and self.kind == "weight":
                self.observer.reset()  # a weight's range is that of the current weights
            self.observer.update(x)
            if self.track:
                self.update_qparams()
        if not self.fake_quant:
            return x
        if self.learning:
            scale = self.log_scale.exp()
            with torch.no_grad():
                self.scale.copy_(scale)
            if not exact_mode(x, scale):  # training: the LSQ gradient
                return lsq_fake_quantize(x, scale, self.zero_point, self.spec.qmin, self.spec.qmax)
            # evaluation mid-QAT (no gradient): the frozen model's exact arithmetic below, so the
            # per-epoch top-1 is the one the frozen, exported model gets
        qmin = self.spec.qmin
        if not self.spec.per_channel and exact_mode(x):
            # the runtime's QuantizeLinear divides by the scale; torch's fake-quant multiplies
            # by its inverse, which rounds a near-tie the other way (runtime_arith)
            return self.grid_offsets(x) * self.scale
        qmax = self.spec.qmax
        short = self.spec.symmetric and (self.spec.narrow or self.spec.bits < 8)
        if short and torch.onnx.is_in_onnx_export():
            # ONNX's int8 grid is −128…127: clip to the narrow or shorter grid first
            # (constant-folded on weights), then quantize on the full one — the same values.
            # 7-bit weights exported so keep AVX2 CPUs without VNNI exact (no int16 saturation).
            s = _view_channels(self.scale, x.ndim)
            x = torch.maximum(x, qmin * s)
            if qmax < 127:
                x = torch.minimum(x, qmax * s)
            qmin, qmax = -128, 127
        return fake_quantize(x, self.scale, self.zero_point, qmin, qmax,
                             per_channel=self.spec.per_channel)

    @torch.no_grad()
    def update_qparams(self) -> None:
        """Set ``scale``/``zero_point`` from the observer's chosen range."""
        lo, hi = self.observer.choose(self.spec)
        scale, zero_point = qparams_from_range(lo, hi, self.spec)
        seen_lo, seen_hi = self.observer.observed()
        for dst, src in ((self.scale, scale), (self.zero_point, zero_point),
                         (self.observed_min, seen_lo), (self.observed_max, seen_hi)):
            dst.copy_(src.reshape(dst.shape))

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        """Observe ``x`` alone and set the scale from it (weights: no data needed)."""
        self.observer.reset()
        self.observer.update(x)
        self.update_qparams()
        self.observer.reset()

    def representable(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float range the grid covers, ``[(qmin − z)·s, (qmax − z)·s]``."""
        self.sync_scale()
        s, z = self.scale.detach(), self.zero_point.float()
        return (self.spec.qmin - z) * s, (self.spec.qmax - z) * s

    def extra_repr(self) -> str:
        gran = f"per-channel({self.scale.numel()})" if self.spec.per_channel else "per-tensor"
        return f"kind={self.kind}, {self.spec.dtype} [{self.spec.qmin}, {self.spec.qmax}], {gran}, " \
               f"observer={self.observer.name}"


def _exp2_values(low: int, high: int, like: torch.Tensor) -> torch.Tensor:
    """``2^low … 2^high``: the divisor is looked up in this table (an exported Gather; a Pow with
    a tensor exponent costs OpenVINO about 0.5 ms on B1's 800-element LiteMLA divisors)."""
    return torch.pow(2.0, torch.arange(low, high + 1, dtype=torch.float32, device=like.device)).to(like.dtype)


def _window_index(d: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``clamp(floor(log2 d + 1/2), low, high) − low`` as int64, in the few ops the exported graph
    runs (Clip, Mul, Log, Mul, Cast, Clip): ``v = ln(d·√2·2^−low)/ln 2`` is ``log2 d + 1/2 − low``;
    the cast truncates, which is the floor wherever the clip keeps the result (``v ≥ −1/2``).
    Where ``d`` lies within float error of a rounding point ``2^(y+1/2)`` either exponent may come
    out (the plain form below decides those exactly)."""
    d = d.clamp(min=2.0 ** (low - 1))
    v = torch.log(d * (math.sqrt(2.0) * 2.0**-low)) * (1.0 / math.log(2.0))
    return v.to(torch.int64).clamp(0, high - low)


def log2_round(d: torch.Tensor, low: int | None = None, high: int | None = None) -> torch.Tensor:
    """Trio-ViT's exponent of a positive tensor: ``y = floor(log2 d)``, plus 1 where
    ``d / 2^y > 2^(y+1) / d`` (i.e. rounding in the log domain at ``2^(y + 1/2)``).
    Zero maps to ``-inf`` (the caller clamps). With a window ``[low, high]`` the result is
    clamped to it and computed as the export computes it (:func:`_window_index`).

    The floor need not be exact: where a runtime's ``log2`` lands one below an exact power of two,
    the mantissa is 2 and the correction adds the 1 back (and symmetrically just below one)."""
    d = d.clamp(min=0.0)
    if low is not None and high is not None:
        return (_window_index(d, low, high) + low).to(d.dtype)
    y = torch.floor(torch.log2(d))
    # d / 2^y > 2^(y+1) / d  ⇔  m² > 2 with the mantissa m = d / 2^y ∈ [1, 2): no underflow of d²
    m = d / torch.pow(2.0, y)
    return y + (m * m > 2.0).to(d.dtype)


class Log2Quantizer(nn.Module):
    """Rounds a non-negative tensor to ``2^y`` with ``y`` on a ``bits``-bit exponent grid
    ``[exp_min, exp_min + 2^bits − 1]`` (the linear-attention divisor: a shift in hardware).

    ``exp_min`` is a buffer; with ``calibrate_window`` (``exp_min=None``) the window is placed so
    its top exponent is the rounded log2 of the largest calibration value. With ``slide`` a fixed
    window keeps ``exp_min`` unless the calibration maximum rounds above its top, and then moves
    up to end there: a saturated divisor caps every large denominator at once (the attention
    output of a 1000-token frame grows by the factor it lost), while the bottom of the window
    only coarsens the rare tiny ones. Straight-through gradient.
    """

    kind = "attn.divisor"

    def __init__(self, bits: int = 4, exp_min: int | None = -6, slide: bool = False) -> None:
        super().__init__()
        self.bits = bits
        self.calibrate_window = exp_min is None
        self.slide = slide
        self.register_buffer("exp_min", torch.tensor(-6 if exp_min is None else exp_min, dtype=torch.int32))
        self.register_buffer("observed_max", torch.zeros(()))
        self.in_float = False
        self.fake_quant = False
        self.observing = False
        self.track = False
        self._max: torch.Tensor | None = None

    @property
    def fixed(self) -> bool:
        return self.fake_quant  # no learned scale: its window is fixed

    @property
    def exp_max(self) -> int:
        return int(self.exp_min) + (1 << self.bits) - 1

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self.observing:
            m = d.detach().amax().float()
            self._max = m if self._max is None else torch.maximum(self._max, m)
        if not self.fake_quant:
            return d
        low, high = int(self.exp_min), self.exp_max
        rounded = _exp2_values(low, high, d)[_window_index(d, low, high)]
        if not d.requires_grad or torch.onnx.is_in_onnx_export():
            return rounded  # the straight-through term is 0: no Sub/Add pair in the exported graph
        return rounded.detach() + (d - d.detach())

    @torch.no_grad()
    def update_qparams(self) -> None:
        if self._max is None:
            raise RuntimeError("log2 quantizer saw no data")  # invariant: calibrate feeds it
        self.observed_max.copy_(self._max)
        top = int(log2_round(self._max.clamp(min=2.0 ** -126)))
        if self.calibrate_window or (self.slide and top > self.exp_max):
            self.exp_min.fill_(top - (1 << self.bits) + 1)
        self._max = None

    def extra_repr(self) -> str:
        return f"bits={self.bits}, exponents=[{int(self.exp_min)}, {self.exp_max}]"
