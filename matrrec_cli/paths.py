"""Where data and results live: command-line option > environment variable > ./data, ./results.

A results directory holds two stores of run records with one layout:

    results/runs/        the runs this machine trained (ignored by git; the user's own)
    results/published/   the evidence behind the README's numbers (committed; written only by
                         `matrrec publish`), read by every report beside runs/
"""

from __future__ import annotations

import os
from pathlib import Path

from matrrec_cli.errors import MatrrecError

DATA_DIR_ENV = "MATRREC_DATA_DIR"
RESULTS_DIR_ENV = "MATRREC_RESULTS_DIR"
DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR = "data", "results"


def data_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: `--data-dir`, else $MATRREC_DATA_DIR, else ./data."""
    return Path(option or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def results_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The results directory: `--results-dir`, else $MATRREC_RESULTS_DIR, else ./results. A
    file where it (or a directory above it) should be is an error here, before a report reads
    nothing from it and prints an empty table."""
    path = Path(option or os.environ.get(RESULTS_DIR_ENV) or DEFAULT_RESULTS_DIR)
    above = path
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise MatrrecError(f"{above}: a file stands where a directory is needed; choose another "
                           "--results-dir / $MATRREC_RESULTS_DIR or move the file")
    return path


PUBLISHED = "published"


def published_dir(results: str | os.PathLike[str]) -> Path:
    """The published evidence of a results directory: <results>/published."""
    return Path(results) / PUBLISHED


def run_stores(results: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where run records are read from, in order: the published evidence, then this machine's
    own runs (<results>/published/runs, <results>/runs)."""
    return published_dir(results) / "runs", Path(results) / "runs"


def stores_text(results: str | os.PathLike[str]) -> str:
    """Where runs are read from, for messages: "<results>/runs or <results>/published"."""
    return f"{Path(results) / 'runs'} or {published_dir(results)}"
