"""Training state on disk: one safetensors file, written atomically after every epoch.

Tensors (model weights and buffers, AdamW moments, EMA weights) are safetensors entries; the
rest — epoch, step, metric history, the run's config, optimizer hyper-parameters — is JSON in
the file's metadata. One file means one atomic rename: a crash leaves either the previous
epoch's state or the new one, never a mix. Nothing is pickled.

No RNG state is stored because none is needed: data order, augmentation and the global torch
seed are re-derived from (seed, epoch) at the start of every epoch (see ``sampling``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vitedge.errors import VitedgeError
from vitedge.io import atomic_write
from vitedge.train.ema import ModelEMA, unwrap

STATE_FILE = "train_state.safetensors"
FORMAT = "vitedge-train-state"
VERSION = 1


def save_train_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: ModelEMA | None, meta: dict[str, Any]) -> Path:
    """Write model, optimizer and EMA tensors plus ``meta`` (JSON-ready) to ``path`` atomically."""
    tensors = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
    optim_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optim_state["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "meta": json.dumps(meta),
        "optim_groups": json.dumps(optim_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    # safetensors refuses shared or non-contiguous storage: give each tensor its own copy.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_train_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: ModelEMA | None) -> dict[str, Any]:
    """Restore ``model``, ``optimizer`` and ``ema`` in place from ``path``; return the JSON meta."""
    path = Path(path)
    metadata = read_train_meta(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise VitedgeError(f"cannot read training state {path}: {str(err)[:120]}; start a new run "
                           "(without --resume) or restore the file") from err
    target = unwrap(model)
    device = next(target.parameters()).device
    _load_prefixed(target, tensors, "model.", path)
    if ema is not None:
        if not any(k.startswith("ema.") for k in tensors):
            raise VitedgeError(f"{path} was saved without EMA but this run uses EMA; keep the EMA "
                               "setting of the original run to resume it")
        _load_prefixed(ema.module, tensors, "ema.", path)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    for index, values in json.loads(metadata["optim_scalars"]).items():
        state.setdefault(int(index), {}).update(values)
    groups = json.loads(metadata["optim_groups"])
    for group in groups:  # JSON turned the betas tuple into a list
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise VitedgeError(f"{path}: the optimizer state does not fit this model ({err}); resume with "
                           "the same model and settings as the original run") from err
    return json.loads(metadata["meta"])


def read_train_meta(path: str | os.PathLike) -> dict[str, str]:
    """The raw metadata strings of a training-state file (a clear error if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise VitedgeError(f"no training state at {path}; nothing to resume — drop --resume to start "
                           "a new run")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise VitedgeError(f"cannot read training state {path}: the file is truncated or not "
                           f"safetensors ({str(err)[:120]}); start a new run without --resume") from err
    if metadata.get("format") != FORMAT:
        raise VitedgeError(f"{path} is not a vitedge training state; point --out at a training run")
    return metadata


def _load_prefixed(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise VitedgeError(f"{path}: the saved {prefix.rstrip('.')} weights do not fit this model; "
                           "resume with the same model as the original run")
    module.load_state_dict(state)
