"""Typed configuration of a quantization run: what is quantized, on how many bits, how ranges
are chosen, and which Trio-ViT transforms apply. Every field is validated on construction, so a
bad value fails before any work with one line that names it and the fix.

``method`` picks a recipe (the observers, and whether the Trio-ViT transforms are on); every
part of a recipe can be overridden on its own, which is how the ablation rows are spelled::

    QuantConfig(method="minmax", per_channel=False)                      # W8A8 per-tensor min-max
    QuantConfig(method="minmax", trio=TrioConfig(migration=True, shifting=False, log2_divisor=False))
    QuantConfig(method="trio", w_bits=4)                                  # W4A8, all transforms
"""

from __future__ import annotations

import dataclasses
import difflib
import platform
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from vitedge import settings
from vitedge.errors import VitedgeError
from vitedge.settings import config_class

__all__ = ["METHODS", "OBSERVERS", "TARGETS", "ObserverConfig", "QuantConfig", "TrioConfig", "check_bits"]

MIN_BITS, MAX_BITS = 2, 16
OBSERVERS = ("minmax", "percentile", "mse", "ema")

# method -> (weight observer, activation observer, Trio-ViT transforms on by default)
METHODS: dict[str, tuple[str, str, bool]] = {
    "minmax": ("minmax", "minmax", False),
    "percentile": ("minmax", "percentile", False),
    "mse": ("mse", "mse", False),
    "trio": ("mse", "mse", True),
}

# Deployment target → the layout fields it fixes. Each runtime fuses a different QDQ pattern
# into integer kernels, so the points go where that runtime's fusions expect them:
# - "simulation": every point of the Trio-ViT spec, as configured (no runtime constraint);
# - "onnxruntime": a point after every activated conv, since ORT only makes DQ → Conv → Q an
#   integer QLinearConv (the simulation then computes what ORT computes, bit for bit);
# - "openvino": points only on the inputs of convs and matmuls (OpenVINO folds conv → bias →
#   activation → FakeQuantize into one int8 conv, and a point between conv and activation or on
#   a residual add's operands stays a separate float op); attention matmul operands signed
#   symmetric on input 1 (the CPU plugin's int8 MatMul takes only i8 there) and the linear
#   attention's denominator in float (its log2 form has no int8 kernel);
# - "tensorrt": the OpenVINO layout with symmetric activations (TensorRT's int8 has no zero point).
TARGETS: dict[str, dict[str, Any]] = {
    "simulation": {},
    "onnxruntime": {"conv_outputs": True},
    "openvino": {"conv_outputs": False, "residual": False},
    "tensorrt": {"conv_outputs": False, "residual": False, "a_symmetric": True},
}
# the Python package each target's runtime comes from (checked before calibrating for it)
TARGET_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
# targets whose CPU int8 kernels multiply u8 by s8 with x86's vpmaddubsw where there is no VNNI
CPU_TARGETS = ("onnxruntime", "openvino")


def int8_pairs_saturate() -> bool:
    """True on an x86 CPU without VNNI (AVX-512 VNNI or AVX-VNNI): its int8 kernels (oneDNN in
    OpenVINO, MLAS in ONNX Runtime) add pairs of u8·s8 products in saturating int16
    (``vpmaddubsw``), so 8-bit weights against large activations overflow and the runtime no
    longer computes what the simulation does (seen on a Zen 3: a flowers17 B0 at 77 % in the
    simulation ran at 25–28 % on both runtimes). Elsewhere (VNNI, ARM's dot products) int8
    products accumulate exactly."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: assume a current CPU
    return "avx512_vnni" not in flags and "avx_vnni" not in flags


def check_bits(value: Any, name: str) -> int:
    """``value`` as a bit width in [2, 16], else a VitedgeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise VitedgeError(f"{name}={value!r} is not a supported bit width; use an int from "
                           f"{MIN_BITS} to {MAX_BITS} (8 is the INT8 default)")
    return value


def _choice(value: Any, choices: tuple[str, ...] | list[str], what: str) -> str:
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=2, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise VitedgeError(f"unknown {what} {value!r}: {hint}choose one of {', '.join(choices)}")


@config_class
class ObserverConfig:
    """How a range is measured and chosen.

    ``weight`` / ``activation`` name the observers (``None``: the method's default).
    ``percentile`` clips activations to that percentile of the calibration values (and
    ``100 - percentile`` below); ``mse_candidates`` ranges ``[min, max]·(1 − 0.01 i)`` are tried
    by the MSE search, scored by the mean ``|x − Q(x)|^mse_norm`` (2.4 in Trio-ViT's release).
    ``samples`` bounds the values an activation observer keeps for percentile / MSE (a uniform
    random subsample across batches; min and max are always exact). ``ema_momentum`` is the
    weight of the newest batch in the EMA observer (QAT).
    """

    weight: str | None = None
    activation: str | None = None
    percentile: float = 99.99
    mse_candidates: int = 80
    mse_norm: float = 2.4
    samples: int = 1 << 16
    ema_momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.weight is not None:
            _choice(self.weight, [o for o in OBSERVERS if o != "ema"], "weight observer")
        if self.activation is not None:
            _choice(self.activation, OBSERVERS, "activation observer")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise VitedgeError(f"percentile={self.percentile!r} must lie in (50, 100]; 99.99 is usual")
        if isinstance(self.mse_candidates, bool) or not isinstance(self.mse_candidates, int) \
                or not 1 <= self.mse_candidates <= 100:
            raise VitedgeError(f"mse_candidates={self.mse_candidates!r} must be an int in [1, 100] "
                               "(candidate i shrinks the range by 1 % · i)")
        if not float(self.mse_norm) > 0:
            raise VitedgeError(f"mse_norm={self.mse_norm!r} must be positive (2.0 is plain MSE)")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1024:
            raise VitedgeError(f"samples={self.samples!r} must be an int >= 1024")
        if not 0.0 < float(self.ema_momentum) <= 1.0:
            raise VitedgeError(f"ema_momentum={self.ema_momentum!r} must lie in (0, 1]")


@config_class
class TrioConfig:
    """The three Trio-ViT transforms, each switchable (``shared/specs/trio-vit-ptq.md``).

    - ``migration``: divide the depthwise-conv input of each MBConv by per-channel factors
      ``s_c = clamp(M_c / T, *migration_clamp)`` (``T = max(q_{migration_quantile}, mean M_c)``)
      and multiply the depthwise filters by ``s_c``; ``pow2_migration`` rounds ``s_c`` to
      ``2^clip(round(log2 s_c), 0, 5)``. ``migration_stat`` is what ``M_c`` measures:
      ``"absmax"`` (default), ``max |X_c|``, or ``"max"``, the spec's literal ``max X_c``. They
      differ only on channels whose Hardswish tail (down to −0.375) outweighs their maximum:
      ``"max"`` gives those ``s_c`` near the lower clamp and so magnifies the tail up to 10×,
      which can widen the per-tensor range it was meant to shrink.
    - ``shifting``: subtract each channel's mid-range ``z_c`` from the projection-conv input and
      add ``Ŵ·z`` to the bias.
    - ``log2_divisor``: the linear attention's denominator becomes ``2^y`` with a
      ``divisor_bits``-bit exponent ``y ∈ [divisor_exp_min, divisor_exp_min + 2^bits − 1]``;
      ``divisor_exp_min=None`` places that window at the calibration maximum instead.
      ``divisor_slide`` (default on) keeps the fixed window unless the calibration maximum rounds
      above its top, and then slides it up to end there. The spec's −6…9 suits 224² classifiers
      (≤ 196 tokens at stride 16); a CamVid frame's 660 tokens saturate it (B0-Seg: 44.3 % mIoU
      with the fixed window, 55.4 % slid, 56.2 % FP32).
    """

    migration: bool = True
    shifting: bool = True
    log2_divisor: bool = True
    pow2_migration: bool = False
    migration_clamp: tuple[float, float] = (0.1, 64.0)
    migration_quantile: float = 0.99
    migration_stat: str = "absmax"
    divisor_bits: int = 4
    divisor_exp_min: int | None = -6
    divisor_slide: bool = True

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.migration_clamp)
        if not 0 < lo <= hi:
            raise VitedgeError(f"migration_clamp={self.migration_clamp!r} must be (lo, hi) with "
                               "0 < lo <= hi, e.g. (0.1, 64)")
        object.__setattr__(self, "migration_clamp", (lo, hi))
        _choice(self.migration_stat, ("absmax", "max"), "migration_stat")
        if not 0.0 < float(self.migration_quantile) <= 1.0:
            raise VitedgeError(f"migration_quantile={self.migration_quantile!r} must lie in (0, 1]")
        if isinstance(self.divisor_bits, bool) or not isinstance(self.divisor_bits, int) \
                or not 1 <= self.divisor_bits <= 8:
            raise VitedgeError(f"divisor_bits={self.divisor_bits!r} must be an int in [1, 8] "
                               "(4 in Trio-ViT: 16 exponents)")
        if not isinstance(self.divisor_slide, bool):
            raise VitedgeError(f"divisor_slide={self.divisor_slide!r} must be True or False")
        if self.divisor_exp_min is not None and (isinstance(self.divisor_exp_min, bool)
                                                 or not isinstance(self.divisor_exp_min, int)):
            raise VitedgeError(f"divisor_exp_min={self.divisor_exp_min!r} must be an int (e.g. -6) "
                               "or None to calibrate the exponent window")

    @property
    def any(self) -> bool:
        return self.migration or self.shifting or self.log2_divisor


TRIO_OFF = TrioConfig(migration=False, shifting=False, log2_divisor=False)


@config_class
class QuantConfig:
    """A quantization run, validated on construction.

    - ``method``: ``"minmax"``, ``"percentile"``, ``"mse"`` or ``"trio"`` (MSE ranges plus the
      Trio-ViT transforms); it sets the defaults of ``observer`` and ``trio``.
    - ``w_bits`` / ``a_bits``: weight / activation bits, 2 to 16. Weights are symmetric
      (narrow range, −127…127 at 8 bits); activations are per-tensor, asymmetric unsigned
      (0…255) unless ``a_symmetric`` (−128…127).
    - ``per_channel``: one weight scale per output channel (else one per tensor).
    - ``attention`` / ``residual``: quantize the attention operands / the residual adds (off
      keeps them in float, as in the ablations of the spec).
    - ``conv_outputs``: also quantize the output of every conv that feeds an activation
      (before the Hardswish / ReLU). An integer runtime needs it: ONNX Runtime only turns
      ``DQ → Conv → Q`` into an integer convolution, so without this point those convs (MBConv
      expand and depthwise, the MSRA FFN's first conv) run in float on dequantized input.
    - ``trio``: the transforms; ``None`` means all on for ``method="trio"``, all off otherwise.
    - ``max_calib_batches``: use at most this many calibration batches.
    - ``reconstruct_iters``: after calibration, learn every step size for this many steps on
      the calibration images so the logits match the float model's (0: plain PTQ; see
      :mod:`vitedge.quantization.reconstruct`).
    - ``auto_reconstruct``: with ``auto_float``, when the precision plan still leaves the
      held-out predictions short of its agreement target (no kind of point in float helps: the
      error is spread over many layers), learn the step sizes this many steps as
      ``reconstruct_iters`` does, and keep them only if the held-out divergence drops (0: never).
    - ``keep_float``: points kept in float whatever the measurements say — point paths, kinds
      (``"attn.num"``) or layer paths (every point under it).
    - ``auto_float``: measure each kind of point's effect on held-out images and keep in float
      those the model cannot take in INT8 (:mod:`vitedge.quantization.plan`); on by default,
      so a model whose attention cannot take 8 bits keeps it in float by itself.
    - ``target``: the runtime the model will deploy on (:data:`TARGETS`); it fixes where the
      points go so the exported graph is the one that runtime fuses into integer kernels.
      Build a config for a target with :meth:`for_target`, which sets the layout fields the
      target needs; a config whose fields contradict its target is an error.
    - ``overflow_fix``: weights on at most 7 bits (−63…63) and the signed operands of
      activation × activation matmuls on at most 7 bits, so that x86 int8 kernels without VNNI
      (:func:`int8_pairs_saturate`) never saturate a pair sum (255·63·2 < 2^15) and compute what
      the simulation computes. :meth:`for_target` turns it on for the CPU runtimes when the CPU
      here needs it; the checkpoint records it.
    - ``float_glue``: the float type OpenVINO runs the file's non-int8 ops in (softmax, norms,
      points kept in float): ``"f32"``, what the simulation computes, unless a measurement on
      held-out images found bf16 changes no prediction that matters
      (:func:`vitedge.bench.float_glue.check_float_glue`); the export records it.
    """

    method: str = "trio"
    w_bits: int = 8
    a_bits: int = 8
    per_channel: bool = True
    a_symmetric: bool = False
    attention: bool = True
    residual: bool = True
    conv_outputs: bool = False
    observer: ObserverConfig = field(default_factory=ObserverConfig)
    trio: TrioConfig | None = None
    max_calib_batches: int | None = None
    reconstruct_iters: int = 0
    auto_reconstruct: int = 100
    keep_float: tuple[str, ...] = ()
    auto_float: bool = True
    target: str = "simulation"
    overflow_fix: bool = False
    float_glue: str = "f32"

    def __post_init__(self) -> None:
        _choice(self.method, tuple(METHODS), "quantization method")
        _choice(self.target, tuple(TARGETS), "quantization target")
        _choice(self.float_glue, ("f32", "bf16"), "float glue type")
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        # types are the config model's (vitedge.settings); what is left are the values
        if not all(self.keep_float):
            raise VitedgeError(f"keep_float={list(self.keep_float)!r} must list point paths, kinds or layer "
                               "paths, e.g. ['attn.num'], not empty names")
        if self.reconstruct_iters < 0:
            raise VitedgeError(f"reconstruct_iters={self.reconstruct_iters!r} must be an int >= 0 "
                               "(0: plain PTQ)")
        if self.auto_reconstruct < 0:
            raise VitedgeError(f"auto_reconstruct={self.auto_reconstruct!r} must be an int >= 0 "
                               "(0: never learn step sizes by itself)")
        if self.max_calib_batches is not None and self.max_calib_batches < 1:
            raise VitedgeError(f"max_calib_batches={self.max_calib_batches!r} must be a positive int or None")
        for name, value in TARGETS[self.target].items():
            if getattr(self, name) != value:
                raise VitedgeError(f"target {self.target} needs {name}={value} (its integer kernels fuse that "
                                   f"layout); build the config with QuantConfig.for_target({self.target!r}, ...)")

    @classmethod
    def for_target(cls, target: str, **fields: Any) -> QuantConfig:
        """A config for ``target`` (:data:`TARGETS`): ``fields`` with the target's layout on top;
        ``overflow_fix``, unless given, on for a CPU runtime when this CPU's int8 kernels saturate."""
        _choice(target, tuple(TARGETS), "quantization target")
        fields.setdefault("overflow_fix", target in CPU_TARGETS and int8_pairs_saturate())
        return cls(**{**fields, **TARGETS[target], "target": target})

    def retarget(self, target: str) -> QuantConfig:
        """This config moved to ``target``: same method, bits and ranges, that target's layout
        (and ``overflow_fix`` as :meth:`for_target` sets it)."""
        _choice(target, tuple(TARGETS), "quantization target")
        fix = self.overflow_fix or (target in CPU_TARGETS and int8_pairs_saturate())
        return dataclasses.replace(self, **TARGETS[target], target=target, overflow_fix=fix)

    @property
    def weight_bits(self) -> int:
        """The weight grid's bits: ``w_bits``, at most 7 with ``overflow_fix``."""
        return min(self.w_bits, 7) if self.overflow_fix else self.w_bits

    @property
    def weight_observer(self) -> str:
        return self.observer.weight or METHODS[self.method][0]

    @property
    def activation_observer(self) -> str:
        return self.observer.activation or METHODS[self.method][1]

    @property
    def transforms(self) -> TrioConfig:
        """The Trio-ViT transforms in force (the method's default unless ``trio`` is given)."""
        if self.trio is not None:
            return self.trio
        return TrioConfig() if METHODS[self.method][2] else TRIO_OFF

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what a quantized checkpoint stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format)."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VitedgeError(f"quantization config has unknown fields {unknown}; it was written by "
                               "a newer vitedge — upgrade to load it")
        return settings.parse(cls, data, what="quantization config field")
