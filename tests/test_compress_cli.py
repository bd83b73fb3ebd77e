"""`vitedge prune` and `vitedge quantize`: the recipes end to end on a tiny image folder, their
artifacts reload to the same function, and bad input is one line with a non-zero exit."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

import vitedge
from vitedge.io import read_metadata
from vitedge.quantization import is_quantized


def _same_function(path, model) -> bool:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(vitedge.load(path).eval()(x), model.eval()(x))


def test_prune_cli_finetunes_distilled_and_saves(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, ckpt = tiny_classifier
    out = tmp_path / "p40"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", str(ckpt), "--ratio", "0.4", "--criterion", "l2",
                                "--finetune-epochs", "1", "--distill", "--data", str(data), "--batch-size", "4",
                                "--out", str(out))
    assert code == 0, err
    assert "top-1 fine-tuned" in stdout and "MACs" in stdout
    report = json.loads((out / "prune.json").read_text())["metrics"]
    assert report["macs_pruned"] < report["macs_dense"] and report["params_pruned"] < report["params_dense"]
    assert (out / "finetune" / "train_state.safetensors").is_file()
    saved = json.loads((out / "finetune" / "metrics.json").read_text())["config"]
    assert saved["distill"]["teacher"] == "dense" and saved["epochs"] == 1
    pruned = vitedge.load(out / "model.safetensors")
    assert read_metadata(out / "model.safetensors")["extra"]["pruning"]["config"]["ratio"] == 0.4
    assert sum(p.numel() for p in pruned.parameters()) == report["params_pruned"]


def test_quantize_cli_ptq_then_qat_and_reload(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, ckpt = tiny_classifier
    out = tmp_path / "int8"
    code, stdout, err = run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--method", "minmax", "--calib", "8",
                                "--data", str(data), "--batch-size", "4", "--out", str(out))
    assert code == 0, err
    assert "top-1 W8A8 PTQ" in stdout
    metrics = json.loads((out / "quantize.json").read_text())
    assert {"score_fp32", "score_int8"} <= set(metrics) and metrics["calib_images"] == 8
    assert "| point |" in (out / "points.md").read_text()
    from vitedge.quantization import load_quantized

    qmodel = load_quantized(out / "model.safetensors")
    assert is_quantized(qmodel) and _same_function(out / "model.safetensors", qmodel)

    qat = tmp_path / "qat"
    code, stdout, err = run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--method", "minmax", "--calib", "8",
                                "--qat-epochs", "1", "--data", str(data), "--batch-size", "4", "--out", str(qat))
    assert code == 0, err
    assert "top-1 after QAT" in stdout and "score_qat" in json.loads((qat / "quantize.json").read_text())
    trained = load_quantized(qat / "model.safetensors")
    # the trainer's own per-epoch model file is a quantized checkpoint too, with the same function
    assert is_quantized(vitedge.load(qat / "qat" / "model.safetensors"))
    assert _same_function(qat / "qat" / "model.safetensors", trained)
    assert not all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), qmodel.state_dict().values()))

    # same seed, same trajectory: with --qat-ema the frozen model is the average, not the last step
    averaged = tmp_path / "qat_ema"
    code, stdout, err = run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--method", "minmax",
                                "--calib", "8", "--qat-epochs", "1", "--qat-ema", "0.5", "--data", str(data),
                                "--batch-size", "4", "--out", str(averaged))
    assert code == 0, err
    assert json.loads((averaged / "qat" / "metrics.json").read_text())["config"]["ema"]["decay"] == 0.5
    assert read_metadata(averaged / "qat" / "model.safetensors")["extra"]["weights"] == "ema"
    ema_model = load_quantized(averaged / "model.safetensors")
    assert _same_function(averaged / "qat" / "model.safetensors", ema_model)
    assert not _same_function(qat / "model.safetensors", ema_model)

    rec = tmp_path / "reconstructed"
    code, stdout, err = run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--method", "minmax",
                                "--calib", "8", "--reconstruct", "5", "--data", str(data),
                                "--batch-size", "4", "--out", str(rec))
    assert code == 0, err
    assert json.loads((rec / "quantize.json").read_text())["config"]["reconstruct_iters"] == 5
    learned = load_quantized(rec / "model.safetensors")
    calibrated = qmodel.state_dict()
    # the step sizes moved away from the calibrated ones
    assert any(not torch.equal(v, calibrated[k])
               for k, v in learned.state_dict().items() if k.endswith(".scale"))


@pytest.mark.parametrize("args,fragment", [
    (("prune", "{ckpt}", "--ratio", "1.0"), "in [0, 1)"),
    (("prune", "{ckpt}", "--criterion", "l3"), "unknown"),
    (("prune", "{ckpt}", "--finetune-epochs", "-1"), "--finetune-epochs"),
    (("quantize", "{ckpt}", "--method", "minmaxx"), "minmax"),
    (("quantize", "{ckpt}", "--w-bits", "1"), "w_bits"),
    (("quantize", "{ckpt}", "--calib", "0"), "positive"),
    (("quantize", "{ckpt}", "--reconstruct", "-1"), "reconstruct_iters=-1 must be an int >= 0"),
    (("quantize", "{ckpt}", "--keep-float", "attn.nmu"), "'attn.nmu', which is no quantization point, kind or layer"),
    (("quantize", "{ckpt}", "--holdout", "-1"), "held-out set"),
    (("quantize", "{ckpt}", "--target", "openvnio"), "unknown quantization target 'openvnio': did you mean 'openvino'"),
    (("quantize", "{ckpt}", "--qat-epochs", "1", "--qat-ema", "1.5"), "EMA decay"),
    (("quantize", "{ckpt}", "--data", "cifar10"), "needs --data-dir"),
    (("quantize", "missing.safetensors"), "does not exist"),
])
def test_compress_cli_bad_input(monkeypatch, capsys, tiny_classifier, tmp_path, args, fragment):
    data, ckpt = tiny_classifier
    monkeypatch.chdir(tmp_path)
    args = [a.format(ckpt=ckpt) for a in args]
    if "--data" not in args:
        args += ["--data", str(data)]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


def test_quantize_cli_for_a_target_records_it(monkeypatch, capsys, tiny_classifier, tmp_path):
    from vitedge.quantization import int8_pairs_saturate, load_quantized

    data, ckpt = tiny_classifier
    out = tmp_path / "ov"
    code, stdout, err = run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--target", "openvino", "--calib", "8",
                                "--no-auto-float", "--data", str(data), "--batch-size", "4", "--out", str(out))
    assert code == 0, err
    config = load_quantized(out / "model.safetensors").quant_config
    assert (config.target, config.conv_outputs, config.residual) == ("openvino", False, False)
    assert config.overflow_fix == int8_pairs_saturate() == ("this CPU has no VNNI" in stdout)


def test_quantizing_a_quantized_checkpoint_is_refused(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, ckpt = tiny_classifier
    out = tmp_path / "q"
    assert run_cli(monkeypatch, capsys, "quantize", str(ckpt), "--method", "minmax", "--calib", "4",
                   "--data", str(data), "--out", str(out))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "quantize", str(out / "model.safetensors"), "--data", str(data),
                           "--out", str(tmp_path / "again"))
    assert_one_line_error(code, err, "already quantized")


def test_prune_cli_cuts_m_model_stage_widths_on_request(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, _ = tiny_classifier
    m0 = vitedge.save(vitedge.create_model("efficientvit_m0", num_classes=2, img_size=32),
                      tmp_path / "m0.safetensors", extra={"classes": ["ant", "bee"]})
    reports = {}
    for flag in ("--no-stage-widths", "--stage-widths"):
        out = tmp_path / flag
        code, _, err = run_cli(monkeypatch, capsys, "prune", str(m0), "--ratio", "0.4", "--finetune-epochs", "0",
                               flag, "--data", str(data), "--batch-size", "4", "--out", str(out))
        assert code == 0, err
        reports[flag] = json.loads((out / "prune.json").read_text())["metrics"]
        widths = read_metadata(out / "model.safetensors")["arch"]["kwargs"]["block_widths"]
        assert ("stages.2" in widths) == (flag == "--stage-widths")
    assert reports["--stage-widths"]["macs_pruned"] < 0.75 * reports["--no-stage-widths"]["macs_pruned"]


def test_prune_cli_removes_whole_blocks_of_an_m_model(monkeypatch, capsys, tiny_classifier, tmp_path):
    data, _ = tiny_classifier
    m0 = vitedge.save(vitedge.create_model("efficientvit_m0", num_classes=2, img_size=32),
                      tmp_path / "m0.safetensors", extra={"classes": ["ant", "bee"]})
    code, _, err = run_cli(monkeypatch, capsys, "prune", str(m0), "--ratio", "0.2", "--drop-block", "stages.2:0,2",
                           "--drop-block", "stages.1:1", "--data", str(data), "--batch-size", "4",
                           "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert read_metadata(tmp_path / "p" / "model.safetensors")["arch"]["kwargs"]["depth"] == [1, 1, 1]
    for spec, message in (("stages.2-1", "--drop-block 'stages.2-1': write STAGE:I[,J]"),
                          ("stages.2:3", "blocks [3] of stages.2: give distinct indices in 0…2")):
        code, _, err = run_cli(monkeypatch, capsys, "prune", str(m0), "--drop-block", spec, "--data", str(data),
                               "--out", str(tmp_path / spec))
        assert_one_line_error(code, err, message)
