"""What runs where: the executor a command chose, and one run handed to it.

Its own module so that the runner and the Ray executor both read it without importing each
other.
"""

from __future__ import annotations

import dataclasses

from matrrec_cli.errors import UsageError
from matrrec_cli.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class ExecutorOptions:
    """Where the runs of one command train: `local` (in this process, one after another; other
    processes on this machine can share the work through file locks) or `ray` (one task per
    run on a local Ray or a cluster; see ray_executor)."""

    kind: str = "local"
    address: str | None = None  # a running Ray cluster; None: $RAY_ADDRESS, else embedded
    cpus_per_run: int = 1  # Ray's CPU request per task, and the task's torch threads
    gpus_per_run: float | None = None  # None: 1 where the cluster has GPUs, else 0
    keep_checkpoints: bool = False  # ship best.pt and last.pt back with each run record
    shared_data_dir: bool = False  # workers read --data-dir themselves (a shared file system)
    max_retries: int = 3  # Ray's retries of a task whose worker died

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise UsageError(f"--executor must be local or ray, not {self.kind!r}")
        if self.cpus_per_run < 1:
            raise UsageError(f"--cpus-per-run must be at least 1, not {self.cpus_per_run}")
        if self.gpus_per_run is not None and not self.gpus_per_run >= 0:
            raise UsageError(f"--gpus-per-run must be >= 0, not {self.gpus_per_run}")


LOCAL = ExecutorOptions()


@dataclasses.dataclass(frozen=True)
class Job:
    """A run to train: its place in the command's list, its progress label, its config."""

    index: int
    head: str
    cfg: TrainConfig
