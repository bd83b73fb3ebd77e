"""Classify image files with a vitedge checkpoint or an exported ONNX file.

Both carry what prediction needs: the class names and the preprocessing the model was trained
with (a checkpoint in its ``extra``, an ONNX file in its metadata), so an exported model
predicts exactly as the checkpoint it came from.

Example::

    predictor = load_predictor("runs/b0/model.onnx")
    for path, top in predictor.predict(["cat.jpg"], top=5):
        print(path, top[0])          # ('cat', 0.93)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vitedge.data.folder import load_image
from vitedge.data.transforms import eval_transform
from vitedge.deploy.onnx_export import read_onnx_metadata
from vitedge.deploy.runtimes import OnnxRuntime, Runtime, TorchRuntime
from vitedge.errors import VitedgeError
from vitedge.io import load_bundle

__all__ = ["Predictor", "load_predictor"]


class Predictor:
    """A runtime plus the class names and evaluation transform that go with it."""

    def __init__(self, runtime: Runtime, classes: Sequence[str] | None, data_config: dict[str, Any]) -> None:
        self.runtime = runtime
        self.classes = list(classes) if classes else None
        self.transform = eval_transform(int(data_config["input_size"][-1]), data_config)

    def predict(self, images: Sequence[str | os.PathLike], top: int = 5,
                batch_size: int = 16) -> list[tuple[str, list[tuple[str, float]]]]:
        """``(path, [(class, probability), …])`` for each image, the ``top`` most likely first."""
        if top < 1:
            raise VitedgeError(f"--top must be at least 1 (got {top})")
        pixels = [self.transform(load_image(p)) for p in images]  # every file read before any work
        results = []
        for start in range(0, len(pixels), batch_size):
            batch = torch.stack(pixels[start:start + batch_size]).numpy()
            probs = torch.from_numpy(self.runtime(batch)).float().softmax(-1)
            names = self.classes or [str(i) for i in range(probs.shape[-1])]
            if len(names) != probs.shape[-1]:
                raise VitedgeError(f"the model has {probs.shape[-1]} outputs but names {len(names)} classes; "
                                   "re-export it from its checkpoint")
            values, indices = probs.topk(min(top, probs.shape[-1]), dim=-1)
            for i, (v, k) in enumerate(zip(values.tolist(), indices.tolist())):
                results.append((str(images[start + i]), [(names[j], p) for j, p in zip(k, v)]))
        return results


def load_predictor(model: str | os.PathLike, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ``.onnx`` export (ONNX Runtime) or a vitedge checkpoint (PyTorch)."""
    path = Path(model)
    if not path.is_file():
        raise VitedgeError(f"model file {path} does not exist; check the path")
    if path.suffix == ".onnx":
        try:
            meta = read_onnx_metadata(path)
        except Exception as err:  # onnx raises its own decode errors
            raise VitedgeError(f"{path} is not a readable ONNX file ({type(err).__name__}); re-export it") from err
        if "vitedge.preprocessing" not in meta:
            raise VitedgeError(f"{path} was not exported by vitedge (no preprocessing metadata); export it "
                               "with `vitedge export`")
        return Predictor(OnnxRuntime(path, threads=threads), meta.get("vitedge.classes"),
                         meta["vitedge.preprocessing"])
    bundle = load_bundle(path)
    return Predictor(TorchRuntime(bundle.model, threads=threads), bundle.classes, bundle.data_config)

