"""Tables 4 and 5: memory, training time per epoch and full-test-set inference time.

Each cell (dataset, model, max_len) runs in a fresh worker process (`python -m
matrrec_cli.experiments.profile CELL_JSON`), so no model's memory or warm caches leak into the
next. In the worker: the data (real or `--synthetic-like`), the model of `matrrec train` (same
preset, dropout, objective `prefix` unless the cell names one or None for the dataset's own, as
bench/scale.py does; batch 2048, Adam), a warm-up of `warmup` batches and one evaluation batch,
then `repeats` timings whose median is reported:
  * train s/epoch: forward, backward and optimizer step over the epoch's batches; with
    `max_batches` only the first that many batches are timed and the time is scaled by
    n_batches / timed (the `timed_batches` column says so);
  * inference s: full-sort ranking of every test user (batches of 4096), likewise scalable;
  * memory: on CUDA the peak allocated bytes (torch.cuda.max_memory_allocated, after a
    synchronize), as the paper's "GPU memory"; on CPU the peak resident set size of the worker
    process (ru_maxrss: data, model, activations and the torch runtime), labelled as such.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from matrrec_cli.data.split import split
from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments.runner import DEFAULT_SEED, RunSpec, resolve_spec
from matrrec_cli.experiments.synthetic import synthetic_sequences, table1_counts
from matrrec_cli.train import pipeline
from matrrec_cli.train.checkpoint import seed_everything
from matrrec_cli.train.config import DEFAULT, RunOptions
from matrrec_cli.train.device import resolve_device
from matrrec_cli.train.evaluate import evaluate_split, fit_known
from matrrec_cli.train.samples import epoch_batches, make_batch, trimmed_width
from matrrec_cli.train.trainer import make_optimizer, train_step, use_loss

# The timed part of a cell with a --max-batches count, in seconds: a catalog so large that the
# count's batches would take longer times fewer of them, so every cell finishes in minutes
CELL_BUDGET_S = 120.0


def _sync(device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cell: dict[str, Any]) -> dict[str, Any]:
    """Run one profile cell in this process (the worker's job)."""

    opts = RunOptions(dataset=cell["dataset"], model=cell["model"], device=cell["device"],
                      data_dir=cell["data_dir"], sets=tuple(cell.get("sets", ())),
                      preset=cell.get("preset"))
    spec = RunSpec(opts.given_by("profile cell", max_len=cell["max_len"],
                                 objective=cell.get("objective", "prefix")))
    cfg = resolve_spec(spec, seed=DEFAULT_SEED, seed_source=DEFAULT,
                       prepared=not cell["synthetic"])
    if cell["synthetic"]:
        data = split(synthetic_sequences(*table1_counts(cfg.dataset, cfg.data_dir)),
                     max_len=cfg.max_len, objective=cfg.objective)
    else:
        data = pipeline.load_split(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model = pipeline.model_builder(cfg, data.seqs.n_items)().to(device)
    if model.trainable:
        use_loss(model, cfg, data)  # --set loss=sampled, as training gives it
        opt = make_optimizer(model, cfg)
        n_batches = -(-len(data.train) // cfg.batch_size)
        timed = min(n_batches, cell["max_batches"] or n_batches)
        lengths = data.train.lengths if cfg.bucket_by_length else None
        epoch = [data.train.take(idx) for idx in epoch_batches(
            len(data.train), cfg.batch_size, torch.Generator().manual_seed(0), lengths=lengths)]
        if lengths is not None and timed < n_batches:
            # bucketed batches differ in width: time an evenly spaced sample of them by width,
            # so that the timed part scales to the whole epoch
            epoch.sort(key=lambda b: trimmed_width(b, data.max_len))
            epoch = [epoch[i] for i in np.linspace(0, n_batches - 1, timed).round().astype(int)]
        batches = epoch[:timed]
    else:  # pop, markov: "training" is one counting pass over the data
        n_batches, timed, batches = 1, 1, [None]

    def train_pass(bs: list[Any]) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for samples in bs:
            if samples is None:
                fit_known(model, data, "test")
                model.to(device)
                continue
            train_step(model, opt, make_batch(data, samples, split="train",
                                              objective=cfg.objective,
                                              trim=cfg.bucket_by_length).to(device))
        _sync(device)
        return time.perf_counter() - t0

    test = data.test
    n_eval = -(-len(test) // cfg.eval_batch_size)
    eval_timed = min(n_eval, cell["max_batches"] or n_eval)

    def eval_part(n: int) -> Any:  # the first n evaluation batches' users
        return dataclasses.replace(data, test=test.take(
            np.arange(min(len(test), n * cfg.eval_batch_size))))

    def infer_pass(part: Any) -> float:
        _sync(device)
        t0 = time.perf_counter()
        evaluate_split(model, part, cfg, split="test", device=device)
        _sync(device)
        return time.perf_counter() - t0

    model.train()
    warm = batches[:max(1, min(cell["warmup"], timed))]
    per_batch = train_pass(warm) / len(warm)
    per_eval = infer_pass(eval_part(1))
    budget = cell.get("budget_s")
    if budget and cell["max_batches"]:
        # each repeat's training and evaluation get half of budget / repeats: a large catalog
        # times fewer batches (the warm-up's per-batch time, an overestimate, decides)
        share = budget / cell["repeats"] / 2
        timed = min(timed, max(1, int(share // per_batch)))
        eval_timed = min(eval_timed, max(1, int(share // per_eval)))
        batches = batches[:timed]
    timed_eval = eval_part(eval_timed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_s = [train_pass(batches) * n_batches / timed for _ in range(cell["repeats"])]
    infer_s = [infer_pass(timed_eval) * n_eval / eval_timed for _ in range(cell["repeats"])]
    if device.type == "cuda":
        mem, mem_kind = torch.cuda.max_memory_allocated(device), "cuda peak allocated"
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mem, mem_kind = rss * (1 if sys.platform == "darwin" else 1024), "cpu peak RSS (process)"
    return {
        **{k: cell[k] for k in ("dataset", "model", "max_len", "synthetic")},
        "objective": cfg.objective,
        "device": str(device), "memory_gb": round(mem / 2**30, 3), "memory_kind": mem_kind,
        "train_s_per_epoch": round(statistics.median(train_s), 6),
        "inference_s": round(statistics.median(infer_s), 6),
        "n_train_rows": len(data.train), "n_batches": n_batches, "timed_batches": timed,
        "n_test_users": len(test), "eval_batches": n_eval, "timed_eval_batches": eval_timed,
        "repeats": cell["repeats"], "threads": torch.get_num_threads(),
    }


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Measure one cell in a fresh worker process; its one JSON line is the result."""
    proc = subprocess.run([sys.executable, "-m", "matrrec_cli.experiments.profile",
                           json.dumps(cell)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MatrrecError(f"profiling {cell['model']} on {cell['dataset']} L {cell['max_len']} "
                           f"failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> int:
    try:
        print(json.dumps(measure(json.loads(argv[0]))))
    except MatrrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
