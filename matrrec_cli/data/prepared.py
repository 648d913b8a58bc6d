"""What the trainer reads: the prepared interactions and their metadata (see preprocess.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from matrrec_cli.data.preprocess import META
from matrrec_cli.errors import MatrrecError


def _require(name: str, data_dir: Path) -> Path:
    out = Path(data_dir) / name
    if not (out / META).exists() or not (out / "interactions.parquet").exists():
        raise MatrrecError(f"dataset '{name}' is not prepared in {Path(data_dir)}; "
                           f"run `matrrec download {name}`")
    return out


def load_meta(name: str, data_dir: Path) -> dict[str, Any]:
    """n_users, n_items (real counts, no padding), n_interactions, sources, filter, versions."""
    return json.loads((_require(name, data_dir) / META).read_text())


def load_interactions(name: str, data_dir: Path) -> pd.DataFrame:
    """user int32, item int32 (1..n, 0 = padding), timestamp int64; by user, chronological."""
    df = pq.read_table(_require(name, data_dir) / "interactions.parquet").to_pandas()
    return df.astype({"user": "int32", "item": "int32", "timestamp": "int64"})
