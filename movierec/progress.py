"""A rich progress bar over epochs that shows the latest train loss and validation RMSE."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochProgress:
    """Context manager; pass :meth:`update` as the epoch loop's ``on_epoch`` callback."""

    def __init__(self, console: Console, total_epochs: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]epoch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_epochs, stats="")

    def __enter__(self) -> EpochProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, m: Any) -> None:
        valid = f" valid_rmse {m.valid_rmse:.4f}" if m.valid_rmse is not None else ""
        self._progress.update(
            self._task, completed=m.epoch, stats=f"loss {m.train_loss:.4f} train_rmse {m.train_rmse:.4f}{valid}"
        )
