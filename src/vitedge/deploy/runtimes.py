"""Runtimes behind one interface: a callable from an NCHW float32 batch to logits.

:data:`RUNTIMES` is the one table of engines — which file format each loads, which precisions
it executes, what it needs installed — that ``vitedge bench`` iterates; :func:`load_runtime`
builds any of them. The latency harness times all of them the same way
(:func:`vitedge.bench.measure_latency`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

from vitedge.deploy.batching import run_in_fixed_batches
from vitedge.deploy.formats import package_status
from vitedge.deploy.onnx_export import read_onnx_metadata
from vitedge.deploy.tensorrt_runtime import TensorRTRuntime, tensorrt_available
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
                 optimized_model_path: str | os.PathLike | None = None,
                 profile_prefix: str | os.PathLike | None = None, spinning: bool = True) -> None:
        """``profile_prefix``: record ORT's per-node profile (written by :meth:`end_profiling`).
        ``spinning=False``: idle pool threads sleep at once instead of spinning (for several
        sessions taking turns in one process, whose spinning pools would fight over the cores)."""
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
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for invalid graphs
            raise VitedgeError(f"onnxruntime cannot load {path}: {str(err).splitlines()[0][:160]}; "
                               "re-export the model") from err
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        # a symbolic batch dimension is a string (or None); a fixed one an int
        self.fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(
            lambda b: self.session.run(None, {self.input_name: b})[0],
            np.ascontiguousarray(batch, np.float32), self.fixed_batch)

    def end_profiling(self) -> Path:
        """Stop profiling and return the JSON trace ORT wrote (Chrome trace format)."""
        return Path(self.session.end_profiling())


def native_bf16() -> bool:
    """True when OpenVINO is installed and its CPU plugin computes bf16 natively here."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_cpu_config(core: Any, precision: str, threads: int, float_glue: str = "bf16") -> dict[str, Any]:
    """OpenVINO CPU plugin settings for an FP32 file run in ``precision`` (an int8 QDQ file carries
    its own); bf16 only where the CPU has it natively: elsewhere the plugin quietly runs the hint
    in f32, and a "bf16" measurement would be FP32's under another name. An INT8 file runs its
    float glue (softmax, norms, the ops left in float) in ``float_glue``: bf16 where the CPU has
    it is the plugin's own default there and what NNCF's INT8 models get; a vitedge INT8 file
    says which it was checked for (:func:`int8_float_glue`)."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if precision == "bf16" and "BF16" not in capabilities:
        raise VitedgeError("this CPU has no native bf16 (OpenVINO's CPU plugin offers "
                           f"{', '.join(capabilities)}; bf16 needs AVX-512 BF16 or AMX); "
                           "use precision fp32 or int8 here")
    glue_bf16 = precision == "int8" and float_glue == "bf16" and "BF16" in capabilities
    hint = "bf16" if precision == "bf16" or glue_bf16 else "f32"
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}


def int8_float_glue(path: Path) -> str:
    """The float type an INT8 file's non-int8 ops run in on OpenVINO: a vitedge file's recorded
    ``vitedge.float_glue`` (``f32``, what its simulation computes, unless bf16 was checked on
    held-out images), bf16 for any other file (OpenVINO's default, as NNCF's files get it)."""
    if path.suffix != ".onnx":
        return "bf16"
    try:
        metadata = read_onnx_metadata(path)
    except Exception:  # not ONNX we can read: OpenVINO's own error says more when it loads it
        return "bf16"
    if not metadata.get("vitedge.quant_target"):  # an FP32 file records None
        return "bf16"
    return metadata.get("vitedge.float_glue") or "f32"


class OpenVinoRuntime:
    """OpenVINO on the CPU, reading our ONNX files directly. ``precision="bf16"`` compiles an FP32
    file with bf16 inference (AVX-512 BF16 / AMX CPUs); an INT8 QDQ file runs on its int8 kernels.

    A file with a dynamic batch is compiled once per batch size it is called with: the CPU
    plugin fuses a static graph further (with a dynamic batch, the attention's FakeQuantize →
    MatMul chains of an INT8 file stay float)."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32",
                 float_glue: str | None = None) -> None:
        import openvino as ov

        path = Path(path)
        if not path.is_file():
            raise VitedgeError(f"ONNX file {path} does not exist; export it first (vitedge export)")
        self.threads = threads or os.cpu_count() or 1
        self.path = path
        self.core = ov.Core()
        if precision == "int8" and float_glue is None:
            float_glue = int8_float_glue(path)
        self.config = openvino_cpu_config(self.core, precision, self.threads, float_glue or "bf16")
        batch_dim = self._read().input(0).get_partial_shape()[0]
        self.fixed_batch = batch_dim.get_length() if batch_dim.is_static else None
        self._compiled: dict[int, tuple[Any, Any]] = {}
        self.compiled = self._compile(self.fixed_batch or 1)[0]

    def _read(self) -> Any:
        try:
            return self.core.read_model(str(self.path))
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
            raise VitedgeError(f"openvino cannot load {self.path}: {str(err).splitlines()[0][:160]}") from err

    def _compile(self, batch: int) -> tuple[Any, Any]:
        """The compiled model and its infer request for batches of ``batch`` images."""
        if batch not in self._compiled:
            model = self._read()
            if self.fixed_batch is None:
                shape = model.input(0).get_partial_shape()
                shape[0] = batch
                model.reshape({model.input(0): shape})
            try:
                compiled = self.core.compile_model(model, "CPU", self.config)
            except Exception as err:
                raise VitedgeError(f"openvino cannot load {self.path}: {str(err).splitlines()[0][:160]}") from err
            self._compiled[batch] = (compiled, compiled.create_infer_request())
        return self._compiled[batch]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(self._infer, np.ascontiguousarray(batch, np.float32), self.fixed_batch)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        compiled, request = self._compile(len(batch))
        result = request.infer({0: batch})
        return np.asarray(result[compiled.output(0)])


@dataclass(frozen=True)
class RuntimeSpec:
    """One engine: the file format it loads, the precisions it executes, what it needs."""

    name: str
    format: str                  # a row of vitedge.deploy.FORMATS
    precisions: tuple[str, ...]  # bf16: an FP32 file executed in bf16 by the engine
    requires: str | None         # the Python package it imports
    install: str | None = None   # what to pip install for it, when not just ``requires``

    def available(self) -> tuple[bool, str]:
        if self.name == "tensorrt":  # a package *and* a CUDA GPU
            return tensorrt_available()
        return package_status(self.requires, self.install) if self.requires else (True, "")

    def file_precision(self, precision: str) -> str:
        """The precision of the file this engine runs for ``precision``."""
        return "fp32" if precision == "bf16" else precision


RUNTIMES: tuple[RuntimeSpec, ...] = (
    RuntimeSpec("torch", "torch", ("fp32", "int8"), None),  # int8: the fake-quant simulation
    RuntimeSpec("onnxruntime", "onnx", ("fp32", "fp16", "int8"), "onnxruntime"),
    RuntimeSpec("openvino", "onnx", ("fp32", "bf16", "int8"), "openvino", install="vitedge[openvino]"),
    RuntimeSpec("tensorrt", "onnx", ("fp32", "fp16", "int8"), "tensorrt"),  # CUDA GPU only
)


def get_runtime(name: str) -> RuntimeSpec:
    for spec in RUNTIMES:
        if spec.name == name:
            return spec
    raise VitedgeError(f"unknown runtime {name!r}; choose one of {', '.join(r.name for r in RUNTIMES)}")


def load_runtime(name: str, source: nn.Module | str | os.PathLike, *, precision: str = "fp32",
                 threads: int | None = None) -> Runtime:
    """Runtime ``name`` on ``source`` (a model for torch, an exported file otherwise)."""
    spec = get_runtime(name)
    if precision not in spec.precisions:
        raise VitedgeError(f"runtime {name} runs {', '.join(spec.precisions)}, not {precision!r}")
    ok, why = spec.available()
    if not ok:
        raise VitedgeError(f"runtime {name} is not available: {why}")
    if name == "torch":
        if not isinstance(source, nn.Module):
            raise VitedgeError("the torch runtime runs a model object, not a file; load the checkpoint first")
        return TorchRuntime(source, threads)
    if isinstance(source, nn.Module):
        raise VitedgeError(f"runtime {name} runs an exported file; export the model first (vitedge.export)")
    if name == "onnxruntime":
        return OnnxRuntime(source, threads)
    if name == "tensorrt":
        return TensorRTRuntime(source, threads, precision)
    return OpenVinoRuntime(source, threads, precision)
