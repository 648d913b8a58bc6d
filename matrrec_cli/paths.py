"""Where data and results live: command-line option > environment variable > ./data, ./results."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MATRREC_DATA_DIR"
RESULTS_DIR_ENV = "MATRREC_RESULTS_DIR"


def data_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: `--data-dir`, else $MATRREC_DATA_DIR, else ./data."""
    return Path(option or os.environ.get(DATA_DIR_ENV) or "data")


def results_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The results directory: `--results-dir`, else $MATRREC_RESULTS_DIR, else ./results."""
    return Path(option or os.environ.get(RESULTS_DIR_ENV) or "results")
