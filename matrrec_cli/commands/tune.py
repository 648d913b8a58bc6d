"""`matrrec tune`: a better recipe than the paper's, searched on the validation split only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from matrrec_cli.commands.experiments import (
    AddressOpt,
    CpusPerRunOpt,
    DeviceOpt,
    DirOpt,
    EpochsOpt,
    ExecutorOpt,
    GpusPerRunOpt,
    KeepCheckpointsOpt,
    RetrainOpt,
    SeedOpt,
    SeedsOpt,
    SetOpt,
    SharedDataOpt,
    cell_text,
    executor_options,
)
from matrrec_cli.commands.tables import (
    JsonOpt,
    MarkdownOpt,
    OutputOpt,
    run_options,
    save_csv,
    show,
)
from matrrec_cli.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        dataset: Annotated[str, typer.Option(help="Prepared dataset.")],
        model: Annotated[str | None, typer.Option(
            help="Model name \\[default: matrrec].")] = None,
        grid: Annotated[list[str] | None, typer.Option(
            help="knob=v1,v2 replaces a knob's values (repeatable). Knobs, in search order: "
                 "objective, dropout, max_len, n_layers, lr, weight_decay.")] = None,
        knobs: Annotated[str | None, typer.Option(
            help="Search only these knobs (comma list) \\[default: all].")] = None,
        seeds: SeedsOpt = None, seed: SeedOpt = None, epochs: EpochsOpt = None,
        final_seeds: Annotated[int, typer.Option(
            help="Seeds of the printed command that reproduces the winner.")] = 5,
        device: DeviceOpt = None, data_dir: DirOpt = None, results_dir: DirOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
        set_: SetOpt = None, retrain: RetrainOpt = False,
        executor: ExecutorOpt = "local", address: AddressOpt = None,
        cpus_per_run: CpusPerRunOpt = 1, gpus_per_run: GpusPerRunOpt = None,
        keep_checkpoints: KeepCheckpointsOpt = False, shared_data_dir: SharedDataOpt = False,
    ) -> None:
        """Greedy search, one knob at a time, from the faithful settings (plus any --set); the
        starting configuration is trained first and each knob's current value is always a
        candidate. Picks by valid NDCG@10 only and prints the `matrrec train ... --set
        tag=tuned` command of the winner, if one beat the start (its runs show in Table 2 as
        "<model> (tuned)"). Writes results/tune_<dataset>_<model>.csv.

        Example: matrrec tune --dataset musical --knobs objective,lr --grid lr=3e-4,3e-3
        """
        from rich.table import Table

        from matrrec_cli.experiments import tune as tune_mod
        from matrrec_cli.experiments.runner import (
            RunResult,
            RunSpec,
            parse_seeds,
            parse_values,
            resolve_spec,
            run_all,
        )

        space = tune_mod.parse_grid(grid or [],
                                    parse_values(knobs, str) if knobs is not None else None)
        if any(s.partition("=")[0].strip() in space for s in set_ or []):
            raise UsageError("a --set key is also a tuned knob; drop it from one of them")
        base = run_options(dataset, model=model, device=device, data_dir=data_dir,
                           results_dir=results_dir, sets=set_, epochs=epochs)
        model, rdir = base.model, Path(base.results_dir)
        seed_list = parse_seeds(seeds, seed=seed)
        ex = executor_options(executor, address, cpus_per_run, gpus_per_run, keep_checkpoints,
                              shared_data_dir)

        def resolved(choice: dict) -> object:  # validates the spec before anything trains
            return resolve_spec(tune_mod.spec_for(choice, space, base),
                                seed=seed_list.values[0], seed_source=seed_list.source)

        start_cfg = resolved({})
        start = {k: tune_mod.current_value(start_cfg, k) for k in space}
        for knob in list(space):
            if start[knob] is None:
                raise UsageError(f"model {model!r} has no setting {knob}; leave it out with "
                                 f"--knobs {','.join(k for k in space if k != knob)}")
            for value in space[knob][1]:
                resolved({knob: value})

        def run(spec: RunSpec) -> list[RunResult]:
            return run_all([spec], seed_list, retrain=retrain, executor=ex)

        best, rows = tune_mod.search(space, run, base=base, start=start)
        import pandas as pd

        df = pd.DataFrame(rows)
        table = Table(title=f"{model} on {dataset}: search by valid NDCG@10 from the starting "
                            "configuration (test shown, never used)")
        for col in ("knob", "value", "valid ndcg@10", "test ndcg@10", "held", "kept"):
            table.add_column(col, justify="left" if col == "knob" else "right")
        for r in rows:
            table.add_row(r["knob"], str(r["value"]),
                          cell_text(r["valid_ndcg@10"], None, bold=r["kept"]),
                          f"{r['test_ndcg@10']:.4f}", "yes" if r["held"] else "",
                          "yes" if r["kept"] else "")
        show(table, markdown=markdown, json_rows=df if json_out else None)
        save_csv(df, rdir / f"tune_{dataset}_{model}.csv", output, key=None)
        if not best:
            print("no candidate beat the starting configuration on validation: nothing to "
                  "tune, no command printed", file=sys.stderr)
            return
        print(tune_mod.command(base, best, space, final_seeds),
              file=sys.stderr if json_out else sys.stdout)
        print("run it to get the tuned column of matrrec report table2", file=sys.stderr)
