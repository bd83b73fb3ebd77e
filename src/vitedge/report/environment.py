"""Where the numbers were measured: CPU, threads, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path

__all__ = ["environment"]

_PACKAGES = ("vitedge", "torch", "onnx", "onnxruntime", "openvino", "numpy")


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict[str, str]:
    """Plain strings, in the order a reader wants them."""
    env = {"CPU": f"{_cpu_name()} ({os.cpu_count()} logical cores)", "threads": str(threads),
           "OS": platform.platform(), "Python": platform.python_version()}
    for package in _PACKAGES:
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    env["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return env
