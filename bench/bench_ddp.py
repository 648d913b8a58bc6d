"""One training step in one process vs on 2 gloo ranks on this CPU (`train --nproc-per-node 2`).

The same global batch (batch_size samples of synthetic data; SASRec or the paper's MaTrRec at
hidden 64) is stepped by one process with every core (and, for reference, with the threads one
rank gets), and by two ranks that each take half of it with cores / 2 threads and all-reduce the
gradients (distributed.train_step, what the trainer runs). Median seconds per step after warm-up,
side by side, and the ratio. Batches are built inside the timed step, as in the trainer. On a CPU
the ranks only split the cores one process would use; whether that wins depends on how well one
process's intra-op threads scale at this size (and on what else the machine runs). The option is
meant for several GPUs.

Example: python bench/bench_ddp.py --model matrrec --steps 12
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matrrec_cli.data.split import split
from matrrec_cli.experiments.synthetic import synthetic_sequences
from matrrec_cli.train import distributed
from matrrec_cli.train.config import RunOptions, resolve
from matrrec_cli.train.pipeline import model_builder
from matrrec_cli.train.samples import epoch_batches, make_batch
from matrrec_cli.train.trainer import make_optimizer, train_step


def _steps(rank: int, world: int, args: argparse.Namespace, port: int, out: dict,
           threads: int, key: str) -> None:
    """Time `args.steps` steps on this rank (world 1: the plain trainer step)."""
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = resolve(RunOptions("bench", args.model, max_len=args.max_len, dropout=0.2,
                             sets=(f"batch_size={args.batch}",), device="cpu"), prepared=False)
    seqs = synthetic_sequences(args.users, args.items, args.users * 10)
    data = split(seqs, max_len=cfg.max_len)
    torch.manual_seed(0)
    model = model_builder(cfg, seqs.n_items)()
    optimizer = make_optimizer(model, cfg)
    batches = epoch_batches(len(data.train), cfg.batch_size, torch.Generator().manual_seed(0))
    batches = [b for b in batches if len(b) == cfg.batch_size][:args.warmup + args.steps]
    times = []
    for idx in batches:
        t0 = time.perf_counter()
        if world == 1:
            train_step(model, optimizer, make_batch(data, data.train.take(idx), split="train"))
        else:
            part = distributed.shard(idx, rank, world)
            distributed.train_step(model, optimizer,
                                   make_batch(data, data.train.take(part), split="train"))
        times.append(time.perf_counter() - t0)
    if rank == 0:
        out[key] = statistics.median(times[args.warmup:])
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--batch", type=int, default=2048, help="global batch (train_batch_size)")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--items", type=int, default=900)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    with mp.Manager() as manager:
        out = manager.dict()
        _steps(0, 1, args, 0, out, cores, "one")  # one process (this one), every core
        _steps(0, 1, args, 0, out, half, "one_half")  # the threads one rank gets
        mp.spawn(_steps, args=(2, args, _free_port(), out, half, "two"), nprocs=2, join=True)
        one, one_half, two = out["one"], out["one_half"], out["two"]
    print(f"{args.model}, global batch {args.batch} x L {args.max_len}, {cores} cores, "
          f"median of {args.steps} steps")
    for label, t in ((f"1 process, {cores} threads", one),
                     (f"1 process, {half} thread(s)", one_half),
                     (f"2 gloo ranks, {half} thread(s) each", two)):
        print(f"  {label:<32} {t * 1e3:8.1f} ms/step")
    print(f"  2 ranks / 1 process ({cores} threads): {two / one:.2f}x the time")


if __name__ == "__main__":
    main()
