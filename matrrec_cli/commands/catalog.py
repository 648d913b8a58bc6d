"""`matrrec datasets` and `matrrec models`: what there is to train, and how to get it ready."""

from __future__ import annotations

import typer

from matrrec_cli.commands.tables import DataDirOpt, JsonOpt, MarkdownOpt, show


def register(app: typer.Typer) -> None:
    @app.command()
    def datasets(
        data_dir: DataDirOpt = None,
        markdown: MarkdownOpt = False, json_out: JsonOpt = False,
    ) -> None:
        """Registered and imported datasets, prepared or not, with the command that prepares each.

        Example: matrrec datasets
        """
        from rich.table import Table

        from matrrec_cli.data.catalog import dataset_rows
        from matrrec_cli.paths import data_dir as resolve

        root = resolve(data_dir)
        rows = dataset_rows(root)
        table = Table(title=f"Datasets (data directory {root})")
        for col in ("name", "kind", "prepared", "users", "items", "interactions",
                    "default L / dropout", "prepare with"):
            table.add_column(col, justify="right" if col in ("users", "items", "interactions")
                             else "left")
        for r in rows:
            table.add_row(r["name"], r["kind"], "yes" if r["prepared"] else "no",
                          *(f"{r[k]:,}" if r[k] is not None else "-"
                            for k in ("users", "items", "interactions")),
                          f"{r['max_len']} / {r['dropout']}", r["command"])
        show(table, markdown=markdown, json_rows=rows if json_out else None)

    @app.command()
    def models(markdown: MarkdownOpt = False, json_out: JsonOpt = False) -> None:
        """The models `--model` accepts: kind, objectives, what the paper preset sets.

        Example: matrrec models
        """
        from rich.table import Table

        from matrrec_cli.models.catalog import model_rows

        rows = model_rows()
        table = Table(title="Models (--model NAME; --preset paper is the default, --preset "
                            "recbole keeps RecBole's own defaults)")
        for col in ("name", "kind", "objectives", "paper preset (dataset dropout p)",
                    "description"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["kind"], ", ".join(r["objectives"]), r["paper_preset"],
                          r["description"])
        show(table, markdown=markdown, json_rows=rows if json_out else None)
