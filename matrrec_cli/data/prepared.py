"""What the trainer reads: the prepared interactions and their metadata (see preprocess.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from matrrec_cli.data.preprocess import META
from matrrec_cli.data.registry import check_name, dataset_names
from matrrec_cli.errors import MatrrecError

INTERACTIONS = "interactions.parquet"


def prepare_command(name: str, data_dir: str | Path) -> str:
    """The command that (re)prepares `name`: `matrrec download` for a registered dataset,
    `matrrec import` with the recorded file and format for an imported one."""

    dir_opt = "" if Path(data_dir) == Path("data") else f" --data-dir {data_dir}"
    if name in dataset_names():
        return f"matrrec download {name}{dir_opt}"
    source: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError, IndexError):
        source = (json.loads((Path(data_dir) / name / META).read_text()).get("sources")
                  or [{}])[0]
    origin = str(source.get("origin", "")).removeprefix("import ") or "PATH"
    return (f"matrrec import {name} --from-file {origin} --format "
            f"{source.get('format', 'table')}{dir_opt}")


def require_prepared(name: str, data_dir: str | Path) -> Path:
    """The dataset's directory, or an error naming the command that prepares it (or, for a
    name that is neither registered nor imported, where to look)."""

    check_name(name)
    out = Path(data_dir) / name
    if (out / META).exists() and (out / INTERACTIONS).exists():
        return out
    if name not in dataset_names() and not out.exists():
        raise MatrrecError(f"unknown dataset '{name}': not in datasets.toml and not imported in "
                           f"{Path(data_dir)}; see `matrrec datasets`, or bring your own with "
                           f"`matrrec import {name} --from-file PATH --format table`")
    raise MatrrecError(f"dataset '{name}' is not prepared in {Path(data_dir)}; run "
                       f"`{prepare_command(name, data_dir)}`")


def _require(name: str, data_dir: Path) -> Path:
    return require_prepared(name, data_dir)


def _corrupt(path: Path, name: str, data_dir: Path, why: str) -> MatrrecError:
    return MatrrecError(f"{path} is corrupt ({why}); run `{prepare_command(name, data_dir)}` "
                        "to rebuild it")


def load_meta(name: str, data_dir: Path) -> dict[str, Any]:
    """n_users, n_items (real counts, no padding), n_interactions, sources, filter, versions."""
    path = _require(name, data_dir) / META
    try:
        meta = json.loads(path.read_text())
        int(meta["n_items"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(path, name, data_dir, type(exc).__name__) from None
    return meta


def load_interactions(name: str, data_dir: Path) -> pd.DataFrame:
    """user int32, item int32 (1..n, 0 = padding), timestamp int64; by user, chronological."""
    path = _require(name, data_dir) / INTERACTIONS
    try:
        df = pq.read_table(path, columns=["user", "item", "timestamp"]).to_pandas()
        df = df.astype({"user": "int32", "item": "int32", "timestamp": "int64"})
    except Exception as exc:  # truncated, not Parquet, columns missing or of another type
        raise _corrupt(path, name, data_dir, f"{type(exc).__name__}") from None
    if df.empty or (df["item"] < 1).any() or (df["user"] < 1).any():
        raise _corrupt(path, name, data_dir, "no rows, or ids below 1")
    return df
