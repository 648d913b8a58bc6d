"""One run on several devices: `matrrec train --nproc-per-node N` (torch's launcher, torchrun).

The launcher process re-runs the same `matrrec train` command line in N worker processes under
`torch.distributed.run`; each worker is one rank (nccl on CUDA, one GPU per rank; gloo on CPU).
What a rank does differently from a single process, and why:

* Training: every rank draws the same permutation (the shuffle generator shares the seed), so
  every rank sees the same global batches of `batch_size` samples; each rank takes a contiguous
  shard of each batch (`shard`). The global batch size and the learning rate stay as configured:
  `train_step` sums `shard loss x shard terms` over ranks and divides by the global number of
  loss terms, so the update is the 1-process update on the whole batch, also with unequal or
  empty shards. It is equal to rounding, not to the bit: the gradient is summed in another order
  (per shard, then across ranks), and each rank draws its own dropout masks (seed + rank).
* Evaluation: each rank scores every world-th batch of the very batches one process would score
  (so each user's rank is bit-identical to one process's), then `gather_ranks` gives every rank
  all users' ranks; metrics are computed once from all of them, never averaged over ranks'
  means (the bug RecBole fixed in PR #1872), and early stopping decides the same on every rank.
* Records: only rank 0 takes the run lock, picks or creates the run directory (`share` tells
  the others) and writes files; env.json records the number of ranks and the backend. The
  configuration hash does not change with the number of ranks: it says what is computed, not
  where.

A plain process (no torchrun environment) is rank 0 of 1: it never sets up a process group and
every helper here is a no-op for it, so one process computes exactly what it did before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.models.base import SeqBatch


class World(NamedTuple):
    rank: int
    size: int


def launched() -> World:
    """The rank and number of ranks torchrun asked for (its RANK / WORLD_SIZE environment): what
    decides, before anything is set up, whether this process is one of several."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def world() -> World:
    """The process group in use: rank 0 of 1 unless `init` set up one of several ranks. Code that
    runs collectives asks this, so a plain process (or a command torchrun started that never
    called `init`) works alone."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def is_main() -> bool:
    """Rank 0, the one that prints and writes (also true of a plain process)."""
    return launched().rank == 0


# A rank whose collective broke because another rank exited leaves with this status and says
# nothing: the rank that exited first has printed why (its one error line), and the launcher
# reports that rank's status, not this one.
PEER_EXIT = 3
_PEER_GONE = re.compile(r"closed by peer|reset by peer|Broken pipe|Connection refused|"
                        r"remote worker crashing", re.IGNORECASE)


# --- the launcher ---------------------------------------------------------------------------

def check(nproc: int, device: str) -> None:
    """Refuse, in the launcher, what every rank would fail on: one line, before any process."""
    from matrrec_cli.train.device import resolve_device

    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be at least 1, not {nproc}")
    if launched().size > 1:
        raise UsageError("--nproc-per-node inside a process torchrun started; run matrrec train "
                         "--nproc-per-node N from a plain shell")
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise UsageError(f"--device {device} names one GPU, but each of the "
                             f"{nproc} ranks takes its own (cuda:LOCAL_RANK); use --device cuda")
        if nproc > torch.cuda.device_count():
            raise UsageError(f"--nproc-per-node {nproc}: torch sees "
                             f"{torch.cuda.device_count()} GPU(s), one per rank")


def command_line(ctx: Any, drop: tuple[str, ...] = ("nproc_per_node",)) -> list[str]:
    """The command of click context `ctx` as arguments, without the `drop` parameters: the
    options the user gave on the command line (defaults and environment values the ranks find
    by themselves, so every value keeps its recorded source). Rebuilt from the parse rather than
    read from sys.argv, which is not this command's when `main([...])` is called."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        if name in drop or ctx.get_parameter_source(name).name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        values = value if param.multiple or param.nargs != 1 else [value]
        text = [str(getattr(v, "value", v)) for v in values]
        if param.param_type_name != "option":  # a positional argument
            args += text
        elif param.is_flag:
            args.append(param.opts[0] if value or not param.secondary_opts
                        else param.secondary_opts[0])
        else:
            for v in text:
                args += [param.opts[0], v]
    return args


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """os.environ with `values` set (where unset) for the duration: torchrun's workers inherit
    this process's environment, and the launcher must not leave it changed."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(argv: list[str], nproc: int, *, device: str = "auto") -> int:
    """Run `matrrec <argv>` as `nproc` ranks under torchrun on this machine; their exit status.

    In-process torchrun (`torch.distributed.run`), not a `torchrun` child: a failure comes back
    as an exception that names the failed rank and its exit status, which this returns as is
    (the rank has already printed its one error line), instead of torchrun's multi-line report.
    Each rank gets cores // nproc intra-op threads unless OMP_NUM_THREADS says otherwise.
    """
    check(nproc, device)
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # The agent's log lines (rendezvous, worker start, "failed (exitcode: 1)", "received death
    # signal") repeat what the ranks and this function say; a real agent fault still raises.
    # Its modules give each logger its own level, so every one is set, not just the parent.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.run", "torch.distributed.elastic",
                            "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module",
                                "matrrec_cli", *argv])
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        with _environ(OMP_NUM_THREADS=threads):
            torchrun.run(args)
    except ChildFailedError as exc:
        # the first rank that failed by itself: it exited with a status (and said why), or was
        # killed; not one that only lost its peers, nor one the launcher stopped afterwards
        failed = sorted(exc.failures.items(), key=lambda kv: kv[1].timestamp)
        for _, failure in failed:
            if failure.exitcode > 0 and failure.exitcode != PEER_EXIT:
                return failure.exitcode
        for rank, failure in failed:
            if failure.exitcode < 0:
                raise MatrrecError(f"rank {rank} was killed by {failure.signal_name()}"
                                   " (out of memory?); the other ranks were stopped") from None
        raise MatrrecError("the ranks lost their connection to each other") from None
    except SignalException as exc:  # Ctrl-C or a kill of the launcher: the ranks are stopped
        return 130 if exc.sigval.name == "SIGINT" else 128 + int(exc.sigval)
    return 0


# --- inside a rank --------------------------------------------------------------------------

@contextlib.contextmanager
def _together() -> Iterator[None]:
    """Around every collective: when it breaks because another rank has exited, leave quietly
    (PEER_EXIT) instead of adding a traceback of the broken connection to that rank's error.
    Any other failure is raised as it is."""
    try:
        yield
    except RuntimeError as exc:
        if not _PEER_GONE.search(str(exc)):
            raise
        raise SystemExit(PEER_EXIT) from None


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up (nccl for CUDA, gloo for CPU); this rank's device
    (cuda:LOCAL_RANK on GPUs, one GPU per rank)."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)  # nccl's collectives and object broadcasts use it
    with _together():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def close(*, together: bool) -> None:
    """Leave the process group. After a finished run (`together`) every rank waits at a barrier
    first: a rank that tore its connections down while another still used them was aborted at
    exit now and then ("terminate called without an active exception", SIGABRT; seen in 1 of
    5 finished 2-rank runs on a loaded CPU, and in none of 8 with the barrier). After a failure
    a rank leaves at once, since the others may be inside another collective."""
    if dist.is_available() and dist.is_initialized():
        try:
            if together:
                with _together():
                    dist.barrier()
        finally:
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's device for the run's device (cuda -> cuda:LOCAL_RANK); unchanged alone."""
    if device.type == "cuda" and world().size > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def share(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a picklable value: a run directory, a decision)."""
    if world().size == 1:
        return obj
    box = [obj]
    with _together():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    w = world()
    if w.size == 1:
        return [obj]
    out: list[Any] | None = [None] * w.size if w.rank == 0 else None
    with _together():
        dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if world().size > 1:
        with _together():
            dist.barrier()


def shard_rows(n: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [lo, hi) of a global batch of n that `rank` holds: contiguous, sizes differing
    by at most one (the first ones larger); a batch smaller than the number of ranks leaves the
    last shards empty."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def shard(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous part of a global batch (shard_rows)."""
    lo, hi = shard_rows(len(indices), rank, size)
    return indices[lo:hi]


def sync_random_state(device: torch.device) -> None:
    """Every rank takes rank 0's torch random state (and its CUDA one on a GPU), so the draws of
    the coming step (models/draws.py: each rank draws the whole batch's masks and keeps its
    rows) are the one-process run's draws, whatever the number of ranks. A rank whose shard was
    empty, and so drew nothing last step, is back in step here."""
    state = torch.get_rng_state()
    where = state.to(device) if device.type == "cuda" else state  # nccl moves CUDA tensors
    with _together():
        dist.broadcast(where, src=0)
    torch.set_rng_state(where.cpu())
    if device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device).to(device)
        with _together():
            dist.broadcast(cuda, src=0)
        torch.cuda.set_rng_state(cuda.cpu(), device)


def my_batches(batches: list[np.ndarray]) -> list[np.ndarray]:
    """The evaluation batches this rank scores: every size-th, starting at its rank."""
    w = world()
    return batches[w.rank::w.size]


def gather_ranks(ranks: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    """All users' ranks on every rank, from `ranks` filled at this rank's `my_batches`.

    Which rank scored which users follows from `batches` alone, so only the values travel: one
    all_gather of equal-length (padded) tensors, each rank's values put back at its positions.
    """
    w = world()
    if w.size == 1:
        return ranks
    where = [np.concatenate(batches[r::w.size] or [np.empty(0, dtype=np.int64)])
             for r in range(w.size)]
    width = max(len(p) for p in where)
    dev = _comm_device()
    mine = torch.zeros(width, dtype=torch.int64)
    mine[:len(where[w.rank])] = torch.from_numpy(ranks[where[w.rank]])
    parts = [torch.empty(width, dtype=torch.int64, device=dev) for _ in range(w.size)]
    with _together():
        dist.all_gather(parts, mine.to(dev))
    out = np.empty_like(ranks)
    for pos, part in zip(where, parts, strict=True):
        out[pos] = part[:len(pos)].cpu().numpy()
    return out


def loss_terms(batch: SeqBatch) -> torch.Tensor:
    """How many terms the batch's mean loss averages: its rows (objective prefix) or its
    targets (objective all). Exact for every mean-over-targets loss plus a regulariser that
    does not depend on the data (NextItNet). A model whose loss averages over slots it draws
    (BERT4Rec's masked items) sets `last_loss_terms` instead, which train_step prefers."""
    if batch.targets is not None:
        return (batch.targets > 0).sum()
    return torch.tensor(len(batch.lengths), device=batch.lengths.device)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: SeqBatch | None, *, where: Callable[[], str] | None = None) -> float:
    """One step on this rank's shard (None: an empty one) of a global batch; the global loss.

    Each rank back-propagates `shard loss x shard terms`; one all_reduce sums those gradients,
    the loss sums, the term counts and which parameters got a gradient at all; dividing by the
    global term count gives the gradient of the mean loss over the whole batch, identical on
    every rank, so each rank's Adam takes the same step and the weights never drift apart. A
    parameter no rank touched keeps no gradient, as in one process (Adam skips it). The
    non-finite check comes after the reduce, so every rank stops together.
    """
    optimizer.zero_grad(set_to_none=True)
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    if batch is not None and len(batch.lengths):
        loss = model.calculate_loss(batch)
        # a loss over random slots (BERT4Rec's masked items) says how many it averaged
        counted = getattr(model, "last_loss_terms", None)
        terms = (counted if counted is not None else loss_terms(batch)).to(torch.float32)
        (loss * terms).backward()
        total = loss.detach().float() * terms
    else:
        terms = total = torch.zeros((), device=dev)
    grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=dev,
                                                                          dtype=p.dtype)
             for p in params]
    touched = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    flat = torch.cat([*grads, touched, total.view(1), terms.view(1)])
    with _together():
        dist.all_reduce(flat)  # SUM
    *touched_by, loss_sum, n_terms = flat[-len(params) - 2:].tolist()  # the step's one host sync
    n_terms = n_terms or 1.0  # no term anywhere (BERT4Rec masked no slot): zero, as one process
    value = loss_sum / n_terms
    if not np.isfinite(value):
        place = f" {where()}" if where else ""
        raise MatrrecError(f"loss became {value}{place}; training stopped")
    offset = 0
    for p, hit in zip(params, touched_by, strict=True):
        size = p.numel()
        p.grad = (flat[offset:offset + size] / n_terms).view_as(p) if hit else None
        offset += size
    optimizer.step()
    return value
