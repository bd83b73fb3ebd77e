"""Where the quantization points go: :func:`prepare` turns a float model into its fake-quantized
twin (uncalibrated), and a few helpers walk and switch the points.

Coverage, on BN-folded models of both families (pruned ones included):

- the input and weight of every conv and linear, stem and head included (``QuantConv2d`` /
  ``QuantLinear``); the logits stay float;
- both operands of every residual add (``QuantResidualBlock`` / ``QuantResidual``);
- MIT linear attention, per scale branch: q, k, v, KᵀV, Kᵀ1, numerator, denominator; the
  attention output is the projection conv's input (kind ``attn.out``);
- MSRA softmax attention, per head: q, k, v and the softmax output; output as above.

Not quantized (float between a DequantizeLinear and the next QuantizeLinear in deployment):
activation functions, LayerNorm, the global average pool, the MSRA squeeze-excite gating
product and attention-bias add, the cascade's head-to-head add (its sum *is* quantized, as the
next head's qkv input).

A tensor read by several points in one block (the residual stream: the shortcut and the
branch's first conv) gets one shared :class:`Quantizer`, registered at both paths.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from vitedge.errors import VitedgeError
from vitedge.models.efficientvit_mit import (
    ConvBlock,
    ConvNormAct,
    DSConv,
    FusedMBConv,
    LiteMLA,
    MBConv,
    ResidualBlock,
)
from vitedge.models.efficientvit_msra import (
    CascadedGroupAttention,
    ConvMlp,
    LocalWindowAttention,
    PatchEmbedding,
    PatchMerging,
    Residual,
    SqueezeExcite,
)
from vitedge.models.layers import fuse_bn
from vitedge.quantization.config import QuantConfig
from vitedge.quantization.qmodules import (
    QuantCascadedGroupAttention,
    QuantConv2d,
    QuantLinear,
    QuantLiteMLA,
    QuantResidual,
    QuantResidualBlock,
    _QuantAdd,
)
from vitedge.quantization.quantizer import Log2Quantizer, Quantizer, QuantSpec
from vitedge.quantization.runtime_arith import RuntimeHardswish
from vitedge.quantization.trio import find_sites

__all__ = ["activation_spec", "is_quantized", "prepare", "quantizers", "set_quant_state", "weight_spec"]

AnyQuantizer = Quantizer | Log2Quantizer

# The conv that first reads a residual branch's input, by branch type. Its input quantizer is
# shared with the shortcut. For LocalWindowAttention that conv reads head 0's channel chunk of
# the zero-padded, window-partitioned input: a per-tensor quantizer commutes with the padding
# (zero is on every grid), the partition and the split, so one quantizer still serves both.
_ENTRY_CONV: tuple[tuple[type[nn.Module], str], ...] = (
    (ConvNormAct, "conv"),
    (DSConv, "depth_conv.conv"),
    (MBConv, "inverted_conv.conv"),
    (FusedMBConv, "spatial_conv.conv"),
    (ConvBlock, "conv1.conv"),
    (QuantLiteMLA, "qkv.conv"),
    (LiteMLA, "qkv.conv"),
    (ConvMlp, "pw1"),
    (LocalWindowAttention, "attn.qkvs.0"),
)


# Convs whose output feeds an activation, by block type (``conv_outputs``): the point goes
# between conv and activation, where an integer conv kernel writes its int8 output.
_ACTIVATED_CONVS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (ConvNormAct, ("conv",)),                      # MIT: every conv-norm-act with an activation
    (ConvMlp, ("pw1",)),                           # MSRA FFN
    (PatchMerging, ("conv1", "conv2")),
    (PatchEmbedding, ("conv1", "conv2", "conv3")),
    (SqueezeExcite, ("fc1",)),
)


# Targets whose integer matmuls want only the operands quantized, signed on input 1
# (see :data:`~vitedge.quantization.config.TARGETS`).
OPERAND_TARGETS = ("openvino", "tensorrt")


def weight_spec(cfg: QuantConfig) -> QuantSpec:
    """Weights: symmetric, narrow range (−127…127 at 8 bits), per output channel or tensor."""
    return QuantSpec(cfg.weight_bits, symmetric=True, narrow=True, per_channel=cfg.per_channel,
                     observer=cfg.weight_observer)


def activation_spec(cfg: QuantConfig) -> QuantSpec:
    """Activations: per tensor, unsigned asymmetric (0…255) unless ``a_symmetric`` (−128…127)."""
    return QuantSpec(cfg.a_bits, symmetric=cfg.a_symmetric, per_channel=False,
                     observer=cfg.activation_observer)


def is_quantized(model: nn.Module) -> bool:
    """True if ``model`` already carries quantization points."""
    return any(isinstance(m, (Quantizer, Log2Quantizer)) for m in model.modules())


def prepare(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """A BN-folded, fake-quantized copy of ``model`` with every point in place, uncalibrated
    (all quantizers off). ``model`` is left untouched. :func:`~vitedge.quantization.calibrate`
    sets the ranges; :func:`~vitedge.quantization.load_quantized` loads them instead."""
    if is_quantized(model):
        raise VitedgeError("this model is already quantized; quantize the float model it came from")
    net = fuse_bn(copy.deepcopy(model))
    migration, shifting = find_sites(net, cfg.transforms)
    _Converter(cfg, migration, shifting).convert(net, "")
    _link_consumers(net)
    net.quant_config = cfg
    return net


def _link_consumers(net: nn.Module) -> None:
    """Give each conv without an output point, and each quantized residual add, the quantizer
    that alone reads its output (``consumer``): an integer runtime fuses that pair into one conv
    (or QLinearAdd) writing on the quantizer's grid, and in evaluation the simulation does the same
    (:mod:`~vitedge.quantization.runtime_arith`). Found by tracing one float forward pass at the
    model's input size, so every block type is covered without a table. An output that anything
    else reads too (a reshape, an add, a second quantizer) keeps the float path: the runtime
    cannot fuse it either."""
    size = getattr(net, "data_config", {}).get("input_size")
    if size is None:
        return
    produced: dict[int, nn.Module] = {}
    readers: dict[int, dict[int, Quantizer]] = {}
    alive: list[torch.Tensor] = []  # every tensor keyed by id stays alive, so no id is reused
    uses = _TensorUses()

    def conv_hook(conv: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        produced[id(out)] = conv
        alive.append(out)

    def quant_pre_hook(quant: nn.Module, inputs: tuple) -> None:
        readers.setdefault(id(inputs[0]), {})[id(quant)] = quant
        alive.append(inputs[0])

    def quant_hook(_quant: nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        # an uncalibrated quantizer returns its input itself; what reads its output must not
        # count as reading the conv's output
        with uses.paused():
            fresh = out.view_as(out)
        alive.append(fresh)
        return fresh

    handles = []
    for module in net.modules():
        if isinstance(module, QuantConv2d) and module.output_quant is None or isinstance(module, _QuantAdd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, Quantizer) and module.kind != "weight":
            handles.append(module.register_forward_pre_hook(quant_pre_hook))
            handles.append(module.register_forward_hook(quant_hook))
    was_training = net.training
    try:
        param = next(net.parameters(), None)
        with torch.no_grad(), uses:
            net.eval()(torch.zeros(1, *size, device=param.device if param is not None else "cpu"))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    for key, conv in produced.items():
        found = list(readers.get(key, {}).values())
        if len(found) == 1 and uses.count.get(key, 0) == 0:
            conv.__dict__["consumer"] = found[0]


class _TensorUses(TorchFunctionMode):
    """Counts, per tensor id, the torch functions that read it (attribute reads excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[int, int] = {}
        self._alive: list[torch.Tensor] = []  # a counted id must not be reused by a later tensor
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if not self._paused and getattr(func, "__name__", "") != "__get__":
            for value in (*args, *kwargs.values()):
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(t, torch.Tensor):
                        self.count[id(t)] = self.count.get(id(t), 0) + 1
                        self._alive.append(t)
        return func(*args, **kwargs)


class _Converter:
    def __init__(self, cfg: QuantConfig, migration: set[str], shifting: set[str]) -> None:
        self.cfg = cfg
        self.w_spec = weight_spec(cfg)
        self.a_spec = activation_spec(cfg)
        self.obs = cfg.observer
        self.migration = migration
        self.shifting = shifting
        trio = cfg.transforms
        self.log2 = ((trio.divisor_bits, trio.divisor_exp_min, trio.divisor_slide) if trio.log2_divisor
                     else None)

    def convert(self, module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            path = prefix + name
            if isinstance(child, nn.Conv2d) and not isinstance(child, QuantConv2d):
                setattr(module, name, QuantConv2d(child, self.w_spec, self.a_spec, self.obs,
                                                  migration=path in self.migration,
                                                  shift=path in self.shifting))
                continue
            if isinstance(child, nn.Hardswish):  # the exported graph's rounding (runtime_arith)
                setattr(module, name, RuntimeHardswish())
                continue
            if isinstance(child, nn.Linear) and not isinstance(child, QuantLinear):
                setattr(module, name, QuantLinear(child, self.w_spec, self.a_spec, self.obs))
                continue
            new = self.twin(child)
            if new is not child:
                setattr(module, name, new)
            self.convert(new, path + ".")
            self.finish(new)

    def twin(self, child: nn.Module) -> nn.Module:
        cfg = self.cfg
        operands = cfg.target in OPERAND_TARGETS
        signed_bits = min(cfg.a_bits, 7) if cfg.overflow_fix else cfg.a_bits  # matmul input 1, as a weight
        if cfg.attention and isinstance(child, LiteMLA):
            return QuantLiteMLA(child, self.a_spec, self.obs, None if operands else self.log2,
                                operands_only=operands, signed_bits=signed_bits)
        if cfg.attention and isinstance(child, CascadedGroupAttention):
            return QuantCascadedGroupAttention(child, self.a_spec, self.obs, operands_only=operands,
                                               signed_bits=signed_bits)
        if cfg.residual and isinstance(child, ResidualBlock) and child.shortcut:
            return QuantResidualBlock(child, self.a_spec, self.obs)
        if cfg.residual and isinstance(child, Residual):
            return QuantResidual(child, self.a_spec, self.obs)
        return child

    def finish(self, module: nn.Module) -> None:
        """Label attention outputs; share a residual's shortcut point with its entry conv; add
        the conv-output points (``conv_outputs``)."""
        if self.cfg.conv_outputs:
            self._conv_output_points(module)
        if isinstance(module, QuantLiteMLA):
            module.proj.conv.input_quant.kind = "attn.out"
        elif isinstance(module, QuantCascadedGroupAttention):
            module.proj[-1].input_quant.kind = "attn.out"
        elif isinstance(module, (QuantResidual, QuantResidualBlock)):
            entry = _entry_conv(module.branch)
            if entry is not None and entry.migration is None and entry.shift is None:
                entry.input_quant = module.shortcut_quant

    def _conv_output_points(self, module: nn.Module) -> None:
        """Output points of the convs in ``module`` whose output no consumer quantizes as is."""

        def point(conv: nn.Module) -> Quantizer | None:
            if isinstance(conv, QuantConv2d) and conv.output_quant is None:
                conv.output_quant = Quantizer(self.a_spec, "conv.output", observer_cfg=self.obs)
            return getattr(conv, "output_quant", None)

        for block, paths in _ACTIVATED_CONVS:
            if isinstance(module, block) and (block is not ConvNormAct or not isinstance(module.act, nn.Identity)):
                for path in paths:
                    point(module.get_submodule(path))
        # Attention convs feed reshapes and splits, then the next conv: the consumer conv reads the
        # producer's point (a per-tensor quantizer commutes with split, pad and reshape).
        if isinstance(module, QuantLiteMLA):
            qkv = point(module.qkv.conv)
            for dw, pw in module.aggreg:
                if qkv is not None and isinstance(dw, QuantConv2d):
                    dw.input_quant = qkv
                inner = point(dw)
                if inner is not None and isinstance(pw, QuantConv2d):
                    pw.input_quant = inner
                point(pw)
        elif isinstance(module, QuantCascadedGroupAttention):
            for qkv, dw in zip(module.qkvs, module.dws):
                shared = point(qkv)
                if shared is not None and isinstance(dw, QuantConv2d):
                    dw.input_quant = shared
                point(dw)


def _entry_conv(branch: nn.Module) -> QuantConv2d | None:
    if isinstance(branch, QuantConv2d):
        return branch
    for block, path in _ENTRY_CONV:
        if isinstance(branch, block):
            conv = branch.get_submodule(path)
            return conv if isinstance(conv, QuantConv2d) else None
    return None


def quantizers(model: nn.Module, weights: bool | None = None) -> Iterator[tuple[str, AnyQuantizer]]:
    """Every quantization point once (a shared one under its first path), in forward order
    of registration. ``weights=True``/``False`` keeps only weight / only activation points."""
    for name, module in model.named_modules():
        if isinstance(module, (Quantizer, Log2Quantizer)):
            is_weight = module.kind == "weight"
            if weights is None or weights == is_weight:
                yield name, module


def aliases(model: nn.Module) -> dict[int, list[str]]:
    """``id(quantizer)`` → every path it is registered at (more than one when shared)."""
    paths: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (Quantizer, Log2Quantizer)):
            paths.setdefault(id(module), []).append(name)
    return paths


def set_quant_state(model: nn.Module, *, fake_quant: bool | None = None, observing: bool | None = None,
                    weights: bool | None = None) -> nn.Module:
    """Switch fake quantization and/or observation of the points (``weights`` selects as in
    :func:`quantizers`). ``fake_quant=False`` everywhere gives the float function of the
    transformed model (migration and shifting stay: they are exact); ``fake_quant=True`` leaves
    the points the precision plan keeps in float (``in_float``) off."""
    for _, q in quantizers(model, weights):
        if fake_quant is not None:
            q.fake_quant = fake_quant and not q.in_float
        if observing is not None:
            q.observing = observing
            q.track = q.track and observing
    return model
