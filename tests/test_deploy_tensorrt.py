"""TensorRT (CUDA GPU only): engines from our FP32/FP16/INT8 ONNX files agree with ONNX Runtime.
On a machine without it those tests skip and say why (pytest -ra prints the reason); the bench
table's TensorRT rows are ✗ with that same reason, which is tested everywhere, and so is the
wrapper's own code, against a stand-in module (second half of this file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli

import vitedge
from vitedge.deploy import get_runtime, load_runtime
from vitedge.quantization import QuantConfig, quantize

AVAILABLE, WHY = get_runtime("tensorrt").available()


def test_bench_asking_for_tensorrt_says_why_it_cannot_run(monkeypatch, capsys, tiny_classifier, tmp_path):
    """Named on the command line, an engine that cannot run here is a one-line error; in the
    default bench (every runtime) its rows are ✗ with the same reason (test_openvino_absent)."""
    if AVAILABLE:
        pytest.skip("TensorRT is available here: its rows are measured (see the parity test)")
    _, ckpt = tiny_classifier
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "tensorrt", "--batch-size", "1",
                           "--threads", "1", "--runs", "2", "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, f"runtime tensorrt is not available: {WHY}")
    assert code == 2 and not (tmp_path / "b").exists()


@pytest.mark.skipif(not AVAILABLE, reason=f"tensorrt: {WHY}")
def test_tensorrt_engines_agree_with_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = vitedge.create_model("efficientvit_b0", num_classes=10).eval()
    x = torch.randn(4, 3, 224, 224)
    files = {p: vitedge.export(model, tmp_path / f"b0_{p}.onnx", p) for p in ("fp32", "fp16")}
    qmodel = quantize(model, [torch.randn(8, 3, 224, 224)], config=QuantConfig(method="trio", conv_outputs=True))
    files["int8"] = vitedge.export(qmodel, tmp_path / "b0_int8.onnx", "int8")
    for precision, path in files.items():
        trt_out = load_runtime("tensorrt", path, precision=precision)(x.numpy())
        ort_out = load_runtime("onnxruntime", path, precision=precision)(x.numpy())
        assert np.isfinite(trt_out).all(), precision
        tol = {"fp32": 1e-3, "fp16": 5e-2, "int8": None}[precision]
        if tol is not None:
            assert np.abs(trt_out - ort_out).max() <= tol, precision
        else:  # integer kernels of two vendors: same decisions, not the same bits
            assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.75


# --- The wrapper's own code, everywhere: against a stand-in ``tensorrt`` and CUDA ----------------
#
# The stand-in keeps TensorRT's contract where the wrapper depends on it: what the builder and the
# parser need (explicit batch before 10.x, no precision flags on a strongly typed network, a
# profile for a dynamic batch and none that contradicts a fixed one), and an execution context
# that reads its input from, and writes its logits to, the addresses it is given. The "engine"
# computes what the ONNX file computes (a global average pool), so its logits can be compared
# with ONNX Runtime on the same file. CUDA is torch.cuda: a stream object and its context manager
# are replaced, and the runtime's device is the CPU, so the addresses are host memory.

import ctypes
import enum
import sys
import types
from contextlib import contextmanager

import onnx
from onnx import TensorProto, helper

from vitedge.deploy.tensorrt_runtime import MAX_BATCH, TensorRTRuntime, tensorrt_available
from vitedge.errors import VitedgeError

CHANNELS, SIDE = 3, 8


def pool_onnx(path, batch: int | None) -> str:
    """logits = GlobalAveragePool(input), flattened: ``batch=None`` gives a dynamic batch."""
    dims = ["batch" if batch is None else batch, CHANNELS, SIDE, SIDE]
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])],
        "pool", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], CHANNELS])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def _host_floats(address: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address))


class FakeTensorRT:
    """A ``tensorrt`` module of a given version; ``builders`` and ``contexts`` keep what was asked."""

    def __init__(self, version: str, *, build_fails: bool = False, execute_fails: bool = False,
                 output_dtype: str = "FLOAT") -> None:
        major = int(version.split(".")[0])
        fake = self
        self.builders: list = []
        self.contexts: list = []
        self.in_stream: list = []  # set by the fake torch.cuda.stream
        module = types.ModuleType("tensorrt")
        module.__version__ = version
        flags = {"EXPLICIT_BATCH": 0} if major <= 10 else {}
        if major >= 9:
            flags["STRONGLY_TYPED"] = 1
        module.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags)
        module.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "TF32": 7})
        module.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2})

        class Logger:
            WARNING = 2

            def __init__(self, level):
                self.level = level

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class Network:
            def __init__(self, flags):
                self.flags = flags
                self.inputs, self.outputs = [], []

            def get_input(self, i):
                return self.inputs[i]

            def get_output(self, i):
                return self.outputs[i]

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

            def parse(self, data):
                explicit = 1 << module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH if major < 10 else 0
                if explicit and not self.network.flags & explicit:
                    self.errors.append("ONNX models need an explicit-batch network")
                    return False
                try:
                    graph = onnx.load_from_string(data).graph
                except Exception as err:
                    self.errors.append(f"cannot read the model: {type(err).__name__}")
                    return False

                def dims(value):
                    return tuple(d.dim_value if d.HasField("dim_value") else -1
                                 for d in value.type.tensor_type.shape.dim)

                self.network.inputs = [Tensor(v.name, dims(v)) for v in graph.input]
                self.network.outputs = [Tensor(v.name, dims(v)) for v in graph.output]
                return True

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, min, opt, max):
                self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        class Config:
            def __init__(self):
                self.flags, self.cleared, self.profiles = set(), set(), []

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.cleared.add(flag)
                self.flags.discard(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

        class Builder:
            def __init__(self, logger):
                self.network = self.config = self.built = None
                fake.builders.append(self)

            def create_network(self, flags=0):
                self.network = Network(flags)
                return self.network

            def create_builder_config(self):
                self.config = Config()
                return self.config

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                self.built = None
                strongly = "STRONGLY_TYPED" in module.NetworkDefinitionCreationFlag.__members__ and \
                    network.flags & (1 << module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
                precision_flags = {module.BuilderFlag.FP16, module.BuilderFlag.INT8}
                if build_fails or (strongly and config.flags & precision_flags):
                    return None  # TensorRT: precision flags are not allowed on a strongly typed network
                shape = network.inputs[0].shape
                ranges = [p.shapes[network.inputs[0].name] for p in config.profiles]
                if -1 in shape and not ranges:
                    return None  # a dynamic input needs an optimization profile
                for low, opt, high in ranges:
                    for dim, a, b, c in zip(shape, low, opt, high):
                        if dim != -1 and not dim == a == b == c:
                            return None  # a profile contradicting a fixed dimension
                self.built = (network, ranges[0] if ranges else (shape, shape, shape))
                return self.built

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses, self.runs = engine, {}, {}, []
                fake.contexts.append(self)

            def set_input_shape(self, name, shape):
                network, (low, _, high) = self.engine.built
                if name != network.inputs[0].name or len(shape) != 4 or not all(
                        a <= s <= b for a, s, b in zip(low, shape, high)):
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name):
                network, _ = self.engine.built
                if name == network.inputs[0].name:
                    return self.shapes[name]
                return (self.shapes[network.inputs[0].name][0], CHANNELS)

            def set_tensor_address(self, name, address):
                self.addresses[name] = address
                return True

            def execute_async_v3(self, stream_handle):
                network, _ = self.engine.built
                shape = self.shapes[network.inputs[0].name]
                self.runs.append({"shape": shape, "stream": stream_handle, "in_stream": list(fake.in_stream)})
                if execute_fails:
                    return False
                x = _host_floats(self.addresses[network.inputs[0].name], int(np.prod(shape))).reshape(shape)
                out = _host_floats(self.addresses[network.outputs[0].name], shape[0] * CHANNELS)
                out[:] = x.mean(axis=(2, 3)).ravel()
                return True

        class Engine:
            def __init__(self, built):
                self.built = built

            def create_execution_context(self):
                return Context(self)

            def get_tensor_dtype(self, name):
                return module.DataType[output_dtype if name == self.built[0].outputs[0].name else "FLOAT"]

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, serialized):
                return Engine(serialized)

        module.Logger, module.Builder, module.OnnxParser = Logger, Builder, OnnxParser
        module.Runtime = Runtime
        self.module = module


class FakeStream:
    def __init__(self, *args, **kwargs):
        self.cuda_stream = 0x5EED
        self.synchronized = 0

    def synchronize(self):
        self.synchronized += 1


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a stand-in TensorRT (``fake_trt("10.3")``) and a CUDA that runs on the host."""

    def install(version: str = "10.3", **kwargs) -> FakeTensorRT:
        fake = FakeTensorRT(version, **kwargs)

        @contextmanager
        def stream(s):
            fake.in_stream.append(s.cuda_stream)
            try:
                yield
            finally:
                fake.in_stream.pop()

        monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
        monkeypatch.setattr(torch.cuda, "stream", stream)
        monkeypatch.setattr(TensorRTRuntime, "device", torch.device("cpu"))
        return fake

    return install


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, CHANNELS, SIDE, SIDE)).astype(np.float32)


def _flags(fake, name: str) -> int:
    return 1 << int(fake.module.NetworkDefinitionCreationFlag[name])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_10_builds_strongly_typed_without_precision_flags(fake_trt, tmp_path, precision):
    """The engine keeps the types the file was written in; FP16/INT8 flags would be an error."""
    fake = fake_trt("10.3")
    TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None), precision=precision)
    (builder,) = fake.builders
    assert builder.network.flags == _flags(fake, "STRONGLY_TYPED")
    assert builder.config.flags == set()
    assert fake.module.BuilderFlag.TF32 in builder.config.cleared  # FP32 means FP32


@pytest.mark.parametrize(("precision", "flag"), [("fp32", None), ("fp16", "FP16"), ("int8", "INT8")])
def test_tensorrt_8_asks_for_the_file_precision_on_an_explicit_batch_network(fake_trt, tmp_path, precision,
                                                                             flag):
    fake = fake_trt("8.6.1")
    TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None), precision=precision)
    (builder,) = fake.builders
    assert builder.network.flags == _flags(fake, "EXPLICIT_BATCH")
    wanted = {fake.module.BuilderFlag[flag]} if flag else set()
    assert builder.config.flags == wanted


def test_dynamic_batch_profile_and_logits(fake_trt, tmp_path):
    """Each call sets the input shape of its batch; the logits come back in (batch, classes),
    equal to ONNX Runtime's on the same file, through one stream."""
    fake = fake_trt()
    path = pool_onnx(tmp_path / "m.onnx", None)
    runtime = TensorRTRuntime(path)
    (builder,) = fake.builders
    ((low, opt, high),) = builder.built[1:]
    assert low == opt == (1, CHANNELS, SIDE, SIDE) and high == (MAX_BATCH, CHANNELS, SIDE, SIDE)
    x = _images(5)
    out = runtime(x)
    assert out.shape == (5, CHANNELS) and out.dtype == np.float32
    np.testing.assert_allclose(out, load_runtime("onnxruntime", path)(x), rtol=0, atol=1e-6)
    (context,) = fake.contexts
    (run,) = context.runs
    assert run["shape"] == (5, CHANNELS, SIDE, SIDE)
    assert run["stream"] == runtime.stream.cuda_stream and run["in_stream"] == [runtime.stream.cuda_stream]
    assert runtime.stream.synchronized == 1
    np.testing.assert_allclose(runtime(x[:2]), out[:2], rtol=0, atol=0)  # reshaped, not stale
    assert context.runs[-1]["shape"] == (2, CHANNELS, SIDE, SIDE)


def test_batches_over_the_profile_maximum_are_split(fake_trt, tmp_path):
    fake = fake_trt()
    runtime = TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None))
    x = _images(MAX_BATCH * 2 + 3)
    out = runtime(x)
    assert [r["shape"][0] for r in fake.contexts[0].runs] == [MAX_BATCH, MAX_BATCH, 3]
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=0, atol=1e-6)


def test_batch_one_file_runs_larger_batches_slice_by_slice(fake_trt, tmp_path):
    """A ``vitedge export --batch-one`` file has a fixed batch: no profile may contradict it, and
    a batch of 3 runs as three batches of 1, like ONNX Runtime and OpenVINO do."""
    fake = fake_trt()
    runtime = TensorRTRuntime(pool_onnx(tmp_path / "m1.onnx", 1))
    x = _images(3)
    out = runtime(x)
    assert [r["shape"] for r in fake.contexts[0].runs] == [(1, CHANNELS, SIDE, SIDE)] * 3
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=0, atol=1e-6)


def test_load_runtime_goes_through_the_table(fake_trt, tmp_path):
    fake = fake_trt()
    assert tensorrt_available() == (True, "")
    runtime = load_runtime("tensorrt", pool_onnx(tmp_path / "m.onnx", None), precision="fp16")
    assert isinstance(runtime, TensorRTRuntime) and runtime.name == "tensorrt"
    assert fake.builders[0].network.flags == _flags(fake, "STRONGLY_TYPED")


def test_unavailable_without_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    ok, why = tensorrt_available()
    assert not ok and "pip install tensorrt" in why
    path = pool_onnx(tmp_path / "m.onnx", None)
    with pytest.raises(VitedgeError, match="runtime tensorrt is not available: .*pip install tensorrt"):
        load_runtime("tensorrt", path)
    with pytest.raises(VitedgeError, match="pip install tensorrt"):
        TensorRTRuntime(path)


def test_unavailable_without_a_gpu(fake_trt, monkeypatch, tmp_path):
    fake_trt()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = tensorrt_available()
    assert not ok and "CUDA GPU" in why
    with pytest.raises(VitedgeError, match="not available: .*CUDA GPU"):
        TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None))


def test_errors_name_the_file_and_the_fix(fake_trt, tmp_path):
    fake_trt()
    with pytest.raises(VitedgeError, match="does not exist; export it first"):
        TensorRTRuntime(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00not onnx" * 8)
    with pytest.raises(VitedgeError, match=r"tensorrt cannot parse .*bad\.onnx: cannot read the model"):
        TensorRTRuntime(tmp_path / "bad.onnx")
    fake_trt(build_fails=True)
    with pytest.raises(VitedgeError, match=r"could not build an engine for .*m\.onnx \(fp16\)"):
        TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None), precision="fp16")


def test_a_failed_run_raises_instead_of_returning_garbage(fake_trt, tmp_path):
    fake_trt(execute_fails=True)
    runtime = TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None))
    with pytest.raises(VitedgeError, match="tensorrt failed to run"):
        runtime(_images(2))


def test_a_non_float32_output_is_refused(fake_trt, tmp_path):
    """The output buffer is float32: an engine with FP16 logits would be read as garbage."""
    fake_trt(output_dtype="HALF")
    with pytest.raises(VitedgeError, match="float32"):
        TensorRTRuntime(pool_onnx(tmp_path / "m.onnx", None))
