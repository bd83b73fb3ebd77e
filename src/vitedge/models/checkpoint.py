"""Checkpoints: our own format, timm state dicts, and the official MIT / Microsoft formats.

Our format is one safetensors file whose metadata carries the model config as JSON (the registered
name plus every keyword, pruned widths included), so ``load(path)`` rebuilds the architecture
without unpickling anything. Foreign checkpoints (timm, official) are read with safetensors or
``torch.load(weights_only=True)`` and remapped by the model family's key converter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vitedge.errors import VitedgeError
from vitedge.io import (
    FORMAT_NAME,
    CheckpointKind,
    atomic_write,
    checkpoint_kind,
    is_vitedge_checkpoint,
    read_metadata,
    register_checkpoint_kind,
)
from vitedge.models.registry import create_model, family_module, is_model, unknown_model_error

FORMAT_VERSION = 1
# Wrappers that training scripts put around a state dict, in the order we look for them.
_WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema")


def save(model: nn.Module, path: str | os.PathLike, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to one safetensors file, atomically, in the format of its kind: a float
    model's weights and config, or a fake-quantized model with its quantization record.

    ``extra`` is any JSON-serialisable information to keep beside the config (class names,
    training results, preprocessing); :func:`read_metadata` returns it.
    """
    return checkpoint_kind(model).save(model, path, extra=extra)


def save_float(model: nn.Module, path: str | os.PathLike, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and config as they are (no kind dispatch), atomically."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise VitedgeError("this model was not built by vitedge.create_model, so its architecture "
                           "cannot be recorded; build it with create_model and load the weights")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "arch": json.dumps(arch),
        "extra": json.dumps(dict(extra or {})),
    }
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load(
    path: str | os.PathLike,
    model: str | None = None,
    *,
    num_classes: int | None = None,
    backbone_only: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Load a checkpoint into a freshly built model and return it in eval mode.

    - a vitedge checkpoint rebuilds its own architecture (``model`` may be omitted);
    - a timm or official MIT/Microsoft checkpoint needs ``model`` (the registered name); the
      number of classes is read from the checkpoint unless ``num_classes`` is given; an official
      one builds the model with the family's ``official_model_kwargs`` (keywords given win);
    - a quantized checkpoint (``vitedge.quantization.save_quantized``) comes back fake-quantized;
    - ``backbone_only=True`` keeps the new model's classifier and loads everything else, for
      fine-tuning a pretrained backbone on a dataset with other classes.

    Example::

        model = load("runs/b0/best.safetensors")
        model = load("efficientvit_b0.r224_in1k.safetensors", "efficientvit_b0")
    """
    path = Path(path)
    if not path.is_file():
        raise VitedgeError(f"checkpoint {path} does not exist; check the path")
    if is_vitedge_checkpoint(path):
        meta = read_metadata(path)
        kind = checkpoint_kind(extra=meta["extra"])
        if kind.name != FLOAT_KIND.name:  # e.g. a fake-quantized model: its own reader rebuilds it
            return kind.load(path)
        arch = meta["arch"]
        if model is not None and model != arch["name"]:
            raise VitedgeError(f"{path} holds a {arch['name']} model, not {model}; drop --model "
                               "or pass the right checkpoint")
        build_kwargs = {**arch["kwargs"], **kwargs}
        if num_classes is not None:
            build_kwargs["num_classes"] = num_classes
        net = create_model(arch["name"], **build_kwargs)
        state = read_state_dict(path)
    else:
        if model is None:
            raise VitedgeError(f"{path} is not a vitedge checkpoint, so it does not say which "
                               "architecture it holds; pass the model name (e.g. --model efficientvit_b0)")
        if not is_model(model):
            raise unknown_model_error(model)
        state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
        family = family_module(model)
        if family.is_official_state_dict(state):
            # official weights expect the official hyper-parameters where timm's differ (norm eps)
            kwargs = {**family.official_model_kwargs(model), **kwargs}
        state = convert_state_dict(state, model)
        if num_classes is None and not backbone_only:
            num_classes = _classes_in(state, model)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        net = create_model(model, **kwargs)
    load_state_dict_into(net, state, backbone_only=backbone_only, source=str(path))
    return net.eval()


def resolve_model(spec: str | os.PathLike, num_classes: int | None = None) -> nn.Module:
    """A model in eval mode from a registered name (built fresh) or a vitedge checkpoint path
    (float or quantized, as saved): what a command's MODEL argument names."""
    spec = str(spec)
    if is_model(spec):
        return create_model(spec, **({} if num_classes is None else {"num_classes": num_classes})).eval()
    if Path(spec).is_file():
        return load(spec, num_classes=num_classes)
    if any(sep in spec for sep in ("/", ".")):
        raise VitedgeError(f"checkpoint {spec} does not exist; check the path")
    raise unknown_model_error(spec)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from safetensors or a torch file (``weights_only=True``: nothing is unpickled)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise VitedgeError(f"cannot read checkpoint {path}: the file is truncated, corrupt or not a "
                           f"weights file ({reason}); re-download or re-export it") from err
    except Exception as err:  # weights_only refuses pickled code: that is the safety net working
        raise VitedgeError(f"cannot read checkpoint {path} safely ({type(err).__name__}); only "
                           "tensors are loaded, never pickled objects — save it as safetensors") from err
    return _unwrap(obj, path)


def convert_state_dict(state: Mapping[str, torch.Tensor], model: str) -> dict[str, torch.Tensor]:
    """Bring a timm, official or DDP-prefixed state dict to our key names for ``model``."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    family = family_module(model)
    if family.is_official_state_dict(state):
        state = family.convert_official_state_dict(state)
    return state


def load_state_dict_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    backbone_only: bool = False,
    source: str = "checkpoint",
) -> None:
    """Load ``state`` strictly; any mismatch raises one error that lists what differs."""
    own = model.state_dict()
    if backbone_only:
        head = _classifier_keys(model)
        state = {k: v for k, v in state.items() if k not in head}
        own = {k: v for k, v in own.items() if k not in head}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_few(shapes)})")
        arch = getattr(model, "arch", {}).get("name", type(model).__name__)
        hint = "is it a checkpoint of another architecture?"
        if shapes and all(k.split(" ")[0] in _classifier_keys(model) for k in shapes) and not missing:
            hint = ("only the classifier differs: the checkpoint has another num_classes; pass the "
                    "checkpoint's num_classes, or load the backbone only (backbone_only=True / --backbone-only)")
        raise VitedgeError(f"{source} does not fit {arch}: {'; '.join(parts)}; {hint}")
    model.load_state_dict(state, strict=not backbone_only)


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the final classifier (the layer ``reset_classifier`` replaces)."""
    prefix = getattr(model, "classifier_name", None)
    if prefix is None:
        raise VitedgeError(f"{type(model).__name__} does not name its classifier")
    return {k for k in model.state_dict() if k.startswith(prefix + ".")}


def _classes_in(state: Mapping[str, torch.Tensor], model: str) -> int | None:
    probe = create_model(model, num_classes=7)  # a width no checkpoint has, to find the head's keys
    heads = [k for k in _classifier_keys(probe) if probe.state_dict()[k].shape[:1] == (7,)]
    found = {state[k].shape[0] for k in heads if k in state}
    return found.pop() if len(found) == 1 else None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VitedgeError(f"{path} holds no state dict of tensors; pass a model weights file")
    return dict(obj)


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


FLOAT_KIND = CheckpointKind(name="float", holds_model=lambda model: True, holds_file=lambda extra: True,
                            save=save_float, load=load)
register_checkpoint_kind(FLOAT_KIND)  # the fallback: every other kind registers before it
