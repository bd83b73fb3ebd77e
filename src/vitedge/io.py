"""Files: atomic writes, our checkpoint metadata, and the table of checkpoint kinds.

Every artifact vitedge writes goes through :func:`atomic_write` (a crash never leaves a half
file). A vitedge checkpoint is one safetensors file whose metadata says what it holds; the kinds
(a float model, a fake-quantized one) register their writer and reader here, so that
:func:`save_model` and :func:`load_bundle` pick the right one for any model or file while this
module — the lowest layer — imports none of them.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from vitedge.errors import VitedgeError

__all__ = ["FORMAT_NAME", "Bundle", "CheckpointKind", "atomic_write", "checkpoint_kind", "load_bundle",
           "read_metadata", "register_checkpoint_kind", "safetensors_metadata", "save_model", "write_json",
           "write_results", "write_text"]

FORMAT_NAME = "vitedge"


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a half file.

    The file gets the permissions a plain ``open(path, "w")`` would give it: an existing file's
    mode, else ``0o666`` less the umask (``tempfile.mkstemp`` would make every artifact 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary_beside(path)
    try:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            mode = tmp.stat().st_mode  # created with 0o666: the kernel applied the umask
        write(str(tmp))
        # Set after writing: some writers (safetensors) replace the file with a 0600 one.
        os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (and a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_results(folder: str | os.PathLike, record: Any, markdown: str) -> Path:
    """A benchmark's ``results.json`` (``record``) and ``results.md`` (``markdown``) in ``folder``,
    each written atomically; returns the Markdown file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", record)
    return write_text(folder / "results.md", markdown)


def _create_temporary_beside(path: Path) -> Path:
    # O_EXCL, like mkstemp (no clobbering a concurrent writer's file), but mode 0o666 so the
    # kernel applies the umask.
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise VitedgeError(f"checkpoint {path} does not exist; check the path")
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise VitedgeError(f"cannot read checkpoint {path}: the file is truncated or not "
                           f"safetensors ({str(err)[:120]}); re-download or re-export it") from err


def is_vitedge_checkpoint(path: str | os.PathLike) -> bool:
    """True for a safetensors file written by vitedge (it carries its model's config)."""
    return Path(path).suffix == ".safetensors" and safetensors_metadata(path).get("format") == FORMAT_NAME


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The config stored in one of our checkpoints: ``{"arch": ..., "extra": ...}``."""
    meta = safetensors_metadata(path)
    if meta.get("format") != FORMAT_NAME:
        raise VitedgeError(f"{path} is not a vitedge checkpoint (no model config inside); "
                           "load it with --model NAME to say which architecture it holds")
    return {"arch": json.loads(meta["arch"]), "extra": json.loads(meta.get("extra", "{}"))}


@dataclass(frozen=True)
class CheckpointKind:
    """One kind of vitedge checkpoint: how to tell it (by its model, by its file's ``extra``
    metadata), how to write it and how to read it back."""

    name: str
    holds_model: Callable[[Any], bool]
    holds_file: Callable[[Mapping[str, Any]], bool]
    save: Callable[..., Path]
    load: Callable[[str | os.PathLike], Any]


# Most specific first: the first kind that claims a model or a file handles it.
_KINDS: list[CheckpointKind] = []


def register_checkpoint_kind(kind: CheckpointKind, *, first: bool = False) -> None:
    """Add (or replace, by name) a checkpoint kind; ``first`` puts it before the others."""
    _KINDS[:] = [k for k in _KINDS if k.name != kind.name]
    _KINDS.insert(0, kind) if first else _KINDS.append(kind)


def checkpoint_kind(model: Any = None, *, extra: Mapping[str, Any] | None = None) -> CheckpointKind:
    """The kind that writes ``model``, or that wrote a file whose metadata ``extra`` is given."""
    for kind in _KINDS:
        if (kind.holds_model(model) if extra is None else kind.holds_file(extra)):
            return kind
    what = type(model).__name__ if extra is None else "this checkpoint"
    raise VitedgeError(f"no checkpoint kind handles {what}; import vitedge (not just vitedge.io) "
                       "so that its model and quantization kinds are registered")


def save_model(model: Any, path: str | os.PathLike, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (float or fake-quantized) with the writer of its kind, atomically."""
    return checkpoint_kind(model).save(model, path, extra=extra)


@dataclass
class Bundle:
    """What a vitedge checkpoint holds: the model (in eval mode), its class names, the
    preprocessing it was trained and evaluated with, and the rest of its metadata."""

    model: Any
    classes: list[str] | None
    data_config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "float"


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a vitedge checkpoint (float or quantized) into a :class:`Bundle`."""
    meta = read_metadata(path)
    extra = meta["extra"]
    kind = checkpoint_kind(extra=extra)
    model = kind.load(path)
    data_config = {**getattr(model, "data_config", {}), **extra.get("data_config", {})}
    return Bundle(model=model, classes=extra.get("classes"), data_config=data_config, extra=extra,
                  kind=kind.name)
