"""TensorRT on a CUDA GPU, built from our ONNX files (FP32, FP16, INT8 QDQ).

Networks are built *strongly typed* where TensorRT supports it (10.x): the engine keeps the
types our export wrote — the FP32 islands of the FP16 file (LayerNorm, linear-attention
division), and the Q/DQ scales of the INT8 file — instead of re-choosing precisions per layer,
which is how FP16 EfficientViT engines overflow. TF32 is off, so an FP32 engine computes FP32.
Inputs and outputs live in torch CUDA tensors (torch is already a dependency; no pycuda).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vitedge.errors import VitedgeError

__all__ = ["TensorRTRuntime", "tensorrt_available"]

MAX_BATCH = 64


def tensorrt_available() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False, "Python package 'tensorrt' is not installed (pip install tensorrt, on a CUDA machine)"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU and none is visible to torch"
    return True, ""


class TensorRTRuntime:
    """One engine for one ONNX file; batches up to :data:`MAX_BATCH`."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32") -> None:
        import tensorrt as trt

        path = Path(path)
        if not path.is_file():
            raise VitedgeError(f"ONNX file {path} does not exist; export it first (vitedge export)")
        self.threads = threads or 1  # host threads do not matter to a GPU engine
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise VitedgeError(f"tensorrt cannot parse {path}: {errors[:200]}")
        config = builder.create_builder_config()
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if not strongly_typed:  # older TensorRT: ask for the precision the file was written in
            if precision == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            elif precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
        self.input_name = network.get_input(0).name
        self.output_name = network.get_output(0).name
        _, c, h, w = network.get_input(0).shape
        profile = builder.create_optimization_profile()
        profile.set_shape(self.input_name, (1, c, h, w), (1, c, h, w), (MAX_BATCH, c, h, w))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise VitedgeError(f"tensorrt could not build an engine for {path} ({precision}); see its log above")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > MAX_BATCH:
            return np.concatenate([self(batch[i:i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)])
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device="cuda", dtype=torch.float32)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.cpu().numpy()
