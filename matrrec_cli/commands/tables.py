"""Print a command's Rich table, or the same table as GitHub Markdown (`--markdown`).

Markdown goes to stdout so that `matrrec report table2 --markdown > table2.md` gives a table that
pastes into a README or a paper draft; the Rich markup the commands use maps to Markdown (bold ->
**x**, underline -> <u>x</u>, dim -> *x*).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from matrrec_cli.errors import UsageError
from matrrec_cli.train.config import (
    CLI,
    DEFAULT,
    DEFAULT_MODEL,
    OWN_FLAGS,
    RunOptions,
    read_config_file,
)

MarkdownOpt = Annotated[bool, typer.Option(
    "--markdown", help="Print the table as GitHub Markdown (to stdout) instead of a Rich table.")]

# Options spelled the same by every command that takes them (choices shown in --help).
Objective = Literal["prefix", "all"]
Preset = Literal["paper", "recbole"]
ObjectiveOpt = Annotated[Objective | None, typer.Option(
    help="prefix (RecBole's one sample per prefix, faithful) or all (every position) "
         "\\[default: prefix].")]
PresetOpt = Annotated[Preset | None, typer.Option(
    help="paper (the released yaml) or recbole (model defaults) \\[default: paper].")]
DeviceOpt = Annotated[str | None, typer.Option(
    metavar="[auto|cpu|cuda|cuda:N]", help="Where to train and evaluate \\[default: auto].")]


def run_options(dataset: str | None, *, model: str | None = None, device: str | None = None,
                data_dir: str | None = None, results_dir: str | None = None,
                sets: list[str] | None = None, config: Path | None = None,
                **flags: Any) -> RunOptions:
    """The options a command was given, as the one object that carries them to `resolve`, with
    the true source of dataset, model, device and directories (command line, environment or
    default); `flags` are the own-flag options (seed, epochs, ...), None where not given.
    `config` is a run file (`--config run.toml`): its values come first, flags override them."""
    import os

    from matrrec_cli.paths import DATA_DIR_ENV, RESULTS_DIR_ENV
    from matrrec_cli.paths import data_dir as data_path
    from matrrec_cli.paths import results_dir as results_path

    def where(given: object, env: str | None = None) -> str:
        if given is not None:
            return CLI
        return f"${env}" if env and os.environ.get(env) else DEFAULT

    file = read_config_file(config) if config is not None else {"sources": {}, "sets": ()}
    dataset = dataset or file.get("dataset")
    if not dataset:
        raise UsageError("give --dataset NAME (or dataset = \"NAME\" in the --config file)")
    sources = {**file["sources"], "device": where(device),
               "data_dir": where(data_dir, DATA_DIR_ENV),
               "results_dir": where(results_dir, RESULTS_DIR_ENV)}
    sources["model"] = CLI if model else file["sources"].get("model", DEFAULT)
    if dataset != file.get("dataset"):
        sources.pop("dataset", None)  # the command line's
    given = {k: v for k, v in flags.items() if v is not None}
    for key in given:
        sources.pop(key, None)  # a flag overrides the file: the command line's
    for pair in sets or ():
        sources.pop(pair.partition("=")[0].strip(), None)
    own = {k: file[k] for k in OWN_FLAGS if k in file}
    return RunOptions(dataset=dataset, model=(model or file.get("model") or DEFAULT_MODEL).lower(),
                      device=device or "auto", data_dir=str(data_path(data_dir)),
                      results_dir=str(results_path(results_dir)),
                      sets=(*file["sets"], *(sets or ())), sources=sources, **{**own, **given})


CappedOpt = Annotated[bool, typer.Option(
    "--include-capped", help="Also use runs cut short by --epochs before early stopping (smoke "
                             "runs; left out by default).")]
# Rich reads "[word]" in help as markup: brackets meant literally are escaped as "\\["
DataDirOpt = Annotated[str | None, typer.Option(
    "--data-dir", help="Data directory \\[default: $MATRREC_DATA_DIR, else ./data].")]
ResultsDirOpt = Annotated[str | None, typer.Option(
    "--results-dir", help="Results directory \\[default: $MATRREC_RESULTS_DIR, else ./results].")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="A run file (TOML: dataset, model, \\[trainer], \\[model_config]; see "
                     "configs/); flags override it.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the table's rows as one JSON list on stdout (the table goes to stderr).")]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", help="Write the CSV here (only this table's rows) instead of the default file, "
                     "where rows of other datasets and experiments are kept.")]

_STYLES = (("bold", "**{}**"), ("underline", "<u>{}</u>"), ("dim", "*{}*"))


def p_text(p: float | None) -> str:
    """A p-value cell: two significant digits, "-" where no test ran (None or NaN)."""
    return "-" if p is None or p != p else f"{p:.2g}"


def markdown_cell(markup: str) -> str:
    """One Rich-markup cell as Markdown text; a literal `*` (a significance mark) is escaped so
    that it never pairs with the emphasis of a neighbouring span."""
    markup = markup.replace("*", "\\*")
    for style, fmt in _STYLES:
        markup = re.sub(rf"\[{style}\](.*?)\[/(?:{style})?\]",
                        lambda m, f=fmt: f.format(m.group(1)), markup)
    return Text.from_markup(markup).plain.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """The table's title (as a bold line), header and rows as a GitHub Markdown table."""
    cols = table.columns
    rows = list(zip(*(list(c.cells) for c in cols), strict=True)) if cols else []
    lines = [f"**{markdown_cell(str(table.title))}**", ""] if table.title else []
    lines.append("| " + " | ".join(markdown_cell(str(c.header)) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    lines += ["| " + " | ".join(markdown_cell(str(x)) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# Width for a table written to a pipe or a file: Rich would assume 80 columns there and cut
# every cell of a wide table to "0.05…".
PIPE_WIDTH = 250


def show(table: Table, *, markdown: bool = False, console: Console | None = None,
         json_rows: Any = None) -> None:
    """Print `table` (Rich, or Markdown on stdout); with `json_rows` (a DataFrame or a list of
    dicts) the rows go to stdout as JSON and the table to stderr, so stdout stays parseable."""
    if json_rows is not None:
        print_json(json_rows)
        console = Console(stderr=True)
    elif markdown:
        # a blank line ends the table: Markdown would read a following title or note as a row
        print(to_markdown(table) + "\n")
        return
    console = console or Console()
    if not console.is_terminal and console.width < PIPE_WIDTH:
        console.width = PIPE_WIDTH
    console.print(table)


def frame_table(df: Any, title: str, *, left: Iterable[str] | None = None) -> Table:
    """A DataFrame as a Rich table: `left` columns (default: the non-numeric ones) left-
    justified, the rest right; a missing value shows as "-", a boolean as yes / no."""
    left = set(left) if left is not None else {c for c in df.columns
                                               if df[c].dtype.kind not in "fi"}
    table = Table(title=title)
    for col in df.columns:
        table.add_column(col, justify="left" if col in left else "right")
    for row in df.itertuples(index=False):
        table.add_row(*("-" if v is None or v != v else
                        ("yes" if v is True else "no" if v is False else str(v)) for v in row))
    return table


def plain_printer(console: Console, *, markdown: bool, json_out: bool) -> Any:
    """How a command prints its plain lines (notes under a table): beside Markdown, on stdout
    as they are, never wrapped (so `--markdown` output is the same at any terminal width);
    else through the console."""
    def say(text: str) -> None:
        if markdown and not json_out:
            # an indented note is a list item in Markdown (else a renderer joins the notes
            # into one paragraph); a leading * is a literal mark, not a nested list
            if text.startswith("  ") and text.strip():
                text = "- " + re.sub(r"^\*", r"\\*", text.strip())
            print(text)
        else:
            console.print(text, markup=False, highlight=False)
    return say


def print_missing(todo: list[str], console: Console, *, markdown: bool, json_out: bool) -> None:
    """The commands that make a table's missing runs, under it: a shell block beside Markdown
    (so a rendered document shows them as commands), else plain lines, each one line whatever
    the terminal width (so they can be copied)."""
    if not todo:
        return
    if markdown and not json_out:
        print("\n".join(["To make the missing runs:", "", "```sh", *todo, "```"]))
    else:
        console.print("\n".join(["", "To make the missing runs:", *(f"  {c}" for c in todo)]),
                      markup=False, highlight=False, soft_wrap=True)


def print_json(rows: Any) -> None:
    """A table's rows (a DataFrame or a list of dicts) as one JSON list on stdout."""
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    print(json.dumps(_plain(rows), allow_nan=False))


def _plain(value: Any) -> Any:
    """Rows as plain JSON values: numpy scalars unwrapped, NaN and inf as null, other objects
    (paths) as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def save_csv(df: Any, default: Path, output: Path | None, *, key: list[str] | None) -> Path:
    """Write a command's table: to `output` as it is, else to `default`, merging by `key` —
    rows of the file whose key this table also has are replaced, the others kept (so a table
    of one dataset never erases another's rows). `key` None: the default file is about this
    one table only (its name says what), and is written whole."""
    from matrrec_cli.io import merge_csv, write_csv

    path = output or default
    if output is None and key is not None:
        merge_csv(df, path, key=key)
    else:
        write_csv(df, path)
    print(f"written {path}", file=sys.stderr)
    return path
