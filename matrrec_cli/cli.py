"""The `matrrec` command. Each command is a thin wrapper over one library call.

Commands live in `matrrec_cli/commands/<area>.py`, each with a `register(app)` function. Library
code raises `MatrrecError`; `main` turns it into one line on stderr and a non-zero exit status.
No torch import happens here, so `matrrec --help` stays fast.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from typing import Annotated

import typer

import matrrec_cli
from matrrec_cli.errors import MatrrecError

app = typer.Typer(
    name="matrrec",
    help="Reproduce MaTrRec (Mamba + Transformer sequential recommendation) and its baselines.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"matrrec {matrrec_cli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
        = False,
) -> None:
    """Reproduce MaTrRec (Mamba + Transformer sequential recommendation) and its baselines."""


# One module per area of the toolkit; each exposes register(app).
COMMAND_MODULES = [
    "matrrec_cli.commands.catalog",
    "matrrec_cli.commands.data",
    "matrrec_cli.commands.train",
    "matrrec_cli.commands.report",
    "matrrec_cli.commands.experiments",
    "matrrec_cli.commands.tune",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def resume_hint(args: list[str]) -> str:
    """What continues an interrupted command: `train` (one run) with --resume; the experiment
    commands as they were (they reuse finished runs and resume unfinished ones)."""
    if args[:1] == ["train"] and "--seeds" not in args and "--resume" not in args:
        args = [*args, "--resume"]
    return shlex.join(["matrrec", *args])


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, report MatrrecError as one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="matrrec")
    except MatrrecError as exc:
        print(f"matrrec: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except (KeyboardInterrupt, SystemExit) as exc:
        # typer turns Ctrl-C into a silent exit 130; say what continues the work
        if isinstance(exc, SystemExit) and exc.code != 130:
            raise
        what = ("continue from the last finished epoch with" if args[:1] == ["train"] else
                "run it again to continue where it stopped")
        print(f"matrrec: interrupted; {what}: {resume_hint(args)}", file=sys.stderr)
        raise SystemExit(130) from None
