"""Dataset name -> samples -> run directory: what `matrrec train` and `matrrec evaluate` call."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from matrrec_cli.data.prepared import load_interactions, load_meta
from matrrec_cli.data.split import SplitData, build_sequences, shuffle_histories, split
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models import build_model
from matrrec_cli.train import distributed, runs
from matrrec_cli.train.checkpoint import load_checkpoint, restore
from matrrec_cli.train.config import TrainConfig
from matrrec_cli.train.device import resolve_device
from matrrec_cli.train.evaluate import evaluate_split, fit_known
from matrrec_cli.train.metrics import rounded
from matrrec_cli.train.progress import Reporter
from matrrec_cli.train.trainer import fit


def load_split(cfg: TrainConfig) -> SplitData:
    """The prepared interactions of cfg.dataset as leave-one-out samples (protocol §2)."""

    df = load_interactions(cfg.dataset, cfg.data_dir)
    meta = load_meta(cfg.dataset, cfg.data_dir)
    # the catalogue size comes from the metadata (real items + padding), not from max(item)
    seqs, test_seqs = build_sequences(df, n_items=int(meta["n_items"]) + 1), None
    if cfg.shuffle_history:
        seqs, test_seqs = shuffle_histories(seqs, seed=cfg.seed)
    return split(seqs, max_len=cfg.max_len, objective=cfg.objective, test_seqs=test_seqs)


def model_builder(cfg: TrainConfig, n_items: int):
    return lambda: build_model(cfg.model, n_items=n_items, max_len=cfg.max_len,
                               overrides=cfg.model_config)


def train(cfg: TrainConfig, *, resume: bool, reporter: Reporter) -> tuple[dict[str, Any], Path]:
    """Train cfg in a new run directory, or continue its newest unfinished run (`resume`).
    `resume` with no unfinished run but a finished one returns that run and trains nothing.
    Raises runs.RunBusy at once when another process is training the same configuration. A new
    run directory that fails or is interrupted before its first checkpoint is removed: a run
    that never started leaves nothing behind.

    In a rank of `matrrec train --nproc-per-node N` (distributed.py) this joins the process
    group first; rank 0 alone takes the lock, finds or creates the run directory and tells the
    other ranks, which print nothing."""

    if distributed.launched().size == 1:
        return _train(cfg, resume=resume, reporter=reporter)
    distributed.init(resolve_device(cfg.device))
    try:
        out = _train(cfg, resume=resume,
                     reporter=reporter if distributed.is_main() else Reporter(enabled=False))
    except KeyboardInterrupt:  # the launcher says how to resume (with --nproc-per-node)
        distributed.close(together=False)
        raise SystemExit(130) from None
    except BaseException:  # the others may be inside a collective: leave without waiting
        distributed.close(together=False)
        raise
    distributed.close(together=True)
    return out


def _train(cfg: TrainConfig, *, resume: bool, reporter: Reporter) -> tuple[dict[str, Any], Path]:
    main = distributed.world().rank == 0
    with runs.training_lock(cfg) if main else contextlib.nullcontext():
        run_dir = runs.find_unfinished(cfg) if resume and main else None
        done = runs.find_finished(cfg) if resume and main and run_dir is None else None
        run_dir, done = distributed.share((run_dir, done))  # rank 0's choice on every rank
        if resume and run_dir is None:
            if done is not None:
                reporter.note(f"{done} already finished this configuration and seed; nothing to "
                              "resume (train without --resume for a new run)")
                return runs.read_json(done / runs.METRICS), done
            reporter.note("no unfinished run of this configuration; starting a new one")
        data = load_split(cfg)
        reporter.note(
            f"{cfg.dataset}: {len(data.valid)} users, {data.seqs.n_items - 1} items, "
            f"{len(data.train)} train rows ({cfg.objective}), max_len {cfg.max_len}"
        )
        fresh = run_dir is None
        if main:
            run_dir = run_dir or runs.new_run_dir(cfg)
            for stale in run_dir.glob(".*.tmp"):  # a killed write's leftovers; we hold the lock
                stale.unlink(missing_ok=True)
        run_dir = distributed.share(run_dir)  # other ranks never create a directory
        reporter.note(f"run directory: {run_dir}")
        _say_scan(cfg, reporter)
        try:
            metrics = fit(cfg, data, model_builder(cfg, data.seqs.n_items), run_dir,
                          reporter=reporter)
        except BaseException:
            if main and fresh and not (run_dir / runs.LAST).exists() and not (
                    run_dir / runs.METRICS).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return metrics, run_dir


def _say_scan(cfg: TrainConfig, reporter: Reporter) -> None:
    """One line when a Mamba model will run the eager CPU scan because numba is missing (a
    platform without its wheels): the fused scan is the default everywhere else."""
    if cfg.model_config.get("scan_impl") != "auto" or resolve_device(cfg.device).type != "cpu":
        return
    from matrrec_cli.models import scan_kernel

    if not scan_kernel.available():
        reporter.note(f"the fused CPU scan is off ({scan_kernel.reason()}): this run uses the "
                      "eager scan, the same numbers, slower")


def evaluate_run(run_dir: str | Path, *, split_name: str, device: str | None = None,
                 mask_history: bool | None = None, data_dir: str | None = None,
                 batch_size: int | None = None) -> dict[str, Any]:
    """Reload the weights that scored one split of a run (best.pt; refit.pt for the test of a
    refit run) and recompute its metrics; compare with the stored ones."""

    run_dir = Path(run_dir)
    cfg, stored = runs.load_run(run_dir)
    weights = runs.require_weights(run_dir, cfg, split_name)
    same_protocol = mask_history is None or mask_history == cfg.mask_history
    cfg = replace(cfg, data_dir=runs.data_dir_of(run_dir, cfg, data_dir),
                  mask_history=cfg.mask_history if mask_history is None else mask_history)
    data = load_split(cfg)
    dev = resolve_device(device or "auto")
    model = model_builder(cfg, data.seqs.n_items)().to(dev)
    restore(model, load_checkpoint(weights)["model"], weights)
    # count models: the counts known before this split (see pop.py); a no-op for trained ones
    fit_known(model, data, split_name)
    model.to(dev)
    if batch_size is not None:
        cfg = replace(cfg, eval_batch_size=batch_size)
    res = evaluate_split(model, data, cfg, split=split_name, device=dev)
    out: dict[str, Any] = {"run_dir": str(run_dir), "split": split_name,
                           "metrics": rounded(res.metrics), "metrics_full": res.metrics,
                           "mask_history": cfg.mask_history}
    if stored is not None and same_protocol:
        if not isinstance(stored.get(f"{split_name}_full"), dict):
            raise MatrrecError(f"{run_dir / runs.METRICS} is corrupt (no {split_name}_full); "
                               f"the recomputed metrics are {rounded(res.metrics)}")
        out["stored"] = stored[f"{split_name}_full"]
        out["matches_stored"] = stored[f"{split_name}_full"] == res.metrics
    return out
