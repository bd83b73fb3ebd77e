"""Quantized twins of the layers that compute: each holds its float weights (same parameter names
as the layer it replaces, so state-dict keys stay those of the float model) plus the
:class:`~vitedge.quantization.quantizer.Quantizer` of every operand it consumes.

- :class:`QuantConv2d` / :class:`QuantLinear`: ``input_quant`` and ``weight_quant`` (per output
  channel), and on Trio-ViT sites a ``migration`` or ``shift`` transform before ``input_quant``.
- :class:`QuantResidualBlock` (MIT) / :class:`QuantResidual` (MSRA): both add operands
  quantized; the shortcut quantizer *is* the first conv's input quantizer where the branch starts
  with one (one tensor, one scale — as a QDQ graph stores it).
- :class:`QuantLiteMLA`: per scale branch, ``q``, ``k``, ``v``, ``KᵀV``, ``Kᵀ1``, the numerator
  and the denominator (uniform or log2); the attention output is the projection's input point.
- :class:`QuantCascadedGroupAttention`: per head, ``q``, ``k``, ``v`` and the softmax output
  (the operands of both attention matmuls); the output is the projection's input point.

A conv's bias is simulated as an integer runtime stores it: int32 at scale ``s_in·s_w``
(``round(b / (s_in·s_w))·s_in·s_w``, straight-through in training), with the Trio-ViT shift
compensation folded in first — what ONNX Runtime's QLinearConv adds to its accumulator. Left
float, the rounding it does there (up to half an accumulator step per output) was a main source
of one-step disagreements between the simulation and the runtime. Linear layers keep a float
bias (ONNX Runtime adds it after the integer matmul).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.models.efficientvit_mit import LiteMLA, ResidualBlock
from vitedge.models.efficientvit_msra import CascadedGroupAttention, Residual
from vitedge.quantization.config import ObserverConfig
from vitedge.quantization.quantizer import Log2Quantizer, Quantizer, QuantSpec
from vitedge.quantization.runtime_arith import exact_mode, integer_accumulate, qlinear_add
from vitedge.quantization.trio import ChannelMigration, ChannelShift

__all__ = [
    "LinearAttentionPoints",
    "QuantCascadedGroupAttention",
    "QuantConv2d",
    "QuantLinear",
    "QuantLiteMLA",
    "QuantResidual",
    "QuantResidualBlock",
    "SoftmaxAttentionPoints",
]


class QuantConv2d(nn.Conv2d):
    """A conv computing on quantized input and weight: ``conv(Q_a(T(x)), Q_w(W)) + b`` where ``T``
    is the site's Trio-ViT transform (migration ``x / s`` or shift ``x − z``, else identity).

    Example::

        qconv = QuantConv2d(conv, QuantSpec(8, symmetric=True, narrow=True, per_channel=True),
                            QuantSpec(8), ObserverConfig())
    """

    def __init__(self, conv: nn.Conv2d, weight_spec: QuantSpec, input_spec: QuantSpec,
                 observer_cfg: ObserverConfig, *, migration: bool = False, shift: bool = False) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=conv.bias is not None,
                         padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)
        if migration and conv.groups != conv.in_channels:
            raise ValueError("channel migration needs a depthwise conv")  # invariant of trio.SITES
        self.migration = ChannelMigration(conv.in_channels) if migration else None
        self.shift = ChannelShift(conv.in_channels) if shift else None
        self.input_quant = Quantizer(input_spec, "input", observer_cfg=observer_cfg)
        self.weight_quant = Quantizer(weight_spec, "weight", conv.out_channels, observer_cfg)
        self.output_quant: Quantizer | None = None  # set where the output feeds an activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = self.requant_point
        if target is not None and self._integer_ready(target) and exact_mode(x, self.weight):
            y = self._integer_forward(x, target)  # already on target's grid
        else:
            y = self._compute(x)
        return y if self.output_quant is None else self.output_quant(y)

    @property
    def requant_point(self) -> Quantizer | None:
        """The point an integer runtime writes this conv's output to: its own ``output_quant``,
        else the one quantizer that reads the output unchanged (set by
        :func:`~vitedge.quantization.points.prepare`; not a submodule, so no state-dict key)."""
        return self.output_quant if self.output_quant is not None else self.__dict__.get("consumer")

    def _integer_ready(self, target: Quantizer) -> bool:
        points = (self.input_quant, self.weight_quant, target)
        return all(q.fixed for q in points) and not target.spec.per_channel \
            and (self.shift is None or self._bias_compensable())

    def _integer_forward(self, x: torch.Tensor, target: Quantizer) -> torch.Tensor:
        """The integer conv ONNX Runtime runs (QLinearConv): exact accumulator of the integer
        input and weight plus the int32 bias, requantized onto ``target``'s grid (see
        :mod:`~vitedge.quantization.runtime_arith`); returned dequantized."""
        x = self._transform(x)
        iq, wq = self.input_quant, self.weight_quant
        xi = iq.grid_offsets(x)
        w_scale = wq.scale.reshape(-1)
        wi = torch.round(wq(self.weight) / w_scale.view(-1, 1, 1, 1))
        bound = iq.span * float(wi.abs().sum(dim=(1, 2, 3)).max())
        acc = integer_accumulate(lambda a, b: self._conv_forward(a, b, None), xi, wi, bound)
        bias = self.folded_bias()
        if bias is not None:
            acc = acc + torch.round(bias / (iq.scale * w_scale)).double().view(1, -1, 1, 1)
        return target.requantize(acc, (iq.scale * w_scale).view(1, -1, 1, 1)) * target.scale

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """The site's Trio-ViT transform: migration ``x / s``, shift ``x − z``, or none."""
        if self.migration is not None:
            x = self.migration(x)
        if self.shift is not None:
            x = self.shift(x)
        return x

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        x = self._transform(x)
        xq = self.input_quant(x)
        weight = self.weight_quant(self.weight)
        export_bias = getattr(self, "export_bias", None)
        if export_bias is not None and torch.onnx.is_in_onnx_export():
            # one conv with a constant bias (compensation folded, integer-valued): the QDQ
            # pattern runtimes fuse, with no in-graph bias arithmetic that keeps a conv in float
            return self._conv_forward(xq, weight, export_bias)
        bias, extra = self.bias, None
        if self.shift is not None:
            comp = self.shift.compensation(self, weight, x)
            if self._bias_compensable():
                bias = comp.reshape(-1) if bias is None else bias + comp.reshape(-1)
            else:
                extra = comp  # a map, not a bias: added after the conv
        y = self._conv_forward(xq, weight, self.integer_bias(bias))
        return y if extra is None else y + extra

    def integer_bias(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        """``bias`` on the int32 grid of the accumulator (scale ``s_in·s_w``) while both operands
        are fake-quantized; unchanged otherwise (calibration, float mode)."""
        if bias is None or not (self.input_quant.fake_quant and self.weight_quant.fake_quant):
            return bias
        step = (self.input_quant.scale * self.weight_quant.scale).to(bias.dtype).reshape(-1)
        scaled = bias / step
        return (torch.round(scaled).detach() + (scaled - scaled.detach())) * step

    @torch.no_grad()
    def prepare_export(self) -> None:
        """Before tracing: the bias as a constant (shift compensation folded, on the int32 grid),
        so the exported conv carries exactly the bias the simulation adds."""
        if self.bias is not None or (self.shift is not None and self._bias_compensable()):
            self.register_buffer("export_bias", self.folded_bias().detach().clone(), persistent=False)

    def _bias_compensable(self) -> bool:
        return self.kernel_size == (1, 1) and self.padding in ((0, 0), 0)

    @torch.no_grad()
    def migrate(self, factor: torch.Tensor) -> None:
        """Divide the input by ``factor`` from now on and fold it into the filters (exact: each
        depthwise output channel reads one input channel)."""
        assert self.migration is not None
        per_out = factor.repeat_interleave(self.out_channels // self.in_channels)
        self.weight.mul_(per_out.view(-1, 1, 1, 1).to(self.weight))
        self.migration.factor.copy_(factor)

    @torch.no_grad()
    def folded_bias(self) -> torch.Tensor | None:
        """The bias an exporter writes for this conv: the float bias plus the shift compensation
        computed with the quantized weight (1×1 shift sites only; see ChannelShift), on the
        accumulator's int32 grid when the conv is fake-quantized."""
        if self.shift is None:
            return self.integer_bias(self.bias)
        if not self._bias_compensable():
            raise ValueError("the shift compensation of a k×k or padded conv is a map, not a bias")
        weight = self.weight_quant(self.weight)
        comp = self.shift.compensation(self, weight, weight.new_zeros(1, 1, 1, 1)).reshape(-1)
        return self.integer_bias(comp if self.bias is None else self.bias + comp)


class QuantLinear(nn.Linear):
    """A linear layer computing on quantized input and weight (per output feature)."""

    def __init__(self, linear: nn.Linear, weight_spec: QuantSpec, input_spec: QuantSpec,
                 observer_cfg: ObserverConfig) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(linear.weight)
            if linear.bias is not None:
                self.bias.copy_(linear.bias)
        self.input_quant = Quantizer(input_spec, "input", observer_cfg=observer_cfg)
        self.weight_quant = Quantizer(weight_spec, "weight", linear.out_features, observer_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.bias)


# --------------------------------------------------------------------------------------------
# residual adds


class _QuantAdd(nn.Module):
    """Both operands of a residual add quantized — the branch output (``branch_quant``) and the
    shortcut (``shortcut_quant``) — so the add runs as an int8 Add in deployment. Registered
    before the branch, so a shared shortcut point is reported under the residual's name."""

    def __init__(self, spec: QuantSpec, observer_cfg: ObserverConfig) -> None:
        super().__init__()
        self.branch_quant = Quantizer(spec, "residual.branch", observer_cfg=observer_cfg)
        self.shortcut_quant = Quantizer(spec, "residual.shortcut", observer_cfg=observer_cfg)

    @property
    def branch(self) -> nn.Module:
        raise NotImplementedError

    def add(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``Q(branch) + Q(shortcut)``; in evaluation, when a single quantizer reads the sum
        (``consumer``, set by :func:`~vitedge.quantization.points.prepare`), the sum ONNX
        Runtime's QLinearAdd writes on that quantizer's grid (see
        :mod:`~vitedge.quantization.runtime_arith`)."""
        bq, sq, tq = self.branch_quant, self.shortcut_quant, self.__dict__.get("consumer")
        if tq is None or not exact_mode(branch, shortcut) \
                or not all(q.fixed and not q.spec.per_channel for q in (bq, sq, tq)):
            return bq(branch) + sq(shortcut)
        a, b = bq.grid_offsets(branch) + bq.zero_point, sq.grid_offsets(shortcut) + sq.zero_point
        yi = qlinear_add(a, bq.scale, bq.zero_point, b, sq.scale, sq.zero_point, tq.scale, tq.zero_point,
                         tq.spec.qmin, tq.spec.qmax)
        return (yi - tq.zero_point) * tq.scale


class QuantResidual(_QuantAdd):
    """MSRA ``x + m(x)`` with both operands quantized; keys stay under ``m.``."""

    def __init__(self, block: Residual, spec: QuantSpec, observer_cfg: ObserverConfig) -> None:
        super().__init__(spec, observer_cfg)
        self.m = block.m

    @property
    def branch(self) -> nn.Module:
        return self.m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.m(x), x)


class QuantResidualBlock(_QuantAdd):
    """MIT ``main(x) + x`` (a block with a shortcut) with both operands quantized; keys stay
    under ``main.``."""

    def __init__(self, block: ResidualBlock, spec: QuantSpec, observer_cfg: ObserverConfig) -> None:
        assert block.shortcut, "blocks without a shortcut have no add to quantize"
        super().__init__(spec, observer_cfg)
        self.main = block.main

    @property
    def branch(self) -> nn.Module:
        return self.main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.main(x), x)


# --------------------------------------------------------------------------------------------
# attention


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    if device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


class LinearAttentionPoints(nn.Module):
    """The operands of one branch of ReLU linear attention,
    ``out_i = (q_i · Σ_j k_j v_jᵀ) / (q_i · Σ_j k_j)``: ``q``, ``k``, ``v``, ``kv`` (KᵀV),
    ``ksum`` (Kᵀ1), ``num`` (numerator), ``den`` (denominator: a uniform :class:`Quantizer`, or
    a :class:`Log2Quantizer` under Trio-ViT).

    A uniform denominator never goes below one step: in float a zero denominator comes with a
    zero numerator (q, k ≥ 0), but a small one rounds to 0 while its separately quantized
    numerator need not, and ``num / (0 + eps)`` explodes. The log2 grid has no zero already.
    """

    def __init__(self, spec: QuantSpec, observer_cfg: ObserverConfig, divisor: Log2Quantizer | None,
                 operands_only: bool = False, signed_bits: int | None = None) -> None:
        super().__init__()
        self.operands_only = operands_only
        if operands_only:
            # the operands of KᵀV and Q(KᵀV) only: K and Q (ReLU'd, so zero point 0) on input 0,
            # V and KᵀV signed symmetric on input 1 (``signed_bits``); the denominator stays float
            signed = dataclasses.replace(spec, bits=signed_bits or spec.bits, symmetric=True, narrow=False)
            for name, grid in (("q", spec), ("k", spec), ("v", signed), ("kv", signed)):
                setattr(self, name, Quantizer(grid, f"attn.{name}", observer_cfg=observer_cfg))
            return
        for name in ("q", "k", "v", "kv", "ksum", "num"):
            setattr(self, name, Quantizer(spec, f"attn.{name}", observer_cfg=observer_cfg))
        self.den = divisor if divisor is not None else Quantizer(spec, "attn.den", observer_cfg=observer_cfg)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        if self.operands_only:
            return self._operands_forward(q, k, v, eps)
        if self._integer_ready() and exact_mode(q, k, v):
            return self._integer_forward(q, k, v, eps)
        q, k, v = self.q(q), self.k(k), self.v(v)
        kv = self.kv(k.transpose(-1, -2) @ v)
        ksum = self.ksum(k.transpose(-1, -2) @ _ones_column(k))
        num = self.num(q @ kv)
        den = self.den(q @ ksum)
        if isinstance(self.den, Log2Quantizer) and self.den.fake_quant:
            return num / den  # a power of two ≥ 2^exp_min: no zero to guard, and eps would vanish in it
        if isinstance(self.den, Quantizer) and self.den.fake_quant:
            den = torch.maximum(den, self.den.scale)
        return num / (den + eps)

    def _operands_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        """Channel-major operands ``(B, heads, dim, HW)`` in, token-major ``(B, heads, HW, dim)``
        out. Each int8 product reads its unsigned ReLU'd operand on input 0 and its signed one on
        input 1, transposed inside the MatMul: ``K·Vᵀ`` (= KᵀV), then ``Qᵀ·(KᵀV)``; the
        denominator ``Qᵀ·ΣK`` stays float."""
        q, k = self.q(q), self.k(k)
        kv = self.kv(k @ self.v(v).transpose(-1, -2))
        qt = q.transpose(-1, -2)
        return (qt @ kv) / (qt @ k.sum(dim=-1, keepdim=True) + eps)

    def _integer_ready(self) -> bool:
        return all(getattr(self, n).fixed for n in ("q", "k", "v", "kv", "ksum", "num", "den"))

    def _integer_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        """The branch as ONNX Runtime runs the exported graph: KᵀV, Kᵀ1 (a matmul with a ones
        column) and the numerator as QLinearMatMul (exact integer products, requantized), the
        denominator as the integer product scaled to float (a uniform one requantized like the
        others), then the float division (see :mod:`~vitedge.quantization.runtime_arith`). ORT
        may run the log2 denominator's product as a float MatMul of the dequantized operands
        instead; the two differ by float rounding only, which the log2 rounding absorbs except
        within that rounding of a rounding point."""
        def matmul(a: torch.Tensor, b: torch.Tensor, bound: float) -> torch.Tensor:
            return integer_accumulate(torch.matmul, a, b, bound * a.shape[-1])

        qi, ki, vi = self.q.grid_offsets(q), self.k.grid_offsets(k), self.v.grid_offsets(v)
        kt = ki.transpose(-1, -2)
        kvi = self.kv.requantize(matmul(kt, vi, self.k.span * self.v.span), self.k.scale * self.v.scale)
        ksumi = self.ksum.requantize(matmul(kt, _ones_column(ki), self.k.span), self.k.scale)
        num = self.num.requantize(matmul(qi, kvi, self.q.span * self.kv.span), self.q.scale * self.kv.scale)
        num = num * self.num.scale
        den_acc = matmul(qi, ksumi, self.q.span * self.ksum.span)
        den_scale = self.q.scale * self.ksum.scale
        if isinstance(self.den, Log2Quantizer):
            return num / self.den(den_acc.float() * den_scale)
        den = self.den.requantize(den_acc, den_scale) * self.den.scale
        return num / (torch.maximum(den, self.den.scale) + eps)


def _ones_column(k: torch.Tensor) -> torch.Tensor:
    """A column of ones, exported as an int8 constant (scale 1): ``Kᵀ1`` as a quantized matmul,
    which ONNX Runtime runs with integer products (a ReduceSum of the dequantized keys would sum
    floats in an order the simulation cannot follow) — the ones-column of Trio-ViT's
    accelerator. Ones are on that grid already, so only the export needs the Q/DQ pair."""
    ones = k.new_ones(k.shape[-2], 1)
    if torch.onnx.is_in_onnx_export():
        return torch.fake_quantize_per_tensor_affine(ones, 1.0, 0, -128, 127)
    return ones


class QuantLiteMLA(nn.Module):
    """LiteMLA with every linear-attention operand quantized, one set of points per scale
    branch (the plain qkv branch, then each aggregated one). Same submodule names as
    :class:`~vitedge.models.efficientvit_mit.LiteMLA` (``qkv``, ``aggreg``, ``proj``), plus
    ``attn_quant`` (one :class:`LinearAttentionPoints` per branch)."""

    def __init__(self, mla: LiteMLA, spec: QuantSpec, observer_cfg: ObserverConfig,
                 log2_divisor: tuple[int, int | None, bool] | None, operands_only: bool = False,
                 signed_bits: int | None = None) -> None:
        super().__init__()
        self.dim = mla.dim
        self.eps = mla.eps
        self.qkv = mla.qkv
        self.aggreg = mla.aggreg
        self.proj = mla.proj
        self.attn_quant = nn.ModuleList(
            LinearAttentionPoints(spec, observer_cfg,
                                  Log2Quantizer(*log2_divisor) if log2_divisor is not None else None,
                                  operands_only, signed_bits)
            for _ in range(1 + len(mla.aggreg))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        # sizes from qkv's (dequantized) output: a Shape reading x, the conv output before this
        # block, would keep ONNX Runtime from fusing that conv into an integer conv
        B, _, H, W = qkv.shape
        branches = [qkv] + [aggreg(qkv) for aggreg in self.aggreg]
        outs = []
        for points, branch in zip(self.attn_quant, branches):
            # each head's [q | k | v]: channel-major (B, heads, 3·dim, HW) for the operand layout,
            # which transposes inside its matmuls; token-major (B, heads, HW, 3·dim) for the
            # integer arithmetic ONNX Runtime follows
            branch = branch.reshape(B, -1, 3 * self.dim, H * W)
            if points.operands_only:
                q, k, v = branch.chunk(3, dim=2)
            else:
                q, k, v = branch.transpose(-1, -2).chunk(3, dim=-1)
            dtype = v.dtype
            with _autocast_off(v.device.type):  # FP32 attention, as in the float model
                out = points(F.relu(q).float(), F.relu(k).float(), v.float(), self.eps)
            outs.append(out.to(dtype))
        out = torch.cat(outs, dim=1).transpose(-1, -2).reshape(B, -1, H, W)
        return self.proj(out)


class SoftmaxAttentionPoints(nn.Module):
    """The operands of one head's two attention matmuls: ``q``, ``k`` (``softmax(qᵀk + b)``) and
    ``v``, ``attn`` (the softmax output, ``v · attnᵀ``)."""

    def __init__(self, spec: QuantSpec, observer_cfg: ObserverConfig, operands_only: bool = False,
                 signed_bits: int | None = None) -> None:
        super().__init__()
        # operands_only: a runtime whose int8 MatMul takes i8 on input 1 and u8/i8 on input 0
        # gets q, k and v signed symmetric and the softmax output (≥ 0, zero point 0) unsigned;
        # the second product is then computed as (attn · vᵀ)ᵀ, putting attn on input 0
        self.operands_only = operands_only
        signed = (dataclasses.replace(spec, bits=signed_bits or spec.bits, symmetric=True, narrow=False)
                  if operands_only else spec)
        for name in ("q", "k", "v"):
            setattr(self, name, Quantizer(signed, f"attn.{name}", observer_cfg=observer_cfg))
        self.attn = Quantizer(spec, "attn.attn", observer_cfg=observer_cfg)

    def weighted_values(self, v: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """``v · attnᵀ`` (values weighted by the attention), in the operand order of the layout."""
        if self.operands_only:
            return (attn @ v.transpose(-2, -1)).transpose(-2, -1)
        return v @ attn.transpose(-2, -1)


class QuantCascadedGroupAttention(nn.Module):
    """CascadedGroupAttention with both attention matmuls on quantized operands, one
    :class:`SoftmaxAttentionPoints` per head in ``attn_quant``. Same parameter names as the float
    module (``qkvs``, ``dws``, ``proj``, ``attention_biases``)."""

    def __init__(self, cga: CascadedGroupAttention, spec: QuantSpec, observer_cfg: ObserverConfig,
                 operands_only: bool = False, signed_bits: int | None = None) -> None:
        super().__init__()
        self.num_heads = cga.num_heads
        self.key_dims = cga.key_dims
        self.scale = cga.scale
        self.val_dim = cga.val_dim
        self.resolution = cga.resolution
        self.qkvs = cga.qkvs
        self.dws = cga.dws
        self.proj = cga.proj
        self.attention_biases = cga.attention_biases
        self.register_buffer("attention_bias_idxs", cga.attention_bias_idxs, persistent=False)
        self.attn_quant = nn.ModuleList(SoftmaxAttentionPoints(spec, observer_cfg, operands_only, signed_bits)
                                        for _ in range(cga.num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, vd = self.resolution, self.val_dim
        attn_bias = self.attention_biases[:, self.attention_bias_idxs]
        feats_in = x.split(vd, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, (qkv, dw, kd, pts) in enumerate(zip(self.qkvs, self.dws, self.key_dims, self.attn_quant)):
            if i > 0:
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).split([kd, kd, vd], dim=1)
            q = dw(q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            q, k, v = pts.q(q * self.scale), pts.k(k), pts.v(v)
            attn = pts.attn((q.transpose(-2, -1) @ k + attn_bias[i]).softmax(dim=-1))
            feat = pts.weighted_values(v, attn).reshape(-1, vd, res, res)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, dim=1))
