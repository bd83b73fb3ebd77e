"""The INT8 anchor: what a user gets from NNCF instead of vitedge — ``nncf.quantize`` on the same
FP32 ONNX file and the same calibration images, saved as OpenVINO IR and run on OpenVINO.

NNCF is a test/benchmark oracle, not a dependency of the library: without it the bench shows
the anchor rows as ✗ with the install line.

Example::

    path = nncf_quantize(Path("model_fp32.onnx"), calib_batches, Path("nncf_performance.xml"))
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitedge.deploy.formats import package_status
from vitedge.errors import VitedgeError

__all__ = ["NNCF_PRESETS", "nncf_available", "nncf_quantize", "nncf_version"]

# preset name → (nncf.QuantizationPreset, nncf.ModelType): NNCF's two recipes for a vision
# transformer. "performance" (symmetric activations) is NNCF's default; "transformer" is its
# model type for attention models (mixed preset, attention-aware ignored scopes).
NNCF_PRESETS: dict[str, tuple[str, str | None]] = {
    "performance": ("PERFORMANCE", None),
    "transformer": ("MIXED", "TRANSFORMER"),
}


def nncf_available() -> tuple[bool, str]:
    ok, why = package_status("nncf", "nncf (pip install 'vitedge[test]')")
    if ok:
        ok, why = package_status("openvino", "vitedge[openvino]")
    return ok, why


def nncf_version() -> str:
    import nncf

    return str(nncf.__version__)


def nncf_quantize(fp32_onnx: Path, calib: Sequence[np.ndarray], out: Path, preset: str = "performance") -> Path:
    """Quantize ``fp32_onnx`` with NNCF's OpenVINO backend on the images of ``calib`` (NCHW
    float batches, the model's preprocessing applied) and write the IR to ``out`` (``.xml`` and
    its ``.bin``, moved into place together). Returns ``out``."""
    if preset not in NNCF_PRESETS:
        raise VitedgeError(f"unknown NNCF preset {preset!r}; choose one of {', '.join(NNCF_PRESETS)}")
    ok, why = nncf_available()
    if not ok:
        raise VitedgeError(f"cannot run the NNCF anchor: {why}")
    import nncf
    import openvino as ov

    images = [image[None] for batch in calib for image in np.asarray(batch, np.float32)]
    if not images:
        raise VitedgeError("the NNCF anchor needs calibration images; pass --data")
    quant_preset, model_type = NNCF_PRESETS[preset]
    model = ov.Core().read_model(str(fp32_onnx))
    quantized = nncf.quantize(
        model, nncf.Dataset(images), preset=getattr(nncf.QuantizationPreset, quant_preset),
        model_type=getattr(nncf.ModelType, model_type) if model_type else None, subset_size=len(images))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        shutil.move(str(staged.with_suffix(".bin")), out.with_suffix(".bin"))
        shutil.move(str(staged), out)  # the .xml last: a present .xml has its weights beside it
    return out
