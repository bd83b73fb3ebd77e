"""TensorRT (CUDA GPU only): engines from our FP32/FP16/INT8 ONNX files agree with ONNX Runtime.
On a machine without it the tests skip and say why (pytest -ra prints the reason); the bench
table's TensorRT rows are ✗ with that same reason, which is tested everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import run_cli

import vitedge
from vitedge.deploy import get_runtime, load_runtime
from vitedge.quantization import QuantConfig, quantize

AVAILABLE, WHY = get_runtime("tensorrt").available()


def test_bench_rows_for_tensorrt_say_why_it_cannot_run(monkeypatch, capsys, tiny_classifier, tmp_path):
    if AVAILABLE:
        pytest.skip("TensorRT is available here: its rows are measured (see the parity test)")
    _, ckpt = tiny_classifier
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "tensorrt", "--batch-size", "1",
                           "--threads", "1", "--runs", "2", "--out", str(tmp_path / "b"))
    assert code == 0, err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "fp16", "int8"}
    assert all(not r["ok"] and r["reason"] == WHY for r in rows if r["precision"] != "int8")


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
