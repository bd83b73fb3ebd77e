"""`vitedge bench`: every runtime × precision gets a row — measured, or ✗ with the reason."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from test_cli import run_cli

import vitedge
from vitedge.deploy import read_onnx_metadata
from vitedge.train.evaluate import evaluate_checkpoint

pytest.importorskip("onnxruntime")


def test_bench_measures_every_available_runtime_and_precision(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, ckpt = tiny_classifier
    out = tmp_path / "bench"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--data", str(data), "--calib", "8",
                                "--batch-size", "1", "--batch-size", "2", "--threads", "1", "--runs", "3",
                                "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "bench.json").read_text())
    rows = {(r["runtime"], r["precision"]): r for r in report["rows"] if not r["quantizer"].startswith("NNCF")}
    anchors = [r for r in report["rows"] if r["quantizer"].startswith("NNCF")]
    expected = {("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
                ("onnxruntime", "int8")}
    if importlib.util.find_spec("openvino"):  # installed (the test extra has it): its rows must run
        import openvino

        expected |= {("openvino", "fp32"), ("openvino", "int8")}
        native_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        bf16 = rows["openvino", "bf16"]
        assert bf16["ok"] == native_bf16 and (native_bf16 or "no native bf16" in bf16["reason"]), bf16
    assert expected <= set(rows)
    for key in expected:
        row = rows[key]
        assert row["ok"], row
        assert [x["batch_size"] for x in row["latency"]] == [1, 2]
        assert row["latency"][0]["median_ms"] > 0 and row["size_mib"] > 0
    # the checkpoint's own score on the 8 test images, with its own preprocessing: every float
    # runtime reproduces it exactly (it predicts both classes: a constant model would score 50 %)
    reference = evaluate_checkpoint(ckpt, str(data))
    predicted = torch.tensor(reference["confusion"]).sum(dim=0)
    assert reference["num_samples"] == 8 and (predicted > 0).all(), reference["confusion"]
    for key in expected:
        if key[1] != "int8":
            assert rows[key]["score"] == reference["top1"], key
    # INT8 runs the same integer arithmetic on ORT as in the simulation: the same predictions
    assert rows["onnxruntime", "int8"]["score"] == rows["torch", "int8"]["score"]
    assert rows["onnxruntime", "int8"]["sim_agreement"] == 100.0
    assert "sim_agreement" not in rows["torch", "int8"] and "sim_agreement" not in rows["onnxruntime", "fp32"]
    assert abs(rows["torch", "int8"]["score"] - reference["top1"]) <= 25  # at most 2 of 8 images flip
    assert rows["onnxruntime", "int8"]["size_mib"] < 0.4 * rows["onnxruntime", "fp32"]["size_mib"]
    assert rows["onnxruntime", "fp16"]["size_mib"] < 0.6 * rows["onnxruntime", "fp32"]["size_mib"]
    assert "| onnxruntime | int8 | vitedge (onnxruntime target) | ✓ |" in (out / "bench.md").read_text()
    # each runtime runs the INT8 graph quantized for it: the file says which target made it
    for runtime in {"onnxruntime", "openvino"} & {key[0] for key in expected}:
        row = rows[runtime, "int8"]
        assert row["quantizer"] == f"vitedge ({runtime} target)", row
        assert read_onnx_metadata(row["file"])["vitedge.quant_target"] == runtime
    # the NNCF anchor: both presets quantize the same FP32 file on the same images and run on
    # OpenVINO, scored like every other row
    if importlib.util.find_spec("nncf") and importlib.util.find_spec("openvino"):
        import nncf

        assert [r["quantizer"] for r in anchors] == [f"NNCF {nncf.__version__} performance",
                                                    f"NNCF {nncf.__version__} transformer"]
        for row in anchors:
            assert row["ok"], row
            assert row["file"].endswith(".xml") and abs(row["score"] - reference["top1"]) <= 25
            assert row["size_mib"] < 0.5 * rows["openvino", "fp32"]["size_mib"]
        assert f"| openvino | int8 | NNCF {nncf.__version__} performance | ✓ |" in (out / "bench.md").read_text()


def test_bench_without_data_says_why_int8_is_missing(monkeypatch, capsys, tiny_classifier, tmp_path):
    _, dense = tiny_classifier
    # a checkpoint trained with its own normalisation: the benched files carry it
    trained = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    ckpt = vitedge.save(vitedge.load(dense), tmp_path / "own.safetensors", extra={"data_config": trained})
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "onnxruntime", "--batch-size", "1",
                           "--threads", "1", "--runs", "2", "--out", str(tmp_path / "b"))
    assert code == 0, err
    rows = {r["precision"]: r for r in json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]}
    assert rows["fp32"]["ok"] and "score" not in rows["fp32"]
    written = read_onnx_metadata(rows["fp32"]["file"])["vitedge.preprocessing"]
    assert (written["mean"], written["std"]) == (trained["mean"], trained["std"])
    assert not rows["int8"]["ok"] and "--data to calibrate" in rows["int8"]["reason"]
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "tensorrtt", "--out", str(tmp_path))
    assert code == 2 and "unknown runtime" in err


def test_nncf_anchor_row_says_what_to_install(monkeypatch, tmp_path):
    from vitedge.bench import deployment, nncf_anchor

    monkeypatch.setattr(deployment, "nncf_available",  # where the bench looks it up
                        lambda: (False, "No module named 'nncf': pip install nncf (pip install 'vitedge[test]')"))
    row = deployment._nncf_row("performance", tmp_path / "m.onnx", [], tmp_path, None, None, [1], 32, 1, 1, 0)
    assert not row["ok"] and row["quantizer"] == "NNCF performance" and "pip install nncf" in row["reason"]
    with pytest.raises(vitedge.VitedgeError, match="unknown NNCF preset 'fast'; choose one of performance"):
        nncf_anchor.nncf_quantize(tmp_path / "m.onnx", [], tmp_path / "q.xml", preset="fast")
