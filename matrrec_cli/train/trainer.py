"""The training loop of RecBole's Trainer (protocol §3), resumable to the bit.

* Seeding as run_recbole: python/numpy/torch seeded with the seed right before the model is built;
  the train order comes from a dedicated torch.Generator seeded with the same seed (a fresh
  permutation each epoch, last partial batch kept); no worker processes.
* Adam(lr 1e-3), batch 2048, fp32, no clipping or schedule; validate after every epoch.
* Early stopping on valid NDCG@10 rounded to 4 decimals: `score >= best` is an improvement (the
  later epoch wins a tie) and saves best.pt; otherwise a counter grows and training stops once
  it exceeds `stopping_step` (10), i.e. after 11 non-improving evaluations in a row. This is
  RecBole's `early_stopping` rule; the issue's "stop after 10 evaluations without one" is read
  as that rule (10 tolerated, the 11th stops).
* Test with the best state (best.pt reloaded), as RecBole's `load_best_model`.
* After every epoch last.pt holds model, optimizer, epoch, early-stopping state, history, all RNG
  states (python, numpy, torch, CUDA, shuffle generator) and the config: only tensors and plain
  values, so it loads with torch.load(weights_only=True). Resuming from it replays the remaining
  epochs exactly, so a killed-and-resumed run ends with the metrics of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matrrec_cli.data.split import Samples, SplitData, known_positions, refit_samples
from matrrec_cli.env import environment
from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import atomic_open, atomic_path, write_json
from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.models.draws import batch_rows
from matrrec_cli.models.sampled_loss import SampledSoftmax
from matrrec_cli.train import distributed, runs
from matrrec_cli.train.checkpoint import (
    LAST_KEYS,
    REBUILD,
    REFIT_KEYS,
    load_checkpoint,
    restore,
    rng_state,
    save,
    seed_everything,
    set_rng_state,
)
from matrrec_cli.train.config import TrainConfig
from matrrec_cli.train.device import resolve_device
from matrrec_cli.train.evaluate import evaluate_split, fit_known, ranks_frame
from matrrec_cli.train.metrics import rounded
from matrrec_cli.train.progress import Reporter
from matrrec_cli.train.samples import epoch_batches, make_batch, trimmed_width

VALID_METRIC = "ndcg@10"  # RecBole valid_metric
# Test hook, "EPOCH:SECONDS": after that epoch's checkpoint, say so on stderr and sleep, so a test
# can SIGKILL the process at a known point mid-training.
PAUSE_ENV = "MATRREC_PAUSE_AFTER_CHECKPOINT"


def mamba_backends(model: torch.nn.Module, attr: str = "last_backend") -> list[str]:
    """Backends the model's Mamba blocks actually ran ("torch" or "cuda"; with
    attr="last_scan_impl" the CPU scan: "kernel" or "torch"), if it has any."""
    return sorted({getattr(m, attr) for m in model.modules()
                   if getattr(m, attr, None) is not None})


def _pause(how: str) -> None:
    """The tests' hold after a checkpoint (PAUSE_ENV "EPOCH:SECONDS", or "EPOCH:@FILE" to wait
    until FILE exists: a handshake that holds however slow the machine is)."""
    if not how.startswith("@"):
        time.sleep(float(how))
        return
    flag = Path(how[1:])
    for _ in range(60_000):  # at most ten minutes, in case the test died
        if flag.exists():
            return
        time.sleep(0.01)


def use_loss(model: SequentialRecommender, cfg: TrainConfig, data: SplitData) -> None:
    """Give the model the training loss `cfg.loss` names: the full cross-entropy (its own), or
    the sampled softmax, for models whose output layer is the tied item embedding."""
    if cfg.loss == "full":
        return
    cls = type(model)
    if cls.calculate_loss is not SequentialRecommender.calculate_loss or \
            cls.item_scores is not SequentialRecommender.item_scores:
        raise MatrrecError(f"--set loss=sampled: {cfg.model} has a loss of its own (not the "
                           "tied-embedding cross-entropy); use loss=full")
    counts = np.bincount(data.seqs.items[known_positions(data.seqs.offsets, held_out=2)],
                         minlength=data.seqs.n_items)
    model.sampled_softmax = SampledSoftmax.build(data.seqs.n_items, cfg.negatives, cfg.sampler,
                                                 torch.from_numpy(counts))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """RecBole's optimizer (protocol §3): Adam with the run's lr and weight decay; no schedule,
    no clipping."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(model: SequentialRecommender, optimizer: torch.optim.Optimizer, batch: Any, *,
               where: Callable[[], str] | None = None) -> float:
    """One gradient step on `batch`; returns its loss. A non-finite loss stops training with an
    error (`where()` says where; only called then) before the step can spoil the weights. Shared
    by the trainer and profile, so what profile times is what training does."""
    loss = model.calculate_loss(batch)
    value = loss.item()  # one host sync per batch serves the check, the total and the progress
    if not math.isfinite(value):
        place = f" {where()}" if where else ""
        raise MatrrecError(f"loss became {value}{place}; training stopped")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


def resume_from(path: Path, keys: tuple[str, ...], cfg: TrainConfig,
                model: SequentialRecommender, optimizer: torch.optim.Optimizer,
                gen: torch.Generator) -> tuple[dict[str, Any], int, float]:
    """Restore model, optimizer and this rank's random state from a per-epoch checkpoint (last.pt
    or refit_last.pt, with at least `keys`); returns it, its epoch and its elapsed seconds."""
    ranks = distributed.world()
    ck = load_checkpoint(path, keys)
    if ck["config_hash"] != cfg.config_hash():
        raise MatrrecError(f"{path} belongs to another configuration; start a new run")
    restore(model, ck["model"], path)
    try:
        optimizer.load_state_dict(ck["optimizer"])
        epoch, elapsed = int(ck["epoch"]), float(ck["elapsed"])
        every_rng = ck.get("rng_ranks") or [ck["rng"]]  # one per rank that trained it
        # resumed on another number of ranks, every rank takes rank 0's state: each step
        # starts from rank 0's draws anyway (distributed.sync_random_state)
        set_rng_state(every_rng[ranks.rank] if len(every_rng) == ranks.size else ck["rng"], gen)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MatrrecError(f"{path} is corrupt ({type(exc).__name__}); "
                           f"{REBUILD[path.name]}") from None
    return ck, epoch, elapsed


def checkpoint_epoch(path: Path, cfg: TrainConfig, model: SequentialRecommender,
                     optimizer: torch.optim.Optimizer, gen: torch.Generator,
                     **state: Any) -> None:
    """The per-epoch checkpoint that resume_from reads: model, optimizer, random state and the
    caller's `state` (epoch, elapsed, ...). Every rank's own random state is gathered (their
    dropout streams differ), so resuming on as many ranks replays the rest exactly; one process
    stores only its own. Only rank 0 writes."""
    ranks = distributed.world()
    rng = rng_state(gen)
    every_rng = distributed.gather_to_main(rng) if ranks.size > 1 else None
    if ranks.rank == 0:
        extra = {"rng_ranks": every_rng} if every_rng else {}
        save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
              "config_hash": cfg.config_hash(), **state, **extra}, path)


def early_stopping(
    es: dict[str, Any], score: float, *, epoch: int, stopping_step: int
) -> tuple[dict[str, Any], bool, bool]:
    """RecBole's early_stopping (protocol §3): `score >= best` improves (ties too, the later
    epoch wins) and resets the counter; else the counter grows; stop once it exceeds
    `stopping_step`. Returns (new state, improved, stop)."""
    if score >= es["best"]:
        return {"best": score, "best_epoch": epoch, "bad": 0}, True, False
    bad = es["bad"] + 1
    return {**es, "bad": bad}, False, bad > stopping_step


def fit(
    cfg: TrainConfig,
    data: SplitData,
    build: Callable[[], SequentialRecommender],
    run_dir: Path,
    *,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train (or continue training) in `run_dir`, then test the best state; returns metrics.json.

    On several ranks (distributed.py) every rank runs this: each trains on its shard of every
    global batch and scores its share of the users; only rank 0 writes."""
    reporter = reporter or Reporter(enabled=False)
    ranks = distributed.world()
    main = ranks.rank == 0
    device = distributed.local_device(resolve_device(cfg.device))
    if main:
        write_json(run_dir / runs.CONFIG, cfg.to_dict())
        write_json(run_dir / runs.ENV, environment(str(device)))
    seed_everything(cfg.seed)  # again right before the model is built, as run_recbole
    model = build().to(device)  # the same seed: the same initial weights on every rank
    if not model.trainable:
        if cfg.refit:
            raise MatrrecError(f"--set refit=true: {cfg.model} is a count model, which counts "
                               "everything known before each target already; refit is for "
                               "trained models")
        if cfg.loss != "full":
            raise MatrrecError(f"--set loss={cfg.loss}: {cfg.model} is a count model; it has "
                               "no training loss")
        return fit_counts(cfg, data, model, run_dir, device=device, reporter=reporter)
    use_loss(model, cfg, data)
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)  # the train loader's own shuffle generator
    es = {"best": -math.inf, "best_epoch": None, "bad": 0}
    history: list[dict[str, Any]] = []
    start_epoch, elapsed = 0, 0.0
    last_path = run_dir / runs.LAST
    if last_path.exists():  # resume: restore everything the next epoch depends on
        ck, start_epoch, elapsed = resume_from(last_path, LAST_KEYS, cfg, model, optimizer, gen)
        try:
            es, history = dict(ck["early_stopping"]), list(ck["history"])
        except (TypeError, ValueError) as exc:
            raise MatrrecError(f"{last_path} is corrupt ({type(exc).__name__}); "
                               f"{REBUILD[last_path.name]}") from None
        reporter.note(f"resuming {run_dir} after epoch {start_epoch}")
    if main:
        with atomic_open(run_dir / runs.HISTORY) as f:  # drop lines of epochs past the checkpoint
            f.writelines(json.dumps(h) + "\n" for h in history)

    train = data.train
    n_batches = -(-len(train) // cfg.batch_size)
    stopped = es["bad"] > cfg.stopping_step  # a checkpoint of a run that had already stopped
    pause_epoch, _, pause_s = (os.environ.get(PAUSE_ENV) or "0:0").partition(":")
    epoch = start_epoch
    reporter.start(total_epochs=cfg.epochs, n_batches=n_batches, first_epoch=start_epoch)
    try:
        while epoch < cfg.epochs and not stopped:
            t0 = time.perf_counter()
            total = train_epoch(model, optimizer, data, train, gen, cfg, device=device,
                                reporter=reporter, where=lambda e=epoch: (
                                    f"at epoch {e + 1}", last_path if e else None))
            valid = evaluate_split(model, data, cfg, split="valid", device=device)
            score = round(valid.metrics[VALID_METRIC], 4)
            epoch += 1
            es, improved, stopped = early_stopping(es, score, epoch=epoch,
                                                   stopping_step=cfg.stopping_step)
            if improved and main:
                save({"model": model.state_dict(), "epoch": epoch, "valid_score": score,
                       "config_hash": cfg.config_hash()}, run_dir / runs.BEST)
            elapsed += time.perf_counter() - t0
            record = {"epoch": epoch, "loss": total / n_batches, "valid": rounded(valid.metrics),
                      "valid_score": score, "improved": improved, "bad": es["bad"],
                      "seconds": round(time.perf_counter() - t0, 3)}
            history.append(record)
            checkpoint_epoch(last_path, cfg, model, optimizer, gen, epoch=epoch,
                             elapsed=elapsed, early_stopping=es, history=history,
                             config=cfg.to_dict())
            if main:
                with open(run_dir / runs.HISTORY, "a") as f:
                    f.write(json.dumps(record) + "\n")
            reporter.epoch(record)
            if epoch == int(pause_epoch):
                if main:
                    print(f"checkpoint epoch {epoch}", file=sys.stderr, flush=True)
                _pause(pause_s)
    finally:
        reporter.stop()  # the live display never outlives the loop
    refit_s = None
    if cfg.refit:
        if es["best_epoch"] is None:
            raise MatrrecError("no epoch finished, so there is no epoch count to refit with; "
                               "train longer")
        refit_s = refit(cfg, data, build, run_dir, epochs=es["best_epoch"], device=device,
                        reporter=reporter)
    return finish(cfg, data, run_dir, history=history, es=es, elapsed=elapsed,
                  stopped=stopped, device=device, model=model, refit_seconds=refit_s)


def train_epoch(model: SequentialRecommender, optimizer: torch.optim.Optimizer,
                data: SplitData, samples: Samples, gen: torch.Generator, cfg: TrainConfig, *,
                device: torch.device, reporter: Reporter,
                where: Callable[[], tuple[str, Path | None]]) -> float:
    """One pass over `samples` in the order `gen` draws; returns the summed batch losses.
    `where()` names the epoch and the last good checkpoint, for a non-finite loss."""
    ranks = distributed.world()
    model.train()
    lengths = samples.lengths if cfg.bucket_by_length else None  # the pools' sort key
    total = 0.0
    for i, idx in enumerate(epoch_batches(len(samples), cfg.batch_size, gen, lengths=lengths)):
        def at(b: int = i) -> str:  # only called on a bad loss
            epoch, last = where()
            return f"{epoch}, batch {b + 1}; the last good checkpoint is {last or 'none'}"
        if ranks.size == 1:
            batch = make_batch(data, samples.take(idx), split="train", objective=cfg.objective,
                               trim=cfg.bucket_by_length).to(device)
            loss_value = train_step(model, optimizer, batch, where=at)
        else:
            # this rank's rows of the global batch (maybe none), at the global batch's width,
            # drawing its dropout masks as one process would (models/draws.py)
            lo, hi = distributed.shard_rows(len(idx), ranks.rank, ranks.size)
            width = trimmed_width(samples.take(idx), data.max_len) if cfg.bucket_by_length \
                else None
            batch = make_batch(data, samples.take(idx[lo:hi]), split="train",
                               objective=cfg.objective, width=width).to(device) if hi > lo \
                else None
            distributed.sync_random_state(device)
            with batch_rows(len(idx), lo, hi):
                loss_value = distributed.train_step(model, optimizer, batch, where=at)
        total += loss_value
        reporter.batch(loss=loss_value)
    return total


def refit(cfg: TrainConfig, data: SplitData, build: Callable[[], SequentialRecommender],
          run_dir: Path, *, epochs: int, device: torch.device, reporter: Reporter) -> float:
    """The refit option: a fresh model from the same seed, trained for `epochs` (the early-
    stopped run's best epoch) on the train targets plus each user's valid target, saved as
    refit.pt; the test is scored with it. Nothing is chosen here: the epoch count came from
    validation. Resumable per epoch from refit_last.pt; returns its training seconds.

    Why: under leave-one-out the test history ends with the valid item, which count models
    count at test time but an early-stopped network was never trained on; refitting gives the
    network the same information."""
    ranks = distributed.world()
    main = ranks.rank == 0
    if (run_dir / runs.REFIT).exists():  # finished before an interruption of finish()
        return float(load_checkpoint(run_dir / runs.REFIT, ("seconds",))["seconds"])
    samples = refit_samples(data)
    seed_everything(cfg.seed)
    model = build().to(device)
    use_loss(model, cfg, data)
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, elapsed = 0, 0.0
    last_path = run_dir / runs.REFIT_LAST
    if last_path.exists():
        _, start, elapsed = resume_from(last_path, REFIT_KEYS, cfg, model, optimizer, gen)
        reporter.note(f"resuming the refit after epoch {start}")
    n_batches = -(-len(samples) // cfg.batch_size)
    reporter.note(f"refit: {epochs} epochs on {len(samples)} rows (train + valid targets)")
    reporter.start(total_epochs=epochs, n_batches=n_batches, first_epoch=start)
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            total = train_epoch(model, optimizer, data, samples, gen, cfg, device=device,
                                reporter=reporter, where=lambda e=epoch: (
                                    f"at refit epoch {e + 1}", last_path if e else None))
            elapsed += time.perf_counter() - t0
            checkpoint_epoch(last_path, cfg, model, optimizer, gen, epoch=epoch + 1,
                             elapsed=elapsed)
            reporter.refit_epoch({"epoch": epoch + 1, "loss": total / n_batches,
                                  "seconds": round(time.perf_counter() - t0, 3)})
    finally:
        reporter.stop()
    if main:
        save({"model": model.state_dict(), "epoch": epochs, "seconds": elapsed,
              "config_hash": cfg.config_hash()}, run_dir / runs.REFIT)
    return elapsed


def fit_counts(cfg: TrainConfig, data: SplitData, model: SequentialRecommender, run_dir: Path,
               *, device: torch.device, reporter: Reporter) -> dict[str, Any]:
    """Count-based models (pop, markov): count what is known before each split, no epochs.
    best.pt holds the test state; `matrrec evaluate` recounts (counting is deterministic)."""
    t0 = time.perf_counter()
    results = []
    for split_name in ("valid", "test"):
        fit_known(model, data, split_name)
        model.to(device)
        results.append(evaluate_split(model, data, cfg, split=split_name, device=device))
    main = distributed.world().rank == 0
    if main:
        save({"model": model.state_dict(), "epoch": 0, "config_hash": cfg.config_hash()},
             run_dir / runs.BEST)
    elapsed = time.perf_counter() - t0
    score = round(results[0].metrics[VALID_METRIC], 4)
    record = {"epoch": 0, "loss": None, "valid": rounded(results[0].metrics),
              "valid_score": score, "improved": True, "bad": 0, "seconds": round(elapsed, 3),
              "note": "counted, no training"}
    if main:
        with atomic_open(run_dir / runs.HISTORY) as f:
            f.write(json.dumps(record) + "\n")
    reporter.note(f"{cfg.model}: counted the data; valid ndcg@10 {score:.4f}")
    return write_results(cfg, data, run_dir, results, history=[record],
                         es={"best": score, "best_epoch": 0, "bad": 0}, elapsed=elapsed,
                         stopped=False, device=device, model=model)


def finish(
    cfg: TrainConfig, data: SplitData, run_dir: Path, *, history: list[dict[str, Any]],
    es: dict[str, Any], elapsed: float, stopped: bool, device: torch.device,
    model: SequentialRecommender, refit_seconds: float | None = None,
) -> dict[str, Any]:
    """Reload best.pt (refit.pt for the test under the refit option), evaluate valid and test,
    write ranks and metrics.json."""
    if es["best_epoch"] is None:
        raise MatrrecError("no epoch finished, so there is no best state to test; train longer")
    distributed.barrier()  # every rank reads the checkpoints rank 0 has finished writing
    results = []
    for split in ("valid", "test"):
        path = run_dir / runs.weights(cfg, split)
        restore(model, load_checkpoint(path)["model"], path)
        results.append(evaluate_split(model, data, cfg, split=split, device=device))
    return write_results(cfg, data, run_dir, results, history=history, es=es, elapsed=elapsed,
                         stopped=stopped, device=device, model=model,
                         refit_seconds=refit_seconds)


def write_results(
    cfg: TrainConfig, data: SplitData, run_dir: Path, results: list[Any], *,
    history: list[dict[str, Any]], es: dict[str, Any], elapsed: float, stopped: bool,
    device: torch.device, model: SequentialRecommender, refit_seconds: float | None = None,
) -> dict[str, Any]:
    """ranks.parquet, env.json and (last, marking the run finished) metrics.json (rank 0 writes;
    every rank returns the same metrics, computed from every user's rank)."""
    valid, test = results
    metrics = {
        "valid": rounded(valid.metrics), "test": rounded(test.metrics),
        "valid_full": valid.metrics, "test_full": test.metrics,
        "best_epoch": es["best_epoch"], "epochs": len(history), "stopped_early": stopped,
        "stop_reason": runs.stop_reason(cfg.to_dict(), {"stopped_early": stopped,
                                                        "counted": not model.trainable}),
        "wall_seconds": round(elapsed, 3), "objective": cfg.objective, "preset": cfg.preset,
        "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed,
        "config_hash": cfg.config_hash(), "n_users": len(valid.users),
        "n_train_rows": len(data.train),
    }
    if refit_seconds is not None:  # wall_seconds stays the early-stopped training's
        metrics["refit_epochs"] = es["best_epoch"]
        metrics["refit_seconds"] = round(refit_seconds, 3)
    ranks = distributed.world()
    if ranks.size > 1:  # how many ranks trained it (a plain process's record stays as it was)
        metrics["world_size"] = ranks.size
    if ranks.rank:
        return metrics
    with atomic_path(run_dir / runs.RANKS) as tmp:  # never a half-written ranks file
        ranks_frame(results).to_parquet(tmp, index=False)
    write_json(run_dir / runs.ENV, {**environment(str(device)),
                                    "mamba_backend": mamba_backends(model) or None,
                                    "scan_impl": mamba_backends(model, "last_scan_impl") or None})
    write_json(run_dir / runs.METRICS, metrics)
    return metrics
