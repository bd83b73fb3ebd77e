"""Layer extraction: the operators one forward pass of a model executes, with their cost.

Every analysis of cost works from this one list: the profiler's MACs, the accelerator's cycle
model and the CPU roofline. It is recorded at the ATen level (a ``TorchDispatchMode``), so it
sees what the model really runs — attention matmuls, residual adds, reshapes — whatever module
wrote them, for dense, pruned and fake-quantized models alike, classification or segmentation.

Bytes are what PyTorch eager's kernels move: a view (``view``, ``transpose``, ``split`` …)
moves nothing, a copy (``clone``, ``cat``, ``pad``) reads and writes its elements, a compute
op reads each input once (a broadcast operand counts its stored elements) and writes its
output. Inside a fake-quantizer nothing is recorded: on integer hardware (re)quantization is
part of the producing kernel's output stage, and the operator list describes the network, not
the simulation of its rounding. Work on parameters alone (a fake-quantized weight, a bias on the
integer grid, a transposed linear weight) is constant folding, done once at export: it is not
recorded, and its result counts as a weight of the operator that reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from vitedge.models import fuse_bn
from vitedge.models.inputs import Resolution, forward_at, input_size
from vitedge.quantization.runtime_arith import graph_arithmetic

# The kinds an operator can have. A convolution's kind follows from its geometry.
KINDS = (
    "conv",
    "pointwise",
    "depthwise",
    "matmul",
    "elementwise",
    "norm",
    "reshape",
    "pool",
    "resize",
    "other",
)

_ELEMENTWISE = {
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "relu",
    "relu_",
    "hardswish",
    "hardswish_",
    "hardsigmoid",
    "sigmoid",
    "gelu",
    "silu",
    "clamp",
    "clamp_min",
    "clamp_max",
    "pow",
    "sqrt",
    "rsqrt",
    "neg",
    "exp",
    "log",
    "log2",
    "where",
    "round",
    "abs",
    "maximum",
    "minimum",
    "floor",
    "ceil",
    "reciprocal",
    "tanh",
    "erf",
    "sign",
    "leaky_relu",
    "hardtanh",
    "mish",
    "fill",
    "masked_fill",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
}
_NORM = {
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_layer_norm",
    "native_group_norm",
    "_softmax",
    "_log_softmax",
    "softmax",
}
_VIEWS = {
    "view",
    "_unsafe_view",
    "reshape",
    "transpose",
    "permute",
    "t",
    "expand",
    "slice",
    "select",
    "split",
    "split_with_sizes",
    "unsqueeze",
    "squeeze",
    "alias",
    "unbind",
    "narrow",
    "as_strided",
    "detach",
    "chunk",
    "flatten",
    "unflatten",
    "view_as",
    "expand_as",
    "_reshape_alias",
}
_COPIES = {
    "clone",
    "contiguous",
    "cat",
    "stack",
    "constant_pad_nd",
    "copy",
    "copy_",
    "index",
    "index_select",
    "gather",
    "_to_copy",
    "pixel_shuffle",
    "pixel_unshuffle",
    "repeat",
    "roll",
    "flip",
    "pad",
}
_POOL = {
    "mean",
    "sum",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "amax",
    "amin",
    "max",
    "min",
}
_RESIZE = {
    "upsample_bilinear2d",
    "upsample_bicubic2d",
    "upsample_nearest2d",
    "_upsample_bilinear2d_aa",
    "_upsample_bicubic2d_aa",
    "_upsample_nearest_exact2d",
    "grid_sampler_2d",
}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm"}
_IGNORED = {
    "empty",
    "empty_like",
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "full",
    "full_like",
    "randn",
    "rand",
    "arange",
    "lift_fresh",
    "_local_scalar_dense",
    "scalar_tensor",
    "item",
    "empty_strided",
    "new_empty",
    "new_zeros",
    "new_ones",
    "_assert_async",
    "sym_size",
}
# Fake-quantizers: the rounding they simulate is folded into the producing kernel on hardware.
_QUANTIZER_TYPES = {"Quantizer", "Log2Quantizer"}


@dataclass(frozen=True)
class Operator:
    """One executed operator: where it ran, what kind it is, its shapes and cost.

    Element counts, not bytes, are stored so the same list serves FP32, FP16 and INT8 targets:
    ``bytes_read(elem_bytes)`` / ``bytes_written(elem_bytes)`` price them; ``elem_bytes`` is what
    the traced model used.
    """

    index: int
    scope: str  # module path of the innermost module ("" = the model itself)
    module_type: str  # that module's class name
    op: str  # ATen op name, e.g. "convolution", "bmm", "add"
    kind: str  # one of KINDS
    output_shape: tuple[int, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()  # activation operands (parameters excluded)
    weight_shape: tuple[int, ...] | None = None  # the parameter operand of a conv/linear
    macs: int = 0
    input_elems: int = 0
    weight_elems: int = 0
    output_elems: int = 0
    elem_bytes: int = 4
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def name(self) -> str:
        return f"{self.scope or '<model>'}:{self.op}"

    def bytes_read(self, elem_bytes: int | None = None) -> int:
        return (self.input_elems + self.weight_elems) * (elem_bytes or self.elem_bytes)

    def bytes_written(self, elem_bytes: int | None = None) -> int:
        return self.output_elems * (elem_bytes or self.elem_bytes)


@dataclass
class OperatorList(Sequence[Operator]):
    """The operators of one forward pass, in execution order, with the input that produced them."""

    operators: list[Operator]
    input_shape: tuple[int, ...]
    folded_bn: bool
    model: str = "model"  # the architecture's name, for reports

    def __getitem__(self, i):  # type: ignore[override]
        return self.operators[i]

    def __len__(self) -> int:
        return len(self.operators)

    def __iter__(self) -> Iterator[Operator]:
        return iter(self.operators)

    @property
    def macs(self) -> int:
        return sum(o.macs for o in self.operators)


def extract_operators(
    model: nn.Module, resolution: Resolution | None = None, batch_size: int = 1, fold_bn: bool = False
) -> OperatorList:
    """Run one forward pass of ``model`` and return every operator it executes.

    ``resolution`` defaults to the model's input size (``model.data_config``). With
    ``fold_bn=True`` a BN-folded copy is traced (what an exported or accelerated model runs);
    the model itself is never changed.

    Example::

        >>> ops = extract_operators(create_model("efficientvit_b1"), fold_bn=True)
        >>> round(ops.macs / 1e6)
        519
        >>> ops[0].kind, ops[0].output_shape
        ('conv', (1, 16, 112, 112))
    """
    if fold_bn:
        model = fuse_bn(copy.deepcopy(model))
    channels, height, width = input_size(model, resolution)
    param = next(iter(model.parameters()), None)
    x = torch.randn(batch_size, channels, height, width, device=param.device if param is not None else "cpu")
    recorder = _Recorder(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), graph_arithmetic(), recorder:  # the exported graph's ops
            forward_at(model, x)
    finally:
        recorder.remove_hooks()
        model.train(was_training)
    name = getattr(model, "arch", {}).get("name", type(model).__name__)
    return OperatorList(recorder.operators, tuple(x.shape), folded_bn=fold_bn, model=name)


def classify_conv(in_channels: int, weight_shape: Sequence[int], groups: int) -> str:
    """``depthwise`` (one input channel per filter), ``pointwise`` (1×1, grouped or not) or ``conv``.

    Shared with the ONNX Runtime profile parser so both sides of a comparison agree.
    """
    kernel_elems = _prod(weight_shape[2:])
    if weight_shape[1] == 1 and groups == in_channels and groups > 1:
        return "depthwise"
    if kernel_elems == 1:
        return "pointwise"
    return "conv"


def _kind(op: str) -> str:
    if op in _ELEMENTWISE:
        return "elementwise"
    if op in _NORM:
        return "norm"
    if op in _VIEWS or op in _COPIES:
        return "reshape"
    if op in _POOL:
        return "pool"
    if op in _RESIZE:
        return "resize"
    if op in _MATMUL:
        return "matmul"
    return "other"


def _addressed_elems(t: torch.Tensor) -> int:
    """Elements a kernel actually reads from ``t``: a broadcast (stride-0) dimension counts once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n


class _Recorder(TorchDispatchMode):
    """Records ATen ops with the module they ran in (a stack kept by forward hooks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.operators: list[Operator] = []
        self._stack: list[tuple[str, nn.Module]] = [("", model)]
        self._param_storages = {
            t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())
        }
        self._constants: list[torch.Tensor] = []  # kept alive: a freed address must not turn into a weight
        self._handles = []
        for path, module in model.named_modules():
            if module is model:
                continue
            self._handles.append(module.register_forward_pre_hook(self._enter(path, module)))
            self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, path: str, module: nn.Module):
        def hook(_module: nn.Module, _inputs: Any) -> None:
            self._stack.append((path, module))

        return hook

    def _leave(self, _module: nn.Module, _inputs: Any, _output: Any) -> None:
        self._stack.pop()

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()

    def _in_quantizer(self) -> bool:
        return any(type(m).__name__ in _QUANTIZER_TYPES for _, m in self._stack)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket.__name__
        if op in _IGNORED:
            return out
        inputs = [
            a for a in _flatten(args) + _flatten(list((kwargs or {}).values())) if isinstance(a, torch.Tensor)
        ]
        if inputs and all(self._is_param(t) for t in inputs):  # constant folding: a derived weight
            for t in _flatten(out):
                if isinstance(t, torch.Tensor):
                    self._constants.append(t)
                    self._param_storages.add(t.untyped_storage().data_ptr())
            return out
        if self._in_quantizer():
            return out
        self._record(op, args, out)
        return out

    def _is_param(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self._param_storages

    def _record(self, op: str, args: tuple, out: Any) -> None:
        tensors = [a for a in _flatten(args) if isinstance(a, torch.Tensor)]
        outputs = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        acts = [t for t in tensors if not self._is_param(t)]
        params = [t for t in tensors if self._is_param(t)]
        out_shape = tuple(outputs[0].shape) if outputs else ()
        elem_bytes = outputs[0].element_size() if outputs else 4
        kind = _kind(op)
        extra: dict[str, Any] = {}
        macs = 0
        if op == "convolution":
            x, w = args[0], args[1]
            groups = int(args[8])
            kind = classify_conv(x.shape[1], w.shape, groups)
            macs = outputs[0].numel() * w.shape[1] * _prod(w.shape[2:])
            extra = {
                "kernel": tuple(int(k) for k in w.shape[2:]),
                "stride": tuple(int(s) for s in args[3]),
                "groups": groups,
            }
        elif op in ("mm", "addmm"):
            a, b = (args[1], args[2]) if op == "addmm" else (args[0], args[1])
            macs = a.shape[0] * a.shape[1] * b.shape[1]
        elif op in ("bmm", "baddbmm"):
            a, b = (args[1], args[2]) if op == "baddbmm" else (args[0], args[1])
            macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        if op in _VIEWS:
            in_elems = out_elems = weight_elems = 0  # metadata only
        else:
            in_elems = sum(_addressed_elems(t) for t in acts)
            out_elems = sum(t.numel() for t in outputs)
            weight_elems = sum(_addressed_elems(t) for t in params)
        scope, module = self._stack[-1]
        weight = max(params, key=lambda t: t.numel(), default=None)
        self.operators.append(
            Operator(
                index=len(self.operators),
                scope=scope,
                module_type=type(module).__name__,
                op=op,
                kind=kind,
                output_shape=out_shape,
                input_shapes=tuple(tuple(t.shape) for t in acts),
                weight_shape=tuple(weight.shape) if weight is not None else None,
                macs=int(macs),
                input_elems=int(in_elems),
                weight_elems=int(weight_elems),
                output_elems=int(out_elems),
                elem_bytes=elem_bytes,
                **extra,
            )
        )


def _prod(values: Sequence[int]) -> int:
    n = 1
    for v in values:
        n *= int(v)
    return n


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [x for item in obj for x in _flatten(item)]
    return [obj]
