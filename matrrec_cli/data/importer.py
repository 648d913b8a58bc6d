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

import bz2
import gzip
import lzma
import re
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matrrec_cli.data.preprocess import write_prepared
from matrrec_cli.data.readers import (
    BOM,
    CORRUPT,
    BadValue,
    binary_file,
    first_line,
    not_utf8,
    read_inter,
    to_frame,
)
from matrrec_cli.data.registry import check_name, dataset_names
from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.io import sha256_file

FORMATS = ("table", "inter", "seq", "pairs")


def _lines(path: Path) -> list[str]:
    data = path.read_bytes().removeprefix(BOM)  # else the first token would start with U+FEFF
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise not_utf8(str(path), line, data[:4]) from None


_WHITESPACE = "; fields are separated by spaces or tabs (use --format table for CSV)"


def read_seq(path: Path) -> pd.DataFrame:
    users, items, ts = [], [], []
    pos = 0
    for n, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise MatrrecError(f"{path}: line {n}: expected `user item1 item2 ...`, got only "
                               f"{parts[0]!r}{_WHITESPACE if ',' in parts[0] else ''}")
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
            raise MatrrecError(f"{path}: line {n}: expected `user item`, got {len(parts)} fields"
                               f"{_WHITESPACE if len(parts) == 1 else ''}")
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


def _open_decompressed(path: Path) -> IO[bytes]:
    """`path` as pandas reads it: decompressed by extension."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    return opener(path, "rb")


def _check_stream(path: Path) -> None:
    """Read a compressed file to its end: a damaged deflate stream can inflate to plausible
    garbage that fails to parse, and only the checksum at the end says the file is at fault."""
    if path.suffix.lower() not in (".gz", ".bz2", ".xz"):
        return
    try:
        with _open_decompressed(path) as f:
            while f.read(1 << 24):
                pass
    except CORRUPT as exc:
        raise MatrrecError(f"{path}: truncated or corrupt compressed file ({first_line(exc)}); "
                           "fetch it again") from None


def _first_bad_utf8(path: Path) -> tuple[int | None, bytes]:
    """(line of the first undecodable byte, the file's first bytes) for the error message."""
    head, n = b"", None
    if path.suffix.lower() in (".zip", ".zst"):  # pandas opens these itself: no line to name
        return n, head
    with _open_decompressed(path) as f:
        for i, line in enumerate(f, start=1):
            head = head or line[:4]
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                n = i
                break
    return n, head


_TOKENIZE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    """Every field as text with no NA guessing; row i is line i + 1 (blank lines kept as rows
    so that line numbers in messages are right)."""
    try:
        return pd.read_csv(path, sep=sep if len(sep) == 1 else re.escape(sep), header=None,
                           dtype=str, keep_default_na=False, skip_blank_lines=False,
                           engine="c" if len(sep) == 1 else "python")
    except UnicodeDecodeError:  # a ValueError: before the clause below
        _check_stream(path)
        n, head = _first_bad_utf8(path)
        raise not_utf8(str(path), n, head) from None
    except pd.errors.EmptyDataError:
        raise MatrrecError(f"{path}: the file is empty; a table needs a header line naming its "
                           "columns, then one row per interaction") from None
    except (ValueError, pd.errors.ParserError) as exc:
        _check_stream(path)
        if m := _TOKENIZE.search(str(exc)):
            want, line, saw = m.groups()
            raise MatrrecError(f"{path}: line {line}: {saw} fields where the header has {want}; "
                               f"quote values that contain the separator {sep!r}") from None
        raise MatrrecError(f"{path}: cannot read as a CSV table: {first_line(exc)}") from None
    except CORRUPT as exc:
        raise MatrrecError(f"{path}: truncated or corrupt compressed file ({first_line(exc)}); "
                           "fetch it again") from None
    except ImportError:  # pandas reads .zst only with the optional zstandard package
        raise MatrrecError(f"{path}: cannot decompress {path.suffix} files here; decompress it "
                           "first, or use .gz, .bz2 or .xz") from None


def _check_header(path: Path, names: list[str], want: dict[str, str], where: str,
                  sep: str | None) -> None:
    for opt, col in want.items():
        if names.count(col) > 1:
            raise MatrrecError(f"{path}: {where}: column {col!r} appears {names.count(col)} times; "
                               f"rename the copies or pick another column with {opt}")
    missing = [c for c in want.values() if c not in names]
    if missing:
        hint = ""
        if sep is not None and len(names) == 1:
            hint = f"; the header has a single column, so the separator is probably not {sep!r}"
        opts = "--user-col/--item-col/--time-col" + ("" if sep is None else " or --sep")
        raise MatrrecError(f"{path}: no column(s) {', '.join(missing)}; the file has "
                           f"{', '.join(map(repr, names))}{hint} (set {opts})")


def read_table(path: Path, *, user_col: str, item_col: str, time_col: str,
               sep: str | None) -> pd.DataFrame:
    """CSV/TSV (separator from --sep or the extension) or Parquet, header row required."""
    suffix = "".join(path.suffixes[-2:]).lower()
    is_parquet = suffix.endswith((".parquet", ".pq"))
    want = {"--user-col": user_col, "--item-col": item_col}
    if time_col != "none":
        want["--time-col"] = time_col
    if is_parquet:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, *CORRUPT) as exc:
            raise MatrrecError(f"{path}: not a readable Parquet file ({first_line(exc)}); check "
                               "the file, or name a text table .csv/.tsv") from None
        _check_header(path, names, want, "schema", None)
        try:
            table = pq.read_table(path, columns=list(want.values()))
        except (pa.ArrowException, *CORRUPT) as exc:
            raise MatrrecError(f"{path}: corrupt Parquet file ({first_line(exc)}); write it "
                               "again") from None
        columns = [table.column(c) for c in want.values()]
        lines = None
    else:
        if path.suffix.lower() not in (".gz", ".bz2", ".xz", ".zip", ".zst"):
            with path.open("rb") as f:  # pandas would parse binary as text with odd errors
                if binary := binary_file(str(path), f.read(4)):
                    raise binary
        delim = sep or ("\t" if ".tsv" in suffix or ".tab" in suffix else ",")
        df = _read_csv(path, delim)
        names = [str(v) for v in df.iloc[0]]
        _check_header(path, names, want, "line 1", delim)
        df = df.iloc[1:]
        df = df[(df != "").any(axis=1)]  # blank lines (pandas gives them as empty fields)
        lines = df.index.to_numpy() + 1
        columns = [pa.array(df.iloc[:, names.index(c)].to_numpy(dtype=object), pa.string(),
                            from_pandas=True)
                   for c in want.values()]
    if time_col == "none":  # file order is the time
        columns.append(pa.array(np.arange(len(columns[0]), dtype=np.int64)))
    try:
        return to_frame(*columns, names=(user_col, item_col, time_col))
    except BadValue as exc:
        if exc.index is None:
            where = ""
        else:
            where = f"row {exc.index + 1}: " if lines is None else f"line {lines[exc.index]}: "
        raise MatrrecError(f"{path}: {where}{exc.describe()}") from None


def _check_table_options(user_col: str, item_col: str, time_col: str,
                         sep: str | None) -> str | None:
    """Up-front checks of the table options; returns the separator to use (None: by suffix)."""
    cols = {"--user-col": user_col, "--item-col": item_col, "--time-col": time_col}
    for opt, col in cols.items():
        if not col:
            raise UsageError(f"{opt} must name a column, not ''")
    for a, b in (("--user-col", "--item-col"), ("--user-col", "--time-col"),
                 ("--item-col", "--time-col")):
        if cols[a] == cols[b]:
            raise UsageError(f"{a} and {b} both name the column {cols[a]!r}; they must differ")
    if sep is None:
        return None
    if sep == "\\t":  # a literal backslash-t as typed in a shell: the user means a tab
        return "\t"
    if not sep or sep in ("\n", "\r", '"'):
        raise UsageError(f"--sep must be the field separator, e.g. ',' or '\\t', not {sep!r}")
    return sep


def read_import(path: Path, fmt: str, *, user_col: str = "user", item_col: str = "item",
                time_col: str = "timestamp", sep: str | None = None) -> pd.DataFrame:
    """The raw frame (user, item tokens; int64 time key) of a file in one of FORMATS."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "table":
        sep = _check_table_options(user_col, item_col, time_col, sep)
    if not path.exists():
        raise MatrrecError(f"--from-file {path}: no such file")
    if path.is_dir():
        raise MatrrecError(f"--from-file {path}: is a directory; give the file inside it")
    if not path.is_file():
        raise MatrrecError(f"--from-file {path}: not a regular file")
    try:
        if fmt == "table":
            df = read_table(path, user_col=user_col, item_col=item_col, time_col=time_col,
                            sep=sep)
        else:
            df = {"inter": read_inter, "seq": read_seq, "pairs": read_pairs}[fmt](path)
    except OSError as exc:  # unreadable (permissions); damaged content is reported by the readers
        raise MatrrecError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if df.empty:
        raise MatrrecError(f"{path}: no interactions in the file")
    return df


def import_dataset(name: str, path: Path, fmt: str, data_dir: Path, *, kcore: int = 5,
                   max_len: int = 50, dropout: float = 0.4, **columns: str | None) -> dict:
    """Read, filter (k-core unless 0), remap and write `<data_dir>/<name>/`; returns meta."""

    check_name(name)
    if name in dataset_names():
        raise UsageError(f"{name!r} is a registered dataset; use `matrrec download {name} "
                         "--from-file PATH`, or import under another name")
    # options first: a bad value must fail before minutes of reading a large file
    if kcore < 0:
        raise UsageError(f"--kcore must be 0 (keep all) or more, not {kcore}")
    if max_len < 1:
        raise UsageError(f"--max-len must be 1 or more, not {max_len}")
    if not 0 <= dropout < 1:  # also false for NaN
        raise UsageError(f"--dropout must be at least 0 and below 1, not {dropout}")
    path = Path(path)
    raw = read_import(path, fmt, **{k: v for k, v in columns.items() if v is not None})
    source = {"file": path.name, "format": fmt, "origin": f"import {path.resolve()}",
              "sha256": sha256_file(path),
              **{k: v for k, v in columns.items() if v is not None and fmt == "table"}}
    return write_prepared(name, raw, data_dir, min_user=kcore, min_item=kcore, sources=[source],
                          training={"max_len": max_len, "dropout": dropout}, where=str(path),
                          extra={"imported": True})
