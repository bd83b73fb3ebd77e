"""A model (a name or any vitedge checkpoint) on an FPGA accelerator preset, with some of the
preset's parameters overridden from ``KEY=VALUE`` text: what ``vitedge hw`` estimates.

Example::

    est = estimate_on_accelerator("efficientvit_b0", "trio-zcu102", overrides=["ddr_gbps=4"])
    print(est.summary_table().markdown())
"""

from __future__ import annotations

from collections.abc import Sequence

from vitedge.errors import VitedgeError
from vitedge.hardware.accelerator import AcceleratorEstimate, estimate, get_accelerator
from vitedge.models.checkpoint import resolve_model

__all__ = ["estimate_on_accelerator", "parse_overrides"]


def parse_overrides(items: Sequence[str]) -> dict[str, float | int | bool]:
    """``["ddr_gbps=4", "pes=8", "strict_lanes=true"]`` → ``{"ddr_gbps": 4.0, "pes": 8, ...}``."""
    out: dict[str, float | int | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VitedgeError(f"--set takes KEY=VALUE (got {item!r})")
        if value.strip().lower() in ("true", "false"):
            out[key.strip()] = value.strip().lower() == "true"
            continue
        try:
            out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise VitedgeError(f"--set {key}: {value!r} is not a number") from None
    return out


def estimate_on_accelerator(model: str, accelerator: str = "trio-zcu102", *, resolution: int | None = None,
                            overrides: Sequence[str] = (), include_head: bool = False) -> AcceleratorEstimate:
    """The W8A8 cycle-model estimate of ``model`` on the ``accelerator`` preset with ``overrides``
    (``KEY=VALUE`` text, see :func:`parse_overrides`) applied."""
    config = get_accelerator(accelerator).with_overrides(**parse_overrides(overrides))
    return estimate(resolve_model(model), config, resolution=resolution, include_head=include_head)
