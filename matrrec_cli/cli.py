"""The `matrrec` command. Each command is a thin wrapper over one library call.

Commands live in `matrrec_cli/commands/<area>.py`, each with a `register(app)` function. Library
code raises `MatrrecError`; `main` turns it into one line on stderr and a non-zero exit status.
No torch import happens here, so `matrrec --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from matrrec_cli.errors import MatrrecError

app = typer.Typer(
    name="matrrec",
    help="Reproduce MaTrRec (Mamba + Transformer sequential recommendation) and its baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# One module per area of the toolkit; each exposes register(app).
COMMAND_MODULES = [
    "matrrec_cli.commands.data",
    "matrrec_cli.commands.train",
    "matrrec_cli.commands.report",
    "matrrec_cli.commands.experiments",
    "matrrec_cli.commands.tune",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, report MatrrecError as one line."""
    try:
        app(args=argv, prog_name="matrrec")
    except MatrrecError as exc:
        print(f"matrrec: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("matrrec: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
