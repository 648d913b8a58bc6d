"""Training progress on stderr (stdout is reserved for --json).

Always one plain line per epoch (loss, valid metrics, seconds), so a log keeps the history. On a
terminal a Rich live display sits under those lines: epochs done of the budget with elapsed time
and the time left at this pace (an upper bound: early stopping usually ends sooner), and the
batches of the current epoch with the running loss.
"""

from __future__ import annotations

import sys
from typing import Any


class Reporter:
    def __init__(self, *, enabled: bool = True, rich: bool | None = None) -> None:
        self.enabled = enabled
        self.rich = sys.stderr.isatty() if rich is None else rich
        self._progress: Any = None
        self._epochs: Any = None  # task: epochs done of the budget
        self._batches: Any = None  # task: batches of the current epoch
        self._total = 0

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:  # above the live display, never overwritten by it
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def start(self, *, total_epochs: int, n_batches: int, first_epoch: int) -> None:
        self._total = total_epochs
        if not (self.enabled and self.rich) or first_epoch >= total_epochs:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        self._epochs = self._progress.add_task("epochs ", total=total_epochs,
                                               completed=first_epoch, info="valid ndcg@10 -")
        self._batches = self._progress.add_task(f"epoch {first_epoch + 1}", total=n_batches,
                                                info="loss -")

    def batch(self, *, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._batches, advance=1, info=f"loss {loss:.4f}")

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        mark = "*" if record["improved"] else " "
        self.note(
            f"epoch {record['epoch']:3d}/{self._total}  loss {record['loss']:.4f}  "
            f"valid ndcg@10 {record['valid_score']:.4f}{mark}  recall@10 "
            f"{record['valid']['recall@10']:.4f}  no-improve {record['bad']}  "
            f"{record['seconds']:.1f}s"
        )
        if self._progress is not None:
            self._progress.update(self._epochs, completed=record["epoch"],
                                  info=f"valid ndcg@10 {record['valid_score']:.4f}")
            if record["epoch"] < self._total:  # the next epoch, never "epoch 3/2"
                self._progress.reset(self._batches, description=f"epoch {record['epoch'] + 1}",
                                     info="loss -")

    def refit_epoch(self, record: dict[str, Any]) -> None:
        """An epoch of the refit (no validation: the epoch count was chosen by it)."""
        if not self.enabled:
            return
        self.note(f"refit epoch {record['epoch']:3d}/{self._total}  loss {record['loss']:.4f}  "
                  f"{record['seconds']:.1f}s")
        if self._progress is not None:
            self._progress.update(self._epochs, completed=record["epoch"], info="refit")
            if record["epoch"] < self._total:
                self._progress.reset(self._batches, description=f"refit epoch "
                                     f"{record['epoch'] + 1}", info="loss -")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
