"""`matrrec download`, `matrrec import`, `matrrec stats`: raw dump -> Parquet -> Table 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from matrrec_cli.commands.tables import (
    DataDirOpt,
    JsonOpt,
    MarkdownOpt,
    OutputOpt,
    ResultsDirOpt,
    save_csv,
    show,
)
from matrrec_cli.errors import UsageError

Order = Annotated[Literal["exact", "recbole"], typer.Option(
    "--timestamp-order", help="exact: sort by (user, timestamp, file row); recbole: float32 "
                              "timestamps as RecBole (64-s steps on ML-1M).")]


def _order(value: str) -> str:
    if value not in ("exact", "recbole"):
        raise UsageError(f"--timestamp-order must be exact or recbole, not '{value}'")
    return value


def register(app: typer.Typer) -> None:
    @app.command()
    def download(
        names: Annotated[list[str] | None, typer.Argument(help="Dataset names.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every registered dataset.")] = False,
        data_dir: DataDirOpt = None,
        from_file: Annotated[Path | None, typer.Option("--from-file", help="Import a dump "
                                                       "fetched by hand (same checks).")] = None,
        timestamp_order: Order = "exact",
        require_hash: Annotated[bool, typer.Option(
            "--require-hash", help="Refuse sources (and --from-file files) without a sha256 in "
                                   "datasets.toml.")] = False,
    ) -> None:
        """Download, verify and prepare datasets (raw dump -> interactions.parquet).

        An existing prepared dataset is replaced only when the new one is complete.

        Example: matrrec download ml-100k
        """
        from matrrec_cli.data import download as dl
        from matrrec_cli.data.registry import dataset_names, get_dataset
        from matrrec_cli.paths import data_dir as resolve

        order = _order(timestamp_order)
        chosen = dataset_names() if all_ else list(names or [])
        if not chosen:
            raise UsageError("name a dataset or pass --all; known: " + ", ".join(dataset_names()))
        if from_file is not None and len(chosen) != 1:
            raise UsageError("--from-file imports exactly one dataset")
        specs = [get_dataset(n) for n in chosen]  # unknown names fail before any download
        for spec in specs:
            dl.check_spec(spec)  # a table name in datasets.toml becomes a directory name
        root = resolve(data_dir)
        for spec in specs:
            with dl.dataset_lock(root, spec.name):
                if from_file is not None:
                    raw = dl.import_file(spec, root, from_file, require_hash=require_hash)
                else:
                    raw = dl.download(spec, root, require_hash=require_hash)
                if dl.up_to_date(spec, raw, root, order):
                    print(f"{spec.name}: already prepared in {root / spec.name}", file=sys.stderr)
                else:
                    meta = dl.install(spec, raw, root, order)
                    print(f"{spec.name}: {meta['n_users']} users, {meta['n_items']} items, "
                          f"{meta['n_interactions']} interactions -> {root / spec.name}",
                          file=sys.stderr)
                dl.warn_unverified(spec, raw)

    @app.command("import")
    def import_(
        name: Annotated[str, typer.Argument(help="Name for the dataset (not a registered one).")],
        from_file: Annotated[Path, typer.Option(help="The file to import.")],
        format_: Annotated[Literal["table", "inter", "seq", "pairs"], typer.Option(
            "--format", help="table (CSV/TSV/Parquet), inter (RecBole), seq (user i1 i2 ...), "
                             "pairs (user item, grouped by user).")],
        kcore: Annotated[int, typer.Option(
            help="Iterative k-core on users and items; 0 keeps the data as given.")] = 5,
        user_col: Annotated[str, typer.Option(help="table: user column.")] = "user",
        item_col: Annotated[str, typer.Option(help="table: item column.")] = "item",
        time_col: Annotated[str, typer.Option(
            help="table: time column, or 'none' when rows are in time order.")] = "timestamp",
        sep: Annotated[str | None, typer.Option(
            help="table: CSV separator \\[default: tab for .tsv, else comma].")] = None,
        max_len: Annotated[int, typer.Option(help="Default L for training on it.")] = 50,
        dropout: Annotated[float, typer.Option(help="Default dropout for training on it.")]
            = 0.4,
        data_dir: DataDirOpt = None,
    ) -> None:
        """Import a dataset that is not in datasets.toml; then every command accepts NAME.

        Records the source file's sha256, the format and the filter in meta.json.

        Example: matrrec import beauty --from-file Beauty.txt --format seq
        """
        from matrrec_cli.data.importer import import_dataset
        from matrrec_cli.data.preprocess import dataset_lock
        from matrrec_cli.data.registry import check_name
        from matrrec_cli.paths import data_dir as resolve

        root = resolve(data_dir)
        cols = {"user_col": user_col, "item_col": item_col, "time_col": time_col, "sep": sep} \
            if format_ == "table" else {}
        check_name(name)  # before the name becomes a lock file's name
        # the new import is built beside an existing one and swapped in only when complete
        with dataset_lock(root, name):
            meta = import_dataset(name, from_file, format_, root, kcore=kcore, max_len=max_len,
                                  dropout=dropout, **cols)
        print(f"{name}: {meta['n_users']} users, {meta['n_items']} items, "
              f"{meta['n_interactions']} interactions ({meta['n_raw_interactions']} read, "
              f"{kcore}-core) -> {root / name}", file=sys.stderr)

    @app.command()
    def stats(
        dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Dataset (repeat); "
                                                          "default: every prepared one.")] = None,
        data_dir: DataDirOpt = None,
        results_dir: ResultsDirOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
    ) -> None:
        """Dataset statistics beside the paper's Table 1; writes results/table1_datasets.csv.

        Example: matrrec stats --dataset ml-100k --dataset musical
        """
        from rich.table import Table

        from matrrec_cli.data.registry import dataset_names
        from matrrec_cli.data.stats import stats_table
        from matrrec_cli.paths import data_dir as resolve
        from matrrec_cli.paths import results_dir as resolve_results

        root = resolve(data_dir)
        registered = [n for n in dataset_names() if (root / n / "meta.json").exists()]
        imported = sorted(p.parent.name for p in root.glob("*/meta.json")
                          if p.parent.name not in dataset_names())
        names = list(dataset or registered + imported)
        if not names:
            raise UsageError(f"no prepared dataset in {root}; run `matrrec download ml-100k`")
        df = stats_table(names, root)
        table = Table(title="Table 1 (ours | paper; paper Amazon counts include the padding id)")
        for col in ("Dataset", "#Users", "#Items", "#Inter", "Avg.Len_U", "Avg.Len_I", "Sparsity"):
            table.add_column(col, justify="right")

        def pair(r, k, fmt="{:,}"):
            paper = r[f"paper_{k}"]
            if paper is None or paper != paper:  # NaN: no paper row
                return fmt.format(r[k])
            if fmt == "{:,}":
                paper = int(paper)
            return f"{fmt.format(r[k])} | {fmt.format(paper)}"
        for r in df.to_dict("records"):
            table.add_row(r["dataset"], pair(r, "users"), pair(r, "items"), pair(r, "inter"),
                          pair(r, "avg_len_u", "{:.1f}"), pair(r, "avg_len_i", "{:.1f}"),
                          pair(r, "sparsity", "{:.2f}%"))
        show(table, markdown=markdown, json_rows=df if json_out else None)
        save_csv(df, resolve_results(results_dir) / "table1_datasets.csv", output,
                 key=["dataset"])
