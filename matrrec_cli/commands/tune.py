"""`matrrec tune`: a better recipe than the paper's, searched on the validation split only."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from matrrec_cli.commands.experiments import (
    DeviceOpt,
    DirOpt,
    EpochsOpt,
    RetrainOpt,
    SeedOpt,
    SeedsOpt,
    SetOpt,
    cell_text,
    resolve_dirs,
    write_csv,
)
from matrrec_cli.commands.tables import MarkdownOpt, show
from matrrec_cli.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        dataset: Annotated[str, typer.Option(help="Prepared dataset.")],
        model: Annotated[str, typer.Option(help="Model name.")] = "matrrec",
        grid: Annotated[list[str] | None, typer.Option(
            help="knob=v1,v2 replaces a knob's values; knob= drops it (repeatable). Knobs, in "
                 "search order: objective, dropout, max_len, n_layers, lr, weight_decay.")] = None,
        seeds: SeedsOpt = None, seed: SeedOpt = None, epochs: EpochsOpt = None,
        final_seeds: Annotated[int, typer.Option(
            help="Seeds of the printed command that reproduces the winner.")] = 5,
        device: DeviceOpt = "auto", data_dir: DirOpt = None, results_dir: DirOpt = None,
        markdown: MarkdownOpt = False,
        set_: SetOpt = None, retrain: RetrainOpt = False,
    ) -> None:
        """Greedy search, one knob at a time, from the faithful settings; picks by valid
        NDCG@10 only and prints the `matrrec train ... --set tag=tuned` command of the winner
        (its runs show in Table 2 as "<model> (tuned)"). Writes results/tune_<dataset>_<model>.csv.

        Example: matrrec tune --dataset musical --grid objective=all --grid lr=
        """
        from rich.table import Table

        from matrrec_cli.experiments import tune as tune_mod
        from matrrec_cli.experiments.runner import RunResult, RunSpec, parse_seeds, run_all

        knobs = tune_mod.parse_grid(grid or [])
        if any(s.partition("=")[0].strip() in knobs for s in set_ or []):
            raise UsageError("a --set key is also a tuned knob; drop it from one of them")
        ddir, rdir = resolve_dirs(data_dir, results_dir)
        seed_list = parse_seeds(seeds, seed=seed)

        def run(spec: RunSpec) -> list[RunResult]:
            return run_all([spec], seed_list, device=device, data_dir=ddir, results_dir=rdir,
                           retrain=retrain)

        best, rows = tune_mod.search(dataset, model, knobs, run, base_cli={"epochs": epochs},
                                     base_sets=list(set_ or []))
        import pandas as pd

        write_csv(pd.DataFrame(rows), rdir / f"tune_{dataset}_{model}.csv")
        table = Table(title=f"{model} on {dataset}: search by valid NDCG@10 (test shown, "
                            "never used)")
        for col in ("knob", "value", "valid ndcg@10", "test ndcg@10", "kept"):
            table.add_column(col, justify="left" if col == "knob" else "right")
        for r in rows:
            table.add_row(r["knob"], str(r["value"]),
                          cell_text(r["valid_ndcg@10"], None, bold=r["kept"]),
                          f"{r['test_ndcg@10']:.4f}", "yes" if r["kept"] else "")
        show(table, markdown=markdown)
        print(tune_mod.command(dataset, model, best, knobs, list(set_ or []), final_seeds))
        print("run it to get the tuned column of matrrec report table2", file=sys.stderr)
