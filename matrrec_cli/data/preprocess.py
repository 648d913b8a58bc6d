"""Raw dump -> <data-dir>/<name>/interactions.parquet + id maps + meta.json (protocol §2 steps 1-5).

Steps: read in file order; iterative k-core (users and items below the bound pruned in the same
pass, duplicates kept); ids remapped 1..n by first appearance in the filtered file (0 = padding);
rows sorted by (user, timestamp, source row). `timestamp_order="recbole"` sorts by the float32
timestamp instead, as RecBole's tensors do (protocol §2 step 4): ML-1M times (~1e9 < 2^30) round
to multiples of 64 s there, so ratings within one 64-s window fall back to file order.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matrrec_cli.data.readers import read_raw
from matrrec_cli.data.registry import DatasetSpec, Source
from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import atomic_path, sha256_file, write_json

TimestampOrder = Literal["exact", "recbole"]
META = "meta.json"


def kcore_mask(users: np.ndarray, items: np.ndarray, *, min_user: int, min_item: int) -> np.ndarray:
    """Rows kept by the iterative k-core on integer codes (§2 step 2; multi-edges counted)."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        u_cnt = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        i_cnt = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        # ban users and items below the bound in the same pass, as RecBole's _filter_by_inter_num
        banned = keep & ((u_cnt[users] < min_user) | (i_cnt[items] < min_item))
        if not banned.any():
            return keep
        keep &= ~banned


def order_key(timestamp: np.ndarray, order: TimestampOrder) -> np.ndarray:
    """The time sort key: exact int64, or RecBole's float32 (64-s steps for ML-1M)."""
    return timestamp.astype(np.float32) if order == "recbole" else timestamp


def preprocess(raw: pd.DataFrame, *, min_user: int = 5, min_item: int = 5,
               timestamp_order: TimestampOrder = "exact") -> tuple[pd.DataFrame, list, list]:
    """Filter, remap and sort. Returns (interactions, user tokens by id-1, item tokens by id-1)."""
    u_codes, _ = pd.factorize(raw["user"])
    i_codes, _ = pd.factorize(raw["item"])
    keep = kcore_mask(u_codes, i_codes, min_user=min_user, min_item=min_item)
    kept = raw[keep].reset_index(drop=True)  # file order kept (§2 step 2)
    users, user_tokens = pd.factorize(kept["user"])  # first appearance in the filtered file (§2.3)
    items, item_tokens = pd.factorize(kept["item"])
    ts = kept["timestamp"].to_numpy(np.int64)
    row = np.arange(len(kept))
    perm = np.lexsort((row, order_key(ts, timestamp_order), users))  # (user, ts, source row)
    df = pd.DataFrame({"user": (users[perm] + 1).astype(np.int32),
                       "item": (items[perm] + 1).astype(np.int32),
                       "timestamp": ts[perm]})
    return df, list(user_tokens), list(item_tokens)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def prepare(spec: DatasetSpec, src: Source, raw_path: Path, data_dir: Path, *,
            timestamp_order: TimestampOrder = "exact") -> dict:
    """Read a registered dataset's raw dump and write its prepared form (see write_prepared)."""
    raw = read_raw(raw_path, src.format)
    return write_prepared(
        spec.name, raw, data_dir, min_user=spec.kcore.user, min_item=spec.kcore.item,
        sources=[{"file": src.file, "format": src.format, "origin": src.label,
                  "sha256": sha256_file(raw_path)}],
        training={"max_len": spec.training.max_len, "dropout": spec.training.dropout},
        where=str(raw_path), timestamp_order=timestamp_order)


def write_prepared(name: str, raw: pd.DataFrame, data_dir: Path, *, min_user: int,
                   min_item: int, sources: list[dict], training: dict, where: str,
                   timestamp_order: TimestampOrder = "exact", extra: dict | None = None) -> dict:
    """Filter, remap, sort and write `<data_dir>/<name>/`; meta.json goes last, so its presence
    marks a complete prepare."""
    out = Path(data_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # an interrupted re-prepare must not look prepared
    df, user_tokens, item_tokens = preprocess(raw, min_user=min_user, min_item=min_item,
                                              timestamp_order=timestamp_order)
    outputs = [out / "interactions.parquet", out / "user_map.parquet", out / "item_map.parquet"]
    if df.empty:
        raise MatrrecError(f"{where}: no interactions left after the {min_user}/"
                           f"{min_item}-core filter ({len(raw)} read)")
    try:
        _write_parquet(df, outputs[0])
        for path, tokens in zip(outputs[1:], (user_tokens, item_tokens), strict=True):
            _write_parquet(pd.DataFrame({"id": np.arange(1, len(tokens) + 1, dtype=np.int32),
                                         "token": pd.Series(tokens, dtype=str)}), path)
    except BaseException:  # interrupted or failed: leave no Parquet from this run behind
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    meta = {
        "name": name,
        "n_users": len(user_tokens), "n_items": len(item_tokens), "n_interactions": len(df),
        "n_raw_interactions": len(raw),
        "sources": sources,
        "filter": {"kcore_user": min_user, "kcore_item": min_item,
                   "duplicates": "kept", "timestamp_order": timestamp_order},
        "training": training,
        "versions": {"python": platform.python_version(), "pandas": pd.__version__,
                     "pyarrow": pa.__version__, "numpy": np.__version__},
        **(extra or {}),
    }
    write_json(out / META, meta)
    return meta
