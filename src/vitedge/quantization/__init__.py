"""INT8 (and 2–16-bit) quantization simulation: linear PTQ, QAT, and the Trio-ViT engine.

A quantized model is the float model, BN folded, with fake-quant points on every conv/linear
input and weight, residual add and attention operand (``points``). Ranges come from a few hundred
calibration images (``calibrate``: min-max, percentile or MSE observers) after the optional
Trio-ViT transforms (``trio``: channel-wise migration, filter-wise shifting, log2 divisor).
Scales and zero points are stored as the parameters of ONNX QuantizeLinear/DequantizeLinear
pairs, so what is simulated is what a QDQ runtime executes.

Example::

    import vitedge
    from vitedge.quantization import load_quantized, point_report, save_quantized

    qmodel = vitedge.quantize(model, calib_loader, method="trio", w_bits=8, a_bits=8)
    qmodel = vitedge.quantize(model, calib_loader, target="openvino")  # the graph OpenVINO fuses
    save_quantized(qmodel, "b0_w8a8.safetensors")
    same = load_quantized("b0_w8a8.safetensors")
"""

from vitedge.quantization.api import quantize
from vitedge.quantization.calibrate import calibrate, calibration_batches
from vitedge.quantization.checkpoint import is_quantized_checkpoint, load_quantized, save_quantized
from vitedge.quantization.config import (
    METHODS,
    OBSERVERS,
    TARGETS,
    ObserverConfig,
    QuantConfig,
    TrioConfig,
    int8_pairs_saturate,
)
from vitedge.quantization.plan import PrecisionPlan, Score, auto_plan, keep_in_float, replan, select_points
from vitedge.quantization.plots import RangeSummary, plot_channel_ranges
from vitedge.quantization.points import is_quantized, prepare, quantizers, set_quant_state
from vitedge.quantization.qat import freeze, observe, prepare_qat, scale_parameters
from vitedge.quantization.quantizer import Log2Quantizer, Quantizer, QuantSpec, log2_round
from vitedge.quantization.report import PointRow, count_kinds, point_report, report_json, report_markdown

__all__ = [
    "METHODS",
    "OBSERVERS",
    "TARGETS",
    "Log2Quantizer",
    "ObserverConfig",
    "PointRow",
    "PrecisionPlan",
    "QuantConfig",
    "QuantSpec",
    "Quantizer",
    "RangeSummary",
    "Score",
    "TrioConfig",
    "auto_plan",
    "replan",
    "calibrate",
    "calibration_batches",
    "count_kinds",
    "freeze",
    "int8_pairs_saturate",
    "is_quantized",
    "is_quantized_checkpoint",
    "keep_in_float",
    "load_quantized",
    "log2_round",
    "observe",
    "plot_channel_ranges",
    "point_report",
    "prepare",
    "prepare_qat",
    "quantize",
    "quantizers",
    "report_json",
    "report_markdown",
    "save_quantized",
    "scale_parameters",
    "select_points",
    "set_quant_state",
]
