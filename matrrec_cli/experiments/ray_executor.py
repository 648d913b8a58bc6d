"""Many runs on Ray: one task per (configuration, seed), on this machine or on a cluster.

Why Ray: it runs the same code on a laptop (an embedded local instance, started here and shut
down at exit) and on a cluster (`--address` or $RAY_ADDRESS), and it already does what a sweep
needs of a scheduler — resource requests per task (CPUs, GPUs), placement, retries of a task
whose worker died, cancellation. Nothing here schedules, queues or retries by hand.

No shared file system is assumed:
* the prepared dataset travels through Ray's object store (put once per dataset, read by every
  task that needs it, written once per node into a scratch cache), unless the user declares the
  data directory shared (`--shared-data-dir`);
* a task trains into a scratch directory on its node and returns the finished run's record
  (config, env, history, ranks, metrics; checkpoints with `--keep-checkpoints`); the driver
  writes it into the results directory with a local run's identity (runs.install_run), so
  finished runs are reused and tables render exactly as for local runs.

Faults: a task whose worker dies (killed, out of memory, node lost) is retried by Ray up to
`max_retries` times; the retry resumes from the scratch run's last checkpoint when it lands on
the same node, else it starts again — training is deterministic, so both end with the metrics of
an uninterrupted run. A run that fails because of its configuration raises once (exceptions are
not retried), is named in the summary, and the other runs go on. Ctrl-C cancels queued and
running tasks; runs that finished before are already written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.experiments.jobs import ExecutorOptions, Job
from matrrec_cli.train import pipeline, runs
from matrrec_cli.train.config import TrainConfig
from matrrec_cli.train.progress import Reporter

# Test hook, "EPOCH:MARKER": after that epoch's checkpoint a Ray task SIGKILLs its own worker,
# once (the marker file records it), so a test can check that the retried run ends with the
# metrics of an uninterrupted one. Read on the driver and handed to the tasks.
KILL_ENV = "MATRREC_RAY_KILL_AFTER_EPOCH"
SCRATCH = "matrrec-ray"  # under the node's temp directory: cached datasets, runs in progress


def ray_module() -> Any:
    """Ray, or a usage error saying how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'matrrec[ray]'") from None
    return ray


CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str | None) -> None:
    """A host:port (or ray://host:port) address where nothing listens is one error within
    seconds; Ray itself would keep retrying its connection for minutes with no word."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port; Ray says what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise MatrrecError(f"--address {address}: nothing answers there ({exc.strerror or exc}); "
                           "start the head with `ray start --head` or give the address it "
                           "printed") from None


def check_resources(ray: Any, cpus: float, gpus: float) -> None:
    """A task asking for more CPUs or GPUs than any node of the cluster has would wait forever;
    say so at once instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for name, want, flag in (("CPU", cpus, "--cpus-per-run"), ("GPU", gpus, "--gpus-per-run")):
        most = max((n.get(name, 0.0) for n in nodes), default=0.0)
        if want > most:
            raise UsageError(f"{flag} {want:g}: no node of the Ray cluster has that many "
                             f"{name}s (the most on one node: {most:g}); lower {flag}")


class Session:
    """Attach to the Ray cluster at `address` (else $RAY_ADDRESS), or start an embedded local
    instance; on exit, shut down only what this command started."""

    def __init__(self, address: str | None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.started = False

    def __enter__(self) -> Any:
        ray = ray_module()
        if not ray.is_initialized():
            _check_reachable(self.address)
            try:
                ray.init(address=self.address or "local", include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise MatrrecError(f"cannot start or reach Ray at {where}: "
                                   f"{str(exc).splitlines()[0]}") from None
            self.started = True
        return ray

    def __exit__(self, *exc: object) -> None:
        if self.started:
            ray_module().shutdown()


# --- the task: runs on a worker -------------------------------------------------------------


class _QueueReporter(Reporter):
    """Sends a task's notes and epoch lines to the driver through a Ray queue."""

    def __init__(self, queue: Any, key: int, kill_after: str | None) -> None:
        super().__init__(enabled=True, rich=False)
        self.queue, self.key = queue, key
        self.kill_epoch, _, self.kill_marker = (kill_after or "0:").partition(":")

    def note(self, text: str) -> None:
        self.queue.put((self.key, text))

    def epoch(self, record: dict[str, Any]) -> None:
        self.note(f"epoch {record['epoch']}/{self._total}  loss {record['loss']:.4f}  valid "
                  f"ndcg@10 {record['valid_score']:.4f}")
        if record["epoch"] == int(self.kill_epoch) and not os.path.exists(self.kill_marker):
            Path(self.kill_marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies after this checkpoint


def _materialise(files: dict[str, bytes], dataset: str) -> Path:
    """The dataset's files on this node (once per node and content), returns the data dir."""
    digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / SCRATCH / "data" / digest
    if not (root / dataset).is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".in-", dir=root))
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        try:
            os.rename(tmp, root / dataset)
        except OSError:  # another task on this node was first: its copy is the same
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def train_task(cfg_dict: dict[str, Any], data: dict[str, bytes] | None, *, key: int,
               queue: Any, threads: int, scratch: str, checkpoints: bool,
               kill_after: str | None = None) -> dict[str, Any]:
    """Train one run on this worker; returns its record for the driver to write."""
    import ray

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    node = ray.get_runtime_context().get_node_id()[:12]
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    reporter = _QueueReporter(queue, key, kill_after)
    reporter.note(f"running on node {socket.gethostname()} ({node})"
                  + (f", GPU {','.join(gpu_ids)}" if gpu_ids else ""))
    data_dir = _materialise(data, cfg.dataset) if data is not None else Path(cfg.data_dir)
    # a retry that lands on this node finds the run's last checkpoint here and resumes from it
    local = dataclasses.replace(cfg, data_dir=str(data_dir), results_dir=str(
        Path(tempfile.gettempdir()) / SCRATCH / "runs" / scratch))
    _, run_dir = pipeline.train(local, resume=True, reporter=reporter)
    env = json.loads((run_dir / runs.ENV).read_text())
    env["executor"] = {"kind": "ray", "node_id": node, "host": socket.gethostname(),
                       "gpu_ids": gpu_ids, "threads": threads}
    (run_dir / runs.ENV).write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")
    record = runs.pack_run(run_dir, checkpoints=checkpoints)
    shutil.rmtree(run_dir, ignore_errors=True)
    return record


def profile_task(measure: Callable[[dict[str, Any]], dict[str, Any]], cell: dict[str, Any],
                 threads: int) -> dict[str, Any]:
    """One profile cell on a fresh worker process (the task is created with max_calls=1)."""
    torch.set_num_threads(threads)
    return measure(cell)


# --- the driver ------------------------------------------------------------------------------


class Board:
    """One line per run — queued, running on node X, epoch k of N, done or failed — kept live
    in place on a terminal; in a log (no terminal) each change is a line of its own."""

    def __init__(self, jobs: list[Job], reporter: Reporter) -> None:
        self.reporter = reporter
        self.heads = {job.index: job.head for job in jobs}
        self.state = dict.fromkeys(self.heads, "queued")
        self.live: Any = None
        if reporter.enabled and reporter.rich:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._render(), console=Console(stderr=True), transient=False,
                             auto_refresh=False)
            self.live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for key, head in self.heads.items():
            table.add_row(head, self.state[key])
        return table

    def set(self, key: int, text: str) -> None:
        self.state[key] = text
        if self.live is not None:
            self.live.update(self._render(), refresh=True)
        else:
            self.reporter.note(f"{self.heads[key]}: {text}")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _dataset_files(cfg: TrainConfig) -> dict[str, bytes]:
    folder = Path(cfg.data_dir) / cfg.dataset
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def default_gpus(ray: Any) -> float:
    """One GPU per run where the cluster has GPUs, else none."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def run_jobs(jobs: list[Job], opts: ExecutorOptions, reporter: Reporter
             ) -> tuple[dict[int, Path], dict[int, str]]:
    """Train `jobs` as Ray tasks; write each finished run as it arrives. Returns the written run
    dirs and the errors of failed runs, both by job index."""
    if not jobs:
        return {}, {}
    with Session(opts.address) as ray:
        from ray.util.queue import Empty, Queue

        gpus = default_gpus(ray) if opts.gpus_per_run is None else opts.gpus_per_run
        check_resources(ray, opts.cpus_per_run, gpus)
        queue = Queue()
        task = ray.remote(train_task).options(
            num_cpus=opts.cpus_per_run, num_gpus=gpus, max_retries=opts.max_retries,
            retry_exceptions=False)
        scratch = hashlib.sha256(
            f"{socket.gethostname()}:{Path(jobs[0].cfg.results_dir).resolve()}".encode()
        ).hexdigest()[:16]
        data_refs: dict[tuple[str, str], Any] = {}
        pending: dict[Any, Job] = {}
        for job in jobs:
            where = (job.cfg.data_dir, job.cfg.dataset)
            if not opts.shared_data_dir and where not in data_refs:
                data_refs[where] = ray.put(_dataset_files(job.cfg))
            ref = task.remote(job.cfg.to_dict(), data_refs.get(where), key=job.index,
                              queue=queue, threads=opts.cpus_per_run, scratch=scratch,
                              checkpoints=opts.keep_checkpoints,
                              kill_after=os.environ.get(KILL_ENV))
            pending[ref] = job
        board = Board(jobs, reporter)
        written: dict[int, Path] = {}
        failed: dict[int, str] = {}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                _drain(queue, Empty, board)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        written[job.index] = runs.install_run(job.cfg, ray.get(ref))
                        board.set(job.index, f"done, saved to {written[job.index]}")
                    except ray.exceptions.RayError as exc:
                        failed[job.index] = _reason(exc)
                        board.set(job.index, f"failed: {failed[job.index]}")
            _drain(queue, Empty, board)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            board.close()
            reporter.note(f"cancelled {len(pending)} queued or running run(s); the "
                          f"{len(written)} finished are kept")
            raise
        finally:
            board.close()
        return written, failed


def _drain(queue: Any, empty: type[Exception], board: Board) -> None:
    while True:
        try:
            key, text = queue.get_nowait()
        except empty:
            return
        board.set(key, text)


def _reason(exc: Exception) -> str:
    """The one line that says why a task failed: the run's own error where there is one."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def profile_cells(cells: list[dict[str, Any]], opts: ExecutorOptions,
                  measure: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Each profile cell as a Ray task on a fresh worker process (`measure` is profile's),
    results in order."""
    with Session(opts.address) as ray:
        gpus = default_gpus(ray) if opts.gpus_per_run is None else opts.gpus_per_run
        check_resources(ray, opts.cpus_per_run, gpus)
        # max_calls=1: each cell in a worker process of its own, so its peak memory is its own
        task = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=gpus, max_calls=1,
                          max_retries=opts.max_retries)(profile_task)
        refs = [task.remote(measure, cell, opts.cpus_per_run) for cell in cells]
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as exc:
            raise MatrrecError(f"profiling on Ray failed: {_reason(exc)}") from None
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
