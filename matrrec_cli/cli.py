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
    "matrrec_cli.commands.recommend",
    "matrrec_cli.commands.report",
    "matrrec_cli.commands.experiments",
    "matrrec_cli.commands.tune",
    "matrrec_cli.commands.fuse",
    "matrrec_cli.commands.evidence",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def resume_hint(args: list[str]) -> str:
    """What continues an interrupted command: `train` (one run) with --resume; the experiment
    commands as they were (they reuse finished runs and resume unfinished ones)."""
    if args[:1] == ["train"] and "--seeds" not in args and "--resume" not in args:
        args = [*args, "--resume"]
    return shlex.join(["matrrec", *args])


def os_error(exc: OSError) -> str:
    """What went wrong with which path, and what to do about it."""
    import errno

    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device of {where}; free some space and run it again"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return (f"{where}: a file stands where a directory is needed; choose another "
                "--data-dir / --results-dir or move the file")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where}: {exc.strerror or 'not writable'}; choose a writable --data-dir / "
                "--results-dir")
    if exc.errno == errno.ENAMETOOLONG:
        return f"{str(where)[:80]}…: file name too long; use a shorter name or directory"
    return f"{where}: {exc.strerror or exc}"


def _utf8_streams() -> None:
    """Tables print ±, ▲ and †: under a locale whose encoding has none of them (LC_ALL=C with
    PYTHONUTF8=0) stdout and stderr write UTF-8 instead of failing on the first one."""
    for stream in (sys.stdout, sys.stderr):
        try:
            "±▲†".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            if hasattr(stream, "reconfigure"):  # a path decoded with surrogates keeps its bytes
                stream.reconfigure(encoding="utf-8", errors="surrogateescape")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app; our errors and click's usage errors are one line
    on stderr, Ctrl-C says what continues the work."""
    args = list(sys.argv[1:] if argv is None else argv)
    _utf8_streams()
    try:
        code = app(args=args, prog_name="matrrec", standalone_mode=False)
    except MatrrecError as exc:
        print(f"matrrec: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        code = 130
    except MemoryError:
        print("matrrec: error: out of memory; use a smaller --max-len, batch_size or model, or "
              "a machine with more memory", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:  # a path that cannot be written: one line naming it, not a traceback
        print(f"matrrec: error: {os_error(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as exc:
        # click's usage errors (bad choice, missing option, unknown option): one line, as ours,
        # instead of a usage block and a boxed message
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        command = [a for a in args[:2] if not a.startswith("-")]  # "train", "report table2"
        see = shlex.join(["matrrec", *command, "--help"])
        print(f"matrrec: error: {exc.format_message()} (see {see})", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    if code == 130:  # typer turns Ctrl-C into exit status 130
        what = ("continue from the last finished epoch with" if args[:1] == ["train"] else
                "run it again to continue where it stopped")
        print(f"matrrec: interrupted; {what}: {resume_hint(args)}", file=sys.stderr)
    raise SystemExit(code if isinstance(code, int) else 0)
