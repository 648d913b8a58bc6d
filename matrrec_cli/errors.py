"""Errors a user can act on.

Library code raises `MatrrecError` with one sentence that says what is wrong and, where there is
one, the command that fixes it. The CLI prints it as a single line on stderr and exits 1: no
traceback for bad input, ever.
"""

from __future__ import annotations


class MatrrecError(Exception):
    """An error caused by input or environment, shown to the user as one line."""

    exit_code: int = 1


class UsageError(MatrrecError):
    """Bad combination of command-line values (exit status 2, like click's usage errors)."""

    exit_code = 2


def warn(text: str) -> None:
    """One warning line on stderr: something was skipped or is unverified, and the work goes on."""
    import sys

    print(f"matrrec: warning: {text}", file=sys.stderr, flush=True)
