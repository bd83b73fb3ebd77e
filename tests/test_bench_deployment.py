"""`vitedge bench`: every runtime × precision gets a row — measured, or ✗ with the reason."""

from __future__ import annotations

import json

import pytest
from test_cli import run_cli

pytest.importorskip("onnxruntime")


def test_bench_measures_every_available_runtime_and_precision(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, ckpt = tiny_classifier
    out = tmp_path / "bench"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--data", str(data), "--calib", "8",
                                "--batch-size", "1", "--batch-size", "2", "--threads", "1", "--runs", "3",
                                "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "bench.json").read_text())
    rows = {(r["runtime"], r["precision"]): r for r in report["rows"]}
    expected = {("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
                ("onnxruntime", "int8")}
    assert expected <= set(rows)
    for key in expected:
        row = rows[key]
        assert row["ok"], row
        assert [x["batch_size"] for x in row["latency"]] == [1, 2] and 0 <= row["top1"] <= 100
        assert row["latency"][0]["median_ms"] > 0 and row["size_mib"] > 0
    assert rows["onnxruntime", "int8"]["size_mib"] < 0.4 * rows["onnxruntime", "fp32"]["size_mib"]
    assert rows["onnxruntime", "fp16"]["size_mib"] < 0.6 * rows["onnxruntime", "fp32"]["size_mib"]
    if ("openvino", "fp32") in rows and rows["openvino", "fp32"]["ok"]:
        assert rows["openvino", "fp32"]["top1"] == pytest.approx(rows["onnxruntime", "fp32"]["top1"], abs=5)
    assert "| onnxruntime | int8 | ✓ |" in (out / "bench.md").read_text()


def test_bench_without_data_says_why_int8_is_missing(monkeypatch, capsys, tiny_classifier, tmp_path):
    _, ckpt = tiny_classifier
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "onnxruntime", "--batch-size", "1",
                           "--threads", "1", "--runs", "2", "--out", str(tmp_path / "b"))
    assert code == 0, err
    rows = {r["precision"]: r for r in json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]}
    assert rows["fp32"]["ok"] and "top1" not in rows["fp32"]
    assert not rows["int8"]["ok"] and "--data to calibrate" in rows["int8"]["reason"]
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "tensorrtt", "--out", str(tmp_path))
    assert code == 2 and "unknown runtime" in err
