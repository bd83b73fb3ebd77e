"""Running a graph exported for a fixed batch size on batches of any multiple of it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vitedge.errors import VitedgeError

__all__ = ["run_in_fixed_batches"]


def run_in_fixed_batches(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                         fixed: int | None) -> np.ndarray:
    """``run(batch)``, or, for a graph exported with a fixed batch (``vitedge export --batch-one``),
    ``run`` on consecutive slices of that size with the logits concatenated."""
    if fixed is None or len(batch) == fixed:
        return run(batch)
    if len(batch) % fixed:
        raise VitedgeError(f"this graph takes batches of exactly {fixed} images, got {len(batch)}; "
                           "use a multiple of it or re-export without --batch-one")
    return np.concatenate([run(batch[i:i + fixed]) for i in range(0, len(batch), fixed)])
