"""Training progress on stderr (stdout is reserved for --json).

On a terminal: a Rich progress bar per epoch (batches, loss) with the last valid NDCG@10.
Otherwise (logs, CI, pipes): one plain line per epoch, nothing per batch.
"""

from __future__ import annotations

import sys
from typing import Any


class Reporter:
    def __init__(self, *, enabled: bool = True, rich: bool | None = None) -> None:
        self.enabled = enabled
        self.rich = sys.stderr.isatty() if rich is None else rich
        self._progress: Any = None
        self._task: Any = None
        self._epoch = 0
        self._total = 0
        self._n_batches = 0

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def start(self, *, total_epochs: int, n_batches: int, first_epoch: int) -> None:
        self._epoch, self._total, self._n_batches = first_epoch, total_epochs, n_batches
        if not (self.enabled and self.rich):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("valid ndcg@10 {task.fields[valid]}"),
            console=Console(stderr=True), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=n_batches, epoch=first_epoch + 1, epochs=total_epochs, loss="-",
            valid="-",
        )

    def batch(self, *, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}")

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._epoch = record["epoch"]
        if self._progress is not None:
            self._progress.update(self._task, completed=0, epoch=record["epoch"] + 1,
                                  valid=f"{record['valid_score']:.4f}")
            return
        mark = "*" if record["improved"] else " "
        print(
            f"epoch {record['epoch']:3d}/{self._total}  loss {record['loss']:.4f}  "
            f"valid ndcg@10 {record['valid_score']:.4f}{mark}  recall@10 "
            f"{record['valid']['recall@10']:.4f}  no-improve {record['bad']}  "
            f"{record['seconds']:.1f}s",
            file=sys.stderr, flush=True,
        )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
