"""Cached stages of long work (the study's stages, a search, the benchmarks' runs): each
stage's result is recorded with the settings that produced it.

A stage folder holds ``stage.json`` = ``{"key": ..., "result": ...}``, written atomically when
the stage finishes. A re-run whose key matches returns the recorded result without work; a key
that differs (the config changed) clears the folder and redoes the stage; a folder without
``stage.json`` is a stage that was interrupted, and resumes (training runs continue from their
last epoch checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitedge.io import write_text

STAGE_FILE = "stage.json"
# the layout of recorded results: a folder recorded in another layout is redone, not misread
RESULT_FORMAT = 2


class Stage:
    """One unit of cached work in ``folder``, identified by ``key`` (plain JSON data)."""

    def __init__(self, folder: Path, key: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.key = json.loads(json.dumps(key))
        self.log = log

    @property
    def fingerprint(self) -> str:
        """A short hash of the key: what downstream stages record of this one."""
        return hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]

    def cached(self) -> dict[str, Any] | None:
        """The recorded result if this exact stage already ran; clears a stale folder."""
        record_file = self.folder / STAGE_FILE
        if record_file.is_file():
            record = json.loads(record_file.read_text())
            if record.get("key") == self.key and record.get("format", 1) == RESULT_FORMAT:
                return record["result"]
            self.log(f"{self.folder.name}: settings changed since the last run; redoing it")
            shutil.rmtree(self.folder)
        return None

    def done(self, result: dict[str, Any]) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"key": self.key, "format": RESULT_FORMAT, "result": result}, indent=2)
        write_text(self.folder / STAGE_FILE, text)
        return result


def file_digest(path: Path) -> str:
    """sha256 of a file (checkpoints are a few MB: cheap, and robust to copies and touches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
