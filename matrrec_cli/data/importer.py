"""`matrrec import`: bring-your-own datasets in the formats researchers share them in.

Formats (each read into user token, item token, int64 time key, rows in file order):
  table  CSV / TSV / Parquet with named user, item and time columns (`--time-col none`: the rows
         are already in time order per user, file order is the time)
  inter  RecBole atomic .inter (typed header, as `matrrec download` reads)
  seq    sequence text, one user per line: `user i1 i2 ...` in time order (SASRec, BERT4Rec and
         S3Rec releases); whitespace separated
  pairs  `user item` per line, grouped by user in time order (SASRec's ml-1m.txt)
For seq and pairs the time key is the position in the file, which keeps the given order through
the (user, time, row) sort. The result is written like a registered dataset (same Parquet layout
and meta.json, plus the import provenance) so every command works on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matrrec_cli.errors import MatrrecError, UsageError

FORMATS = ("table", "inter", "seq", "pairs")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise MatrrecError(f"{path}: not UTF-8 text (byte {exc.start}); is it compressed or "
                           "binary? use --format table for Parquet") from None


def read_seq(path: Path) -> pd.DataFrame:
    users, items, ts = [], [], []
    pos = 0
    for n, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise MatrrecError(f"{path}: line {n}: expected `user item1 item2 ...`, got only "
                               f"{parts[0]!r}")
        for item in parts[1:]:
            users.append(parts[0])
            items.append(item)
            ts.append(pos)
            pos += 1
    return pd.DataFrame({"user": users, "item": items, "timestamp": np.asarray(ts, np.int64)})


def read_pairs(path: Path) -> pd.DataFrame:
    users, items = [], []
    seen, last = set(), None
    for n, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise MatrrecError(f"{path}: line {n}: expected `user item`, got {len(parts)} fields")
        if parts[0] != last:
            if parts[0] in seen:  # order within a user would be ambiguous
                raise MatrrecError(f"{path}: line {n}: user {parts[0]!r} appears again after "
                                   "other users; pairs must be grouped by user")
            seen.add(parts[0])
            last = parts[0]
        users.append(parts[0])
        items.append(parts[1])
    return pd.DataFrame({"user": users, "item": items,
                         "timestamp": np.arange(len(users), dtype=np.int64)})


def read_table(path: Path, *, user_col: str, item_col: str, time_col: str,
               sep: str | None) -> pd.DataFrame:
    """CSV/TSV (separator from --sep or the extension) or Parquet, header row required."""
    suffix = "".join(path.suffixes[-2:]).lower()
    is_parquet = suffix.endswith((".parquet", ".pq"))
    want = [user_col, item_col] + ([] if time_col == "none" else [time_col])
    try:
        if is_parquet:
            df = pd.read_parquet(path)
        else:
            delim = sep or ("\t" if ".tsv" in suffix or ".tab" in suffix else ",")
            df = pd.read_csv(path, sep=delim, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MatrrecError(f"{path}: cannot read as a {'Parquet' if is_parquet else 'CSV'} "
                           f"table: {first}") from None
    missing = [c for c in want if c not in df.columns]
    if missing:
        raise MatrrecError(f"{path}: no column(s) {', '.join(missing)}; the file has "
                           f"{', '.join(map(str, df.columns))} (set --user-col/--item-col/"
                           "--time-col)")
    out = pd.DataFrame({"user": df[user_col].astype(str), "item": df[item_col].astype(str)})
    for col, label in ((user_col, "user"), (item_col, "item")):
        empty = (out[label] == "") | df[col].isna().to_numpy()
        if empty.any():
            where = f"line {int(np.argmax(empty)) + 2}" if not is_parquet else \
                f"row {int(np.argmax(empty)) + 1}"
            raise MatrrecError(f"{path}: {where}: empty {col}")
    if time_col == "none":
        out["timestamp"] = np.arange(len(out), dtype=np.int64)
        return out
    t = pd.to_numeric(df[time_col], errors="coerce")
    if t.isna().any():
        i = int(np.argmax(t.isna().to_numpy()))
        where = f"line {i + 2}" if not is_parquet else f"row {i + 1}"
        raise MatrrecError(f"{path}: {where}: {time_col} {df[time_col].iloc[i]!r} is not a "
                           "number")
    out["timestamp"] = t.astype("float64").astype("int64")
    return out


def read_import(path: Path, fmt: str, *, user_col: str = "user", item_col: str = "item",
                time_col: str = "timestamp", sep: str | None = None) -> pd.DataFrame:
    from matrrec_cli.data.readers import read_inter

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not path.is_file():
        raise MatrrecError(f"--from-file {path}: no such file")
    if fmt == "table":
        df = read_table(path, user_col=user_col, item_col=item_col, time_col=time_col, sep=sep)
    else:
        df = {"inter": read_inter, "seq": read_seq, "pairs": read_pairs}[fmt](path)
    if df.empty:
        raise MatrrecError(f"{path}: no interactions in the file")
    return df


def import_dataset(name: str, path: Path, fmt: str, data_dir: Path, *, kcore: int = 5,
                   max_len: int = 50, dropout: float = 0.4, **columns: str | None) -> dict:
    """Read, filter (k-core unless 0), remap and write `<data_dir>/<name>/`; returns meta."""
    from matrrec_cli.data.preprocess import write_prepared
    from matrrec_cli.data.registry import check_name, dataset_names
    from matrrec_cli.io import sha256_file

    check_name(name)
    if name in dataset_names():
        raise UsageError(f"{name!r} is a registered dataset; use `matrrec download {name} "
                         "--from-file PATH`, or import under another name")
    if kcore < 0:
        raise UsageError(f"--kcore must be 0 (keep all) or more, not {kcore}")
    path = Path(path)
    raw = read_import(path, fmt, **{k: v for k, v in columns.items() if v is not None})
    source = {"file": path.name, "format": fmt, "origin": f"import {path.resolve()}",
              "sha256": sha256_file(path),
              **{k: v for k, v in columns.items() if v is not None and fmt == "table"}}
    return write_prepared(name, raw, data_dir, min_user=kcore, min_item=kcore, sources=[source],
                          training={"max_len": max_len, "dropout": dropout}, where=str(path),
                          extra={"imported": True})
