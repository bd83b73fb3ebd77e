"""Runtimes behind one interface: a callable from an NCHW float32 batch to logits.

The latency harness times any of them the same way (:func:`vitedge.bench.measure_latency`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from vitedge.errors import VitedgeError


class Runtime(Protocol):
    """One loaded model on one engine."""

    name: str
    threads: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRuntime:
    """PyTorch eager on the CPU, in inference mode."""

    name = "torch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        self.model = model.eval()
        self.threads = threads or torch.get_num_threads()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(batch)).numpy()
        finally:
            torch.set_num_threads(previous)


class OnnxRuntime:
    """ONNX Runtime's CPU execution provider with all graph optimisations on."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 optimized_model_path: str | os.PathLike | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise VitedgeError(f"ONNX file {path} does not exist; export it first (vitedge export)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads or os.cpu_count() or 1
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for invalid graphs
            raise VitedgeError(f"onnxruntime cannot load {path}: {str(err).splitlines()[0][:160]}; "
                               "re-export the model") from err
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
