"""Many training runs from one command: variants x datasets x seeds, reusing finished runs.

Every experiment command (train --seeds, ablate, sweep) expands into `RunSpec`s and calls
`run_all`. A (spec, seed) whose exact configuration already has a finished run under
results/runs is not trained again, and an unfinished one is resumed, so an interrupted sweep
continues where it stopped and re-running a command only re-renders its table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from pathlib import Path
from typing import Any

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.experiments import tracking
from matrrec_cli.experiments.jobs import LOCAL, ExecutorOptions, Job
from matrrec_cli.train import pipeline, runs
from matrrec_cli.train.config import (
    CLI,
    DEFAULT,
    TRAINER_DEFAULTS,
    RunOptions,
    TrainConfig,
    resolve,
)
from matrrec_cli.train.progress import Reporter

DEFAULT_SEED = TRAINER_DEFAULTS["seed"]  # RecBole's seed, declared once in train/config.py


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration to train, every seed of it: its options and a row label."""

    options: RunOptions
    label: str = "default"

    @property
    def dataset(self) -> str:
        return self.options.dataset

    @property
    def model(self) -> str:
        return self.options.model


@dataclasses.dataclass(frozen=True)
class Seeds:
    """The seeds to run, and where they came from (recorded as the seed's source)."""

    values: tuple[int, ...]
    source: str = CLI


@dataclasses.dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    reused: bool


MAX_SEED_COUNT = 100


def parse_seeds(text: str | None, *, seed: int | None = None) -> Seeds:
    """`--seeds`: a count K (seeds base..base+K-1, base = --seed or 2020) or a list "1,2,3"."""
    base = DEFAULT_SEED if seed is None else seed
    if text is None:
        return Seeds((base,), DEFAULT if seed is None else CLI)
    return Seeds(tuple(_seed_list(text, base)), f"{CLI} --seeds")


def _seed_list(text: str, base: int) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--seeds expects a count like 5 or a list like 2020,2021, not {text!r}")\
            from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise UsageError(f"--seeds count must be at least 1, not {values[0]}")
        if values[0] > MAX_SEED_COUNT:  # surely a seed meant as one: 2020 runs is never wanted
            raise UsageError(f"--seeds {values[0]} would mean {values[0]} seeds; for the single "
                             f"seed {values[0]} use --seed {values[0]} (or --seeds "
                             f"{values[0]},)")
        return [base + i for i in range(values[0])]
    if len(set(values)) != len(values):
        raise UsageError(f"--seeds lists a seed twice: {text}")
    return values


def parse_values(text: str, kind: type) -> list[Any]:
    """A comma list of numbers for sweeps, e.g. "0.1,0.2" or "10,30,50"."""
    try:
        values = [kind(p.strip()) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}")\
            from None
    if not values:
        raise UsageError("the list of values is empty")
    return values


def resolve_spec(spec: RunSpec, *, seed: int, seed_source: str = CLI,
                 prepared: bool = True) -> TrainConfig:
    """The TrainConfig of `spec` at `seed`; the dataset must be prepared unless `prepared` is
    False (profile's --synthetic-like cells read only its registry entry)."""

    return resolve(spec.options.given_by(seed_source, seed=seed), prepared=prepared)


def run_all(specs: list[RunSpec], seeds: Seeds, *, executor: ExecutorOptions = LOCAL,
            quiet: bool = False, retrain: bool = False, finished_only: bool = False,
            reporter: Reporter | None = None, track: str = "none", study: str | None = None
            ) -> list[RunResult]:
    """Train every (spec, seed), or reuse its finished run; configs are checked before training
    starts, so a typo in the last variant fails in a second, not after hours. `finished_only`
    trains nothing: the results of the finished runs only (a table of work in progress).
    `reporter` hears every epoch of the runs trained here (tune's pruning listens). Each run
    trained (not reused) is logged to `track` (tracking.py), in experiment `study`."""
    # finished_only trains nothing, so it needs no prepared data: a clone re-renders a table
    # from the published runs alone
    todo = [(spec, seed, resolve_spec(spec, seed=seed, seed_source=seeds.source,
                                      prepared=not finished_only))
            for spec in specs for seed in seeds.values]
    out: dict[int, RunResult] = {}
    jobs: list[Job] = []
    reporter = reporter or Reporter(enabled=not quiet)
    for i, (spec, seed, cfg) in enumerate(todo, 1):
        done = None if retrain else runs.find_finished(cfg)
        head = f"[{i}/{len(todo)}] {spec.dataset} {spec.model} {spec.label} seed {seed}"
        if done is not None:
            reporter.note(f"{head}: reusing {done}")
            out[i] = RunResult(spec, seed, done, runs.read_json(done / runs.METRICS), True)
        elif finished_only:
            reporter.note(f"{head}: not finished, left out (--finished-only)")
        else:
            jobs.append(Job(i, head, cfg))
    if executor.kind == "ray":
        written, failed = _on_ray(jobs, executor, reporter)
    else:
        written, failed = _here(jobs, reporter), {}
    for job in jobs:
        if job.index in written:
            spec, seed, _ = todo[job.index - 1]
            path = written[job.index]
            out[job.index] = RunResult(spec, seed, path, runs.read_json(path / runs.METRICS),
                                       False)
            tracking.log_run(path, track=track, study=study)
    if failed:
        raise MatrrecError(f"{len(failed)} of {len(todo)} run(s) failed (each named above with "
                           f"its error); the {len(out)} others are finished and kept: fix and "
                           "rerun the same command, which reuses them")
    busy_count = len(jobs) - len(written) - len(failed)
    if busy_count and not out:  # nothing to summarise: say so instead of an empty table
        raise MatrrecError(f"all {busy_count} run(s) are being trained by another process; "
                           "rerun this command when they finish (it reuses them)")
    return [out[i] for i in sorted(out)]


def _here(jobs: list[Job], reporter: Reporter) -> dict[int, Path]:
    """Train the jobs in this process, one after another."""
    written = {}
    for job in jobs:
        reporter.note(f"{job.head}: training")
        try:
            _, written[job.index] = pipeline.train(job.cfg, resume=True, reporter=reporter)
        except runs.RunBusy:  # another worker has it: take the next
            reporter.note(f"{job.head}: being trained by another process, left out")
    return written


def _on_ray(jobs: list[Job], executor: ExecutorOptions, reporter: Reporter
            ) -> tuple[dict[int, Path], dict[int, str]]:
    """Train the jobs as Ray tasks. Each run's lock is held here while its task is out, so a
    local worker sharing the results directory never trains it at the same time."""
    from matrrec_cli.experiments import ray_executor  # Ray is an optional extra

    with contextlib.ExitStack() as locks:
        mine = []
        for job in jobs:
            try:
                locks.enter_context(runs.training_lock(job.cfg))
                mine.append(job)
            except runs.RunBusy:
                reporter.note(f"{job.head}: being trained by another process, left out")
        return ray_executor.run_jobs(mine, executor, reporter)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(results: list[RunResult], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (dataset, model, label): mean and std over seeds of each test metric."""
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.spec.dataset, r.spec.model, r.spec.label), []).append(r)
    rows = []
    for (ds, model, label), members in groups.items():
        row: dict[str, Any] = {"dataset": ds, "model": model, "label": label,
                               "n_seeds": len(members),
                               "seeds": " ".join(str(m.seed) for m in members)}
        for metric in metrics:
            mean, std = mean_std([m.metrics["test"][metric] for m in members])
            row[metric] = round(mean, 4)
            row[f"{metric}_std"] = None if std is None else round(std, 4)
        row["epochs"] = round(statistics.fmean(m.metrics["epochs"] for m in members), 1)
        row["wall_seconds"] = round(sum(m.metrics["wall_seconds"] for m in members), 1)
        rows.append(row)
    return rows


def fmt(value: float, std: float | None) -> str:
    return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
