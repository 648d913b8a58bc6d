"""`matrrec report ...`: the paper's tables rebuilt from the run records."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

report_app = typer.Typer(help="Paper tables from the run records under results/runs.",
                         no_args_is_help=True)


@report_app.command("table2")
def table2(
    dataset: Annotated[list[str] | None, typer.Option(
        help="Only these datasets (repeatable) [default: all with runs].")] = None,
    results_dir: Annotated[str | None, typer.Option(help="Results directory.")] = None,
) -> None:
    """Table 2 (overall performance): Recall@5/10/20 and NDCG@10 per model and dataset.

    Best in bold, second underlined, MaTrRec's improvement vs SASRec and vs Mamba4Rec, mean ± std
    over seeds; also written to results/table2_overall.csv.

    Example: matrrec report table2 --dataset ml-100k
    """
    from rich.console import Console
    from rich.table import Table

    from matrrec_cli.paths import results_dir as results_path
    from matrrec_cli.train import report

    rdir = results_path(results_dir)
    long = report.collect(rdir, dataset)
    wide = report.table2(long)
    path = rdir / "table2_overall.csv"
    report.write_csv(wide, path)

    models = [m for m in report.MODEL_ORDER if m in wide.columns]
    models += [c for c in wide.columns if c not in models and "_" not in c
               and c not in ("dataset", "metric")]
    table = Table(title="Table 2: overall performance (test, mean ± std over seeds)")
    table.add_column("dataset")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    for base in report.VS:
        table.add_column(f"vs {base}", justify="right")
    previous = None
    for _, row in wide.iterrows():
        cells = []
        for m in models:
            v = row.get(m)
            if v is None or v != v:  # missing model on this dataset
                cells.append("-")
                continue
            std = row.get(f"{m}_std")
            text = f"{v:.4f}" + (f" ± {std:.4f}" if std is not None and std == std else "")
            mark = row.get(f"{m}_mark")
            cells.append(f"[bold]{text}[/]" if mark == "best" else
                         f"[underline]{text}[/]" if mark == "second" else text)
        imps = [row.get(f"improvement_vs_{b}_pct") for b in report.VS]
        imp_cells = ["-" if x is None or x != x else f"{x:.2f}%" for x in imps]
        table.add_row(row["dataset"] if row["dataset"] != previous else "", row["metric"],
                      *cells, *imp_cells)
        previous = row["dataset"]
    console = Console()
    console.print(table)
    settings = long.drop_duplicates(["dataset", "model"])
    for _, s in settings.iterrows():
        console.print(f"  {s['dataset']}/{s['model']}: preset {s['preset']}, objective "
                      f"{s['objective']}, L {s['max_len']}, max epochs {s['epochs_cap']}, "
                      f"seeds {s['seeds']}")
    print(f"written {path}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
