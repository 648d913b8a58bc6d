"""Print a command's Rich table, or the same table as GitHub Markdown (`--markdown`).

Markdown goes to stdout so that `matrrec report table2 --markdown > table2.md` gives a table that
pastes into a README or a paper draft; the Rich markup the commands use maps to Markdown (bold ->
**x**, underline -> <u>x</u>, dim -> *x*).
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

MarkdownOpt = Annotated[bool, typer.Option(
    "--markdown", help="Print the table as GitHub Markdown (to stdout) instead of a Rich table.")]

_STYLES = (("bold", "**{}**"), ("underline", "<u>{}</u>"), ("dim", "*{}*"))


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


def show(table: Table, *, markdown: bool = False, console: Console | None = None) -> None:
    if markdown:
        print(to_markdown(table))
        return
    console = console or Console()
    if not console.is_terminal and console.width < PIPE_WIDTH:
        console.width = PIPE_WIDTH
    console.print(table)
