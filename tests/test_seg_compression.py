"""Compression on a segmentation model: Trio-ViT INT8 (head included) reloads, exports to QDQ ONNX
that ONNX Runtime runs with integer kernels and that agrees with the simulation per pixel; a pruned
segmentation model quantizes too."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import exact_w_bits, randomize_batchnorm

import vitedge
from vitedge.quantization import QuantConfig, load_quantized, quantizers, save_quantized

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SIZE = (64, 96)


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def _seg_model(seed: int = 0) -> nn.Module:
    """Seg-B0 with weights that make the logits depend on the input (see test_pruning)."""
    torch.manual_seed(seed)  # the default init of the biases: the same model on every call
    model = vitedge.create_model("efficientvit_seg_b0", num_classes=11, img_size=SIZE)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
    return randomize_batchnorm(model).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def quantized():
    # 7-bit weights on CPUs without VNNI: ORT's integer convolutions are exact there only so
    config = QuantConfig(method="trio", conv_outputs=True, w_bits=exact_w_bits(), auto_float=False)
    return vitedge.quantize(_seg_model(), [_images(4, 1), _images(4, 2)], config=config)


def test_every_point_is_calibrated_head_included(quantized):
    names = [name for name, q in quantizers(quantized)]
    for part in ("head.in_convs.", "head.middle.", "head.classifier"):
        assert any(n.startswith(part) for n in names), part
    with torch.no_grad():
        float_out, quant_out = _seg_model()(_images(2, 3)), quantized(_images(2, 3))
    assert quant_out.shape == float_out.shape == (2, 11, 8, 12)
    # a random net's classes are too close for argmax agreement to mean much; the logits' direction does
    cosine = torch.nn.functional.cosine_similarity(quant_out.flatten(), float_out.flatten(), dim=0)
    assert cosine > 0.98, f"W8A8 logits have cosine {cosine:.4f} to the float ones"


def test_quantized_segmentation_model_reloads_identically(quantized, tmp_path):
    path = save_quantized(quantized, tmp_path / "q.safetensors")
    x = _images(2, 4)
    with torch.no_grad():
        assert torch.equal(load_quantized(path)(x), quantized(x))


def test_int8_onnx_runs_integer_kernels_and_agrees_per_pixel(quantized, tmp_path):
    path = vitedge.export(quantized, tmp_path / "seg_int8.onnx", precision="int8")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = _images(4, 5)
    runtime = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        simulated = quantized(x).numpy()
    ops = Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] >= 40 and ops["Resize"] == 2, ops  # the bicubic upsamples stay float
    agree = (runtime.argmax(1) == simulated.argmax(1)).mean()
    assert agree >= 0.99, f"ONNX Runtime and the simulation agree on {agree:.2%} of the pixels"
    with torch.no_grad():  # the guard: the classes for other images agree far less (measured 37.5 %)
        chance = (runtime.argmax(1) == quantized(_images(4, 8)).numpy().argmax(1)).mean()
    assert chance < 0.6, f"the per-pixel classes hardly depend on the image ({chance:.2%} agree anyway)"


def test_pruned_segmentation_model_quantizes_and_reloads(tmp_path):
    pruned = vitedge.prune(_seg_model(), ratio=0.4)
    qmodel = vitedge.quantize(pruned, [_images(4, 6)], method="trio")
    path = save_quantized(qmodel, tmp_path / "pruned_q.safetensors")
    x = _images(2, 7)
    with torch.no_grad():
        out = load_quantized(path)(x)
        assert torch.equal(out, qmodel(x)) and out.shape == (2, 11, 8, 12)
    assert np.isfinite(out.numpy()).all()
