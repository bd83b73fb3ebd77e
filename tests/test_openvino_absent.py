"""Without the openvino extra (``pip install vitedge``): the benchmark still runs, its OpenVINO
rows say how to get them, and asking for OpenVINO by name is a one-line error.

OpenVINO is made unimportable in this process and in the worker processes the benchmark starts
(the same import blocker as the install test, through PYTHONPATH)."""

from __future__ import annotations

import json
import os
import sys

import pytest
from test_cli import assert_one_line_error, run_cli
from test_install import BLOCKER

from vitedge.deploy import get_runtime, load_runtime
from vitedge.errors import VitedgeError

HINT = "pip install vitedge[openvino]"


@pytest.fixture
def no_openvino(monkeypatch, tmp_path_factory):
    for name in [n for n in sys.modules if n == "openvino" or n.startswith("openvino.")] + ["openvino"]:
        monkeypatch.setitem(sys.modules, name, None)  # import openvino[.x] raises ImportError
    blocker = tmp_path_factory.mktemp("no_openvino")
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=("openvino",)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])))


def test_openvino_is_unavailable_with_the_install_hint(no_openvino, tmp_path):
    ok, why = get_runtime("openvino").available()
    assert not ok and HINT in why
    with pytest.raises(VitedgeError, match=r"runtime openvino is not available: .*vitedge\[openvino\]"):
        load_runtime("openvino", tmp_path / "m.onnx")


def test_bench_runs_and_marks_the_openvino_rows(no_openvino, monkeypatch, capsys, tiny_classifier, tmp_path):
    _, ckpt = tiny_classifier
    out = tmp_path / "bench"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--batch-size", "1", "--threads", "1",
                                "--runs", "2", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "bench.json").read_text())["rows"]
    rows = {(r["runtime"], r["precision"]): r for r in report if not r["quantizer"].startswith("NNCF")}
    anchors = [r for r in report if r["quantizer"].startswith("NNCF")]
    assert len(anchors) == 2 and all(not r["ok"] and HINT in r["reason"] for r in anchors), anchors
    for precision in ("fp32", "bf16", "int8"):
        row = rows["openvino", precision]
        assert not row["ok"] and HINT in row["reason"], row
    assert rows["onnxruntime", "fp32"]["ok"] and rows["onnxruntime", "fp16"]["ok"]
    assert rows["torch", "fp32"]["ok"]
    assert "--data to calibrate" in rows["torch", "int8"]["reason"]  # not "no such file"
    trt_ok, trt_why = get_runtime("tensorrt").available()
    assert all(rows["tensorrt", p]["ok"] == trt_ok and rows["tensorrt", p].get("reason", "") == trt_why
               for p in ("fp32", "fp16")), [rows["tensorrt", p] for p in ("fp32", "fp16")]
    assert "| openvino | fp32 |  | ✗ |" in (out / "bench.md").read_text()
    missing = f"Python package 'openvino' is not installed ({HINT}) |"
    assert f"| openvino | fp32 |  | ✗ |  |  |  |  |  | {missing}" in stdout


def test_bench_asking_for_openvino_is_a_one_line_error(no_openvino, monkeypatch, capsys, tiny_classifier,
                                                       tmp_path):
    """A runtime named on the command line that cannot run here is an error (a script asking for
    it must not get a table of ✗ and exit 0), raised before any export."""
    _, ckpt = tiny_classifier
    out = tmp_path / "bench"
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(ckpt), "--runtime", "onnxruntime",
                           "--runtime", "openvino", "--out", str(out))
    assert code == 2
    assert_one_line_error(code, err, "runtime openvino is not available", HINT)
    assert not out.exists() or not any(out.iterdir())
