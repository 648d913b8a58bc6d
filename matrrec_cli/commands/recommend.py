"""`matrrec recommend`: top-k items of a trained run, a thin wrapper over matrrec_cli.api."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from matrrec_cli.commands.tables import DeviceOpt, show
from matrrec_cli.errors import MatrrecError, UsageError

TABLES = (".csv", ".parquet")


def read_users(path: Path) -> list[str]:
    """User ids from a file: a CSV or Parquet with a `user` column, or else one id per line."""
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            lines = path.read_text().splitlines()
            return [u.strip() for u in lines if u.strip()]
    except FileNotFoundError:
        raise MatrrecError(f"--users {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MatrrecError(f"--users {path}: cannot read it ({type(exc).__name__}); give a text "
                           "file with one user id a line, or a CSV/Parquet with a user column"
                           ) from None
    if "user" not in df.columns:
        raise MatrrecError(f"--users {path} has no 'user' column (it has "
                           f"{', '.join(map(str, df.columns[:5]))})")
    return [str(u) for u in df["user"]]


def write_table(df: Any, path: Path) -> None:
    """The recommendations as CSV or Parquet (by the suffix), written atomically."""
    from matrrec_cli.io import atomic_path, write_csv

    if path.suffix == ".csv":
        write_csv(df, path)
    else:
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
    print(f"written {path} ({df['user'].nunique()} users, {len(df)} rows)", file=sys.stderr)


def register(app: typer.Typer) -> None:
    @app.command()
    def recommend(
        run_dir: Annotated[Path, typer.Argument(help="A run directory under results/runs.")],
        user: Annotated[list[str] | None, typer.Option(
            "--user", metavar="ID", help="A user id of the dataset's file (repeatable).")] = None,
        users: Annotated[Path | None, typer.Option(
            metavar="FILE",
            help="A file of user ids: one a line, or a CSV/Parquet with a user column.")]
            = None,
        top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Items per user.")]
            = 10,
        include_history: Annotated[bool, typer.Option(
            "--include-history", help="Also list items the user already has.")] = False,
        split: Annotated[Literal["valid", "test"] | None, typer.Option(
            help="Score the history evaluation saw for this split (all but the held-out "
                 "item(s)) \\[default: everything known].")] = None,
        output: Annotated[Path | None, typer.Option(
            help="Write the rows to this .csv or .parquet file.")] = None,
        json_out: Annotated[bool, typer.Option(
            "--json", help="Print the rows as one JSON list on stdout.")] = False,
        device: DeviceOpt = None,
        data_dir: Annotated[str | None, typer.Option(
            help="Data directory \\[default: the run's].")] = None,
    ) -> None:
        """Top-k items for users of a trained run (original ids; their own items left out).

        Example: matrrec recommend results/runs/ml-100k/matrrec/20260101-120000-abcdef123456
        --user 196 -k 10
        """
        if not user and users is None:
            raise UsageError("give --user ID (repeatable) or --users FILE")
        if users is not None and output is None and not json_out:
            raise UsageError("--users: give --output PATH.csv|.parquet (or --json)")
        if output is not None and output.suffix not in TABLES:
            raise UsageError(f"--output {output}: the name must end in .csv or .parquet")
        ids = [*(user or []), *(read_users(users) if users is not None else [])]
        if not ids:
            raise MatrrecError(f"--users {users} holds no user id")

        from matrrec_cli import api  # torch: only once the command runs

        run = api.load_run(run_dir, device=device or "auto", data_dir=data_dir)
        df = run.recommend(ids, top_k, include_history=include_history, split=split)
        if output is not None:
            write_table(df, output)
        if users is None:  # a few users: the list itself is worth showing
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"{run.config.model} on {run.config.dataset}: top {top_k}")
            for col in ("user", "rank", "item", "score"):
                table.add_column(col, justify="left" if col in ("user", "item") else "right")
            for r in df.itertuples(index=False):
                table.add_row(str(r.user), str(r.rank), str(r.item), f"{r.score:.4f}")
            show(table, console=Console(stderr=True), json_rows=df if json_out else None)
        elif json_out:
            from matrrec_cli.commands.tables import print_json

            print_json(df)
