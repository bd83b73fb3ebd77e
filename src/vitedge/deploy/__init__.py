"""Deployment: export to ONNX (FP32, FP16, INT8 QDQ) and run on real runtimes."""

from vitedge.deploy.export import export
from vitedge.deploy.formats import FORMATS, DeployFormat, get_format
from vitedge.deploy.onnx_export import export_onnx, read_onnx_metadata
from vitedge.deploy.runtimes import (
    RUNTIMES,
    OnnxRuntime,
    OpenVinoRuntime,
    Runtime,
    RuntimeSpec,
    TorchRuntime,
    get_runtime,
    load_runtime,
)

__all__ = ["FORMATS", "RUNTIMES", "DeployFormat", "OnnxRuntime", "OpenVinoRuntime", "Runtime", "RuntimeSpec",
           "TorchRuntime", "export", "export_onnx", "get_format", "get_runtime", "load_runtime",
           "read_onnx_metadata"]
