"""The one table of deployment formats: export, validation and benchmark all iterate it.

A new format is one row here plus one export function and one runtime class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vitedge.errors import VitedgeError

PRECISIONS = ("fp32", "fp16", "int8")


def package_status(package: str, install: str | None = None) -> tuple[bool, str]:
    """Whether ``package`` imports, and what to ``pip install`` when not. Importing, not just
    finding it: an install that cannot load (a missing native library) is not available either."""
    fix = f"pip install {install or package}"
    try:
        importlib.import_module(package)
    except ImportError as err:
        if err.name == package:
            return False, f"Python package {package!r} is not installed ({fix})"
        return False, f"Python package {package!r} cannot be imported ({err}); reinstall it ({fix})"
    return True, ""


@dataclass(frozen=True)
class DeployFormat:
    """What a format is, where it runs, and what it needs installed."""

    name: str
    suffix: str
    cpu: bool
    gpu: bool
    precisions: tuple[str, ...]
    requires: str | None  # Python module that must be importable (None: always available)

    def available(self) -> tuple[bool, str]:
        """Whether this machine can produce and run the format, and why not if it cannot."""
        return package_status(self.requires) if self.requires else (True, "")


FORMATS: tuple[DeployFormat, ...] = (
    # a quantized model saves as its fake-quant simulation (every scale), which is what int8 means here
    DeployFormat("torch", ".safetensors", cpu=True, gpu=True, precisions=("fp32", "int8"), requires=None),
    DeployFormat("onnx", ".onnx", cpu=True, gpu=True, precisions=("fp32", "fp16", "int8"),
                 requires="onnxruntime"),
)


def get_format(name: str) -> DeployFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise VitedgeError(f"unknown format {name!r}; choose one of {', '.join(f.name for f in FORMATS)}")


def check_precision(fmt: DeployFormat, precision: str) -> None:
    if precision not in fmt.precisions:
        raise VitedgeError(f"format {fmt.name} supports precision {', '.join(fmt.precisions)}, "
                           f"not {precision!r}")
