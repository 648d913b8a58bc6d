"""`matrrec train` and `matrrec evaluate`: thin wrappers over matrrec_cli.train.pipeline."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from matrrec_cli.commands.experiments import (
    AddressOpt,
    CpusPerRunOpt,
    ExecutorOpt,
    GpusPerRunOpt,
    KeepCheckpointsOpt,
    SharedDataOpt,
    StudyOpt,
    TrackOpt,
    executor_options,
    seeds_for,
    tracker,
)
from matrrec_cli.commands.tables import (
    ConfigOpt,
    DataDirOpt,
    DeviceOpt,
    ObjectiveOpt,
    PresetOpt,
    ResultsDirOpt,
    run_options,
    show,
)
from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.train.config import RunOptions, flat, settable_help


def _show_config(cfg: Any) -> None:
    """The resolved configuration with the source of every value, as a table on stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.model} on {cfg.dataset} (config {cfg.config_hash()})")
    for col in ("key", "value", "source"):
        table.add_column(col)
    values = flat(cfg.to_dict())
    for key, value in values.items():
        source = cfg.sources.get(key, "default")
        table.add_row(key, str(value), source, style=None if source == "default" else "bold")
    show(table, console=Console(stderr=True))


def _metrics_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    names = list(next(iter(rows.values())))
    for name in names:
        table.add_column(name, justify="right")
    for split_name, m in rows.items():
        table.add_row(split_name, *(f"{m[n]:.4f}" for n in names))
    show(table, console=Console(stderr=True))


def _train_seeds(opts: RunOptions, *, seeds: str, seed: int | None, json_out: bool,
                 executor: Any, track: str, study: str | None) -> None:
    """`train --seeds`: one run per seed through the experiment runner, then mean ± std."""
    from matrrec_cli.experiments.runner import RunSpec, mean_std, run_all

    results = run_all([RunSpec(opts, label=opts.model)], seeds_for(seeds, seed, opts),
                      executor=executor, track=track, study=study)
    model, dataset = opts.model, opts.dataset
    summary: dict[str, dict[str, float | None]] = {}
    for split_name in ("valid", "test"):
        names = list(results[0].metrics[split_name])
        summary[split_name] = {}
        for n in names:
            mean, std = mean_std([r.metrics[split_name][n] for r in results])
            summary[split_name][n] = round(mean, 4)
            summary[split_name][f"{n}_std"] = None if std is None else round(std, 4)
    rows = {f"seed {r.seed}": r.metrics["test"] for r in results}
    if len(results) > 1:  # a single seed has no spread: no "std 0.0000" row
        rows["mean"] = {n: summary["test"][n] for n in results[0].metrics["test"]}
        rows["std"] = {n: summary["test"][f"{n}_std"] for n in results[0].metrics["test"]}
    plural = "s" if len(results) > 1 else ""
    _metrics_table(f"{model} on {dataset}: test metrics over {len(results)} seed{plural}", rows)
    if json_out:
        print(json.dumps({"seeds": [r.seed for r in results],
                          "runs": [str(r.run_dir) for r in results],
                          "valid": summary["valid"], "test": summary["test"]}))


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        ctx: typer.Context,
        dataset: Annotated[str | None, typer.Option(
            help="Prepared dataset (see matrrec download); required unless --config names "
                 "one.")] = None,
        model: Annotated[str | None, typer.Option(
            help="Model name (model registry) \\[default: matrrec].")] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed \\[default: 2020].")] = None,
        seeds: Annotated[str | None, typer.Option(
            help="Several seeds: a count K (seed..seed+K-1) or a list 2020,2021; finished runs "
                 "are reused, the summary shows mean ± std.")] = None,
        epochs: Annotated[int | None, typer.Option(help="Maximum epochs \\[default: 300].")] = None,
        max_len: Annotated[int | None, typer.Option(
            help="History length L \\[default: datasets.toml].")] = None,
        dropout: Annotated[float | None, typer.Option(
            help="Every dropout of the model \\[default: datasets.toml].")] = None,
        objective: ObjectiveOpt = None,
        preset: PresetOpt = None,
        device: DeviceOpt = None,
        data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None,
        resume: Annotated[bool, typer.Option(
            help="Continue the newest unfinished run of this configuration.")] = False,
        json_out: Annotated[bool, typer.Option(
            "--json", help="Print final metrics as one JSON object on stdout.")] = False,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="key=value for a model setting (matrrec models) or a trainer "
                          f"setting, repeatable. Trainer keys: {settable_help()}.")] = None,
        nproc_per_node: Annotated[int | None, typer.Option(
            help="Train one run on N ranks through torch's launcher (one GPU each with nccl, "
                 "or gloo on CPU); batch size and lr stay the run's \\[default: one "
                 "process].")] = None,
        config: ConfigOpt = None, track: TrackOpt = None, study: StudyOpt = None,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        keep_checkpoints: KeepCheckpointsOpt = False, shared_data_dir: SharedDataOpt = False,
    ) -> None:
        """Train a model on a dataset, validate every epoch, test the best state.

        Writes results/runs/<dataset>/<model>/<run-id>/ (config, metrics, ranks, history,
        checkpoints, environment).

        Example: matrrec train --dataset ml-100k --epochs 20 --json
        """
        from matrrec_cli.experiments.tracking import log_run
        from matrrec_cli.train import distributed, pipeline, runs
        from matrrec_cli.train.config import resolve
        from matrrec_cli.train.progress import Reporter

        if nproc_per_node is not None and seeds is not None:
            raise UsageError("--nproc-per-node trains one run; it cannot be combined with --seeds "
                             "(run one seed at a time)")
        track = tracker(track)  # a bad --track fails now, not after the run has trained
        opts = run_options(dataset, model=model, device=device, data_dir=data_dir,
                           results_dir=results_dir, sets=set_, epochs=epochs, max_len=max_len,
                           dropout=dropout, objective=objective, preset=preset, config=config)
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, keep_checkpoints,
                              shared_data_dir)
        if seeds is not None:
            _train_seeds(opts, seeds=seeds, seed=seed, json_out=json_out, executor=ex,
                         track=track, study=study)
            return
        if ex.kind == "ray":
            raise UsageError("--executor ray runs several runs: use it with --seeds (one run "
                             "trains here, or on several devices with --nproc-per-node)")
        cfg = resolve(dataclasses.replace(opts, seed=seed if seed is not None else opts.seed))
        if nproc_per_node is not None and nproc_per_node != 1:  # the ranks run this very command
            raise typer.Exit(distributed.launch(distributed.command_line(ctx), nproc_per_node,
                                                device=cfg.device))
        if distributed.is_main():  # one table, not one per rank
            runs.check_writable(cfg)  # an unusable results dir fails before the table, not after
            _show_config(cfg)
        metrics, run_dir = pipeline.train(cfg, resume=resume, reporter=Reporter())
        if not distributed.is_main():
            return
        log_run(run_dir, track=track, study=study)
        _metrics_table(f"{cfg.model} on {cfg.dataset}: best epoch {metrics['best_epoch']} of "
                       f"{metrics['epochs']}, {metrics['wall_seconds']:.1f}s",
                       {"valid": metrics["valid"], "test": metrics["test"]})
        print(f"run saved to {run_dir}", file=sys.stderr)
        if json_out:
            keep = ("valid", "test", "best_epoch", "epochs", "stopped_early", "wall_seconds",
                    "objective", "preset", "seed", "config_hash")
            print(json.dumps({"run_dir": str(run_dir), **{k: metrics[k] for k in keep}}))

    @app.command()
    def evaluate(
        run_dir: Annotated[Path, typer.Argument(help="A run directory under results/runs.")],
        split: Annotated[Literal["valid", "test"], typer.Option(help="Which split.")] = "test",
        device: DeviceOpt = None,
        mask_history: Annotated[bool | None, typer.Option(
            "--mask-history/--no-mask-history",
            help="Mask items the user saw \\[default: as the run was trained].")] = None,
        data_dir: Annotated[str | None, typer.Option(
            help="Data directory \\[default: the run's].")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Reload a run's best checkpoint and recompute its metrics (checks the stored ones).

        Example: matrrec evaluate results/runs/ml-100k/matrrec/20260101-120000-abcdef123456
        """
        from matrrec_cli.train import pipeline

        if split not in ("valid", "test"):
            raise MatrrecError(f"--split must be valid or test, not {split!r}")
        out = pipeline.evaluate_run(run_dir, split_name=split, device=device or "auto",
                                    mask_history=mask_history, data_dir=data_dir)
        _metrics_table(f"{run_dir}", {split: out["metrics"]})
        if "matches_stored" in out:
            word = "match" if out["matches_stored"] else "DO NOT match"
            print(f"recomputed {split} metrics {word} the stored metrics.json", file=sys.stderr)
        if json_out:
            print(json.dumps(out))
        if out.get("matches_stored") is False:
            raise typer.Exit(1)
