"""Progress display: rich bars with loss, accuracy and images/s on a terminal, on rank 0 only.

Off a terminal (logs, CI, background runs) or on other ranks the bars stay quiet; rank 0 still
prints one summary line per epoch unless ``verbose`` is off.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """One bar per epoch; :meth:`advance` after each step with the step's loss and accuracy."""

    def __init__(self, *, enabled: bool, verbose: bool = True, console: Console | None = None) -> None:
        self.console = console or Console()
        self.verbose = enabled and verbose
        self.bars = self.verbose and self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> TrainProgress:
        if self.bars:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1f}%  "
                           "{task.fields[ips]:.0f} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._t0, self._images = time.perf_counter(), 0
        if self._progress is not None:
            self._task = self._progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps,
                                                 loss=0.0, acc=0.0, ips=0.0)

    def advance(self, images: int, loss: float, acc: float) -> None:
        self._images += images
        if self._progress is not None:
            ips = self._images / max(time.perf_counter() - self._t0, 1e-9)
            self._progress.update(self._task, advance=1, loss=loss, acc=acc, ips=ips)

    def images_per_second(self) -> float:
        return self._images / max(time.perf_counter() - self._t0, 1e-9)

    def log(self, message: str) -> None:
        if self.verbose:
            self.console.print(message, highlight=False, soft_wrap=True)
