"""`matrrec tune`: a better recipe than the paper's, searched on the validation split only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from matrrec_cli.commands.experiments import (
    AddressOpt,
    CpusPerRunOpt,
    DeviceOpt,
    EpochsOpt,
    ExecutorOpt,
    GpusPerRunOpt,
    KeepCheckpointsOpt,
    RetrainOpt,
    SeedOpt,
    SeedsOpt,
    SetOpt,
    SharedDataOpt,
    TrackOpt,
    cell_text,
    executor_options,
    seeds_for,
    tracker,
)
from matrrec_cli.commands.tables import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    MarkdownOpt,
    OutputOpt,
    ResultsDirOpt,
    run_options,
    save_csv,
    show,
)
from matrrec_cli.errors import MatrrecError, UsageError


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        dataset: Annotated[str | None, typer.Option(help="Prepared dataset.")] = None,
        model: Annotated[str | None, typer.Option(
            help="Model name \\[default: matrrec].")] = None,
        space: Annotated[list[str] | None, typer.Option(
            help="A key to search: key=v1,v2,... or key=KIND:low:high with KIND uniform, "
                 "loguniform, int or intlog; any --set key or own option (repeatable) "
                 "\\[default: objective, dropout, max_len, n_layers, lr and weight_decay over "
                 "a few values each].")] = None,
        n_trials: Annotated[int, typer.Option(
            help="Trials this command adds to the study (the faithful one included while the "
                 "study has not run it).")] = 20,
        sampler: Annotated[Literal["tpe", "grid"] | None, typer.Option(
            help="Optuna's sampler: tpe, or grid (every combination of value lists) "
                 "\\[default: grid for a count model's own grid, else tpe].")] = None,
        prune: Annotated[bool, typer.Option(
            help="Stop trials whose per-epoch valid NDCG@10 falls below the median of earlier "
                 "trials (Optuna's median pruner; local executor).")] = False,
        storage: Annotated[str | None, typer.Option(
            help="Optuna storage URL shared by workers, e.g. sqlite:///tune.db or "
                 "postgresql://host/db \\[default: results/tune.sqlite3].")] = None,
        study: Annotated[str | None, typer.Option(
            help="Study name (Optuna's, and the tracker's experiment); an existing study "
                 "resumes \\[default: DATASET-MODEL].")] = None,
        grid: Annotated[list[str] | None, typer.Option(
            help="Earlier spelling: knob=v1,v2 replaces a default key's values.",
            hidden=True)] = None,
        knobs: Annotated[str | None, typer.Option(
            help="Earlier spelling: search only these default keys (comma list).",
            hidden=True)] = None,
        seeds: SeedsOpt = None, seed: SeedOpt = None, epochs: EpochsOpt = None,
        final_seeds: Annotated[int, typer.Option(
            help="Seeds of the printed command that reproduces the winner.")] = 5,
        device: DeviceOpt = None, data_dir: DataDirOpt = None, results_dir: ResultsDirOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
        set_: SetOpt = None, retrain: RetrainOpt = False, config: ConfigOpt = None,
        track: TrackOpt = None,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        keep_checkpoints: KeepCheckpointsOpt = False, shared_data_dir: SharedDataOpt = False,
    ) -> None:
        """Search a better recipe with Optuna, chosen on valid NDCG@10 only.

        The study lives in --storage (a SQLite file in the results directory by default), so
        it resumes and several workers can share it. The faithful configuration (plus any
        --set) is the first trial of every study. Prints the `matrrec train ... --set
        tag=tuned` command of the best trial if it beat the faithful one (its runs show in
        Table 2 as "<model> (tuned)"). Writes results/tune_<dataset>_<model>.csv.

        Example: matrrec tune --dataset musical --space lr=loguniform:1e-4:1e-2 --n-trials 20
        """
        import pandas as pd
        from rich.table import Table

        from matrrec_cli.experiments import tune as tune_mod
        from matrrec_cli.experiments.runner import parse_values, resolve_spec, run_all

        if n_trials < 0:
            raise UsageError(f"--n-trials must be >= 0, not {n_trials}")
        if space and (grid or knobs):
            raise UsageError("give the search as --space, or in the earlier --grid/--knobs "
                             "spelling, not both")
        own_grid = tune_mod.model_grid(model or "matrrec")
        if space or grid or knobs or not own_grid:
            specs = space or tune_mod.from_old_options(
                grid or [], parse_values(knobs, str) if knobs is not None else None)
        else:  # a count model's small grid (models list it), searched whole
            specs, sampler = own_grid, sampler or "grid"
        sampler = sampler or "tpe"
        searched = tune_mod.parse_space(specs)
        if any(s.partition("=")[0].strip() in searched for s in set_ or []):
            raise UsageError("a --set key is also searched; drop it from --set or --space")
        base = run_options(dataset, model=model, device=device, data_dir=data_dir,
                           results_dir=results_dir, sets=set_, epochs=epochs, config=config)
        if any(k in searched for k in ("epochs", "seed", "preset")):
            raise UsageError("--space: epochs, seed and preset are not searched (they are the "
                             "budget, the repetition and the starting point)")
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, keep_checkpoints,
                              shared_data_dir)
        if prune and ex.kind == "ray":
            raise UsageError("--prune needs each trial's epochs here: use it with --executor "
                             "local (or run several local workers on one --storage)")
        seed_list = seeds_for(seeds, seed, base)
        start = resolve_spec(tune_mod.spec_for({}, base, "faithful"),
                             seed=seed_list.values[0], seed_source=seed_list.source)
        faithful = tune_mod.check_space(searched, start, sampler)
        for key, param in searched.items():  # every candidate is checked before anything trains
            for value in param.values or (param.low, param.high):
                if param.kind in ("int", "intlog"):
                    value = int(value)
                resolve_spec(tune_mod.spec_for({key: value}, base, "check"),
                             seed=seed_list.values[0], seed_source=seed_list.source)
        name = study or f"{base.dataset}-{base.model}"
        url = storage or tune_mod.default_storage(base.results_dir)
        found = tune_mod.study(name=name, storage=url, sampler=sampler, prune=prune,
                               seed=seed_list.values[0])
        for number in tune_mod.recover_stale(found, url):
            print(f"trial {number} was left running by a process that no longer exists: "
                  "marked failed, its parameters tried again", file=sys.stderr)
        found.enqueue_trial(faithful, skip_if_exists=True)

        def run(spec: Any, trial: Any) -> Any:  # Optuna's objective calls it per trial
            return run_all([spec], seed_list, retrain=retrain, executor=ex,
                           reporter=tune_mod.PruningReporter(trial) if prune else None,
                           track=tracker(track), study=name)

        found.optimize(tune_mod.objective(searched, base, run), n_trials=n_trials,
                       catch=(MatrrecError,))
        rows = tune_mod.rows(found, faithful)
        df = pd.DataFrame(rows)
        table = Table(title=f"{base.model} on {base.dataset}: Optuna study {name!r} by valid "
                            "NDCG@10 (test shown, never used)")
        for col in ("trial", *faithful, "state", "valid ndcg@10", "test ndcg@10", ""):
            table.add_column(col, justify="left" if col == "state" else "right")
        for r in rows:
            valid = r["valid_ndcg@10"]
            table.add_row(str(r["trial"]), *(str(r[k]) for k in faithful), r["state"],
                          "-" if valid is None else cell_text(valid, None, bold=r["best"]),
                          "-" if r["test_ndcg@10"] is None else f"{r['test_ndcg@10']:.4f}",
                          "faithful" if r["faithful"] else "")
        show(table, markdown=markdown, json_rows=df if json_out else None)
        save_csv(df, Path(base.results_dir) / f"tune_{base.dataset}_{base.model}.csv", output,
                 key=None)
        best = tune_mod.winner(found, faithful)
        if not best:
            print("no trial beat the faithful configuration on validation: nothing to tune, no "
                  "command printed", file=sys.stderr)
            return
        print(tune_mod.command(base, best, final_seeds),
              file=sys.stderr if json_out else sys.stdout)
        print("run it to get the tuned column of matrrec report table2", file=sys.stderr)
