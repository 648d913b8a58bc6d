"""Raw-format readers (protocol §1.3): user/item tokens and int64 timestamps, in file order.

Only the three needed fields are parsed, with pyarrow's streaming CSV/JSON readers, so review text
never becomes Python objects (issue item 6). On a parse error the file is re-scanned line by line
(slow path, errors only) to name the first bad line.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from matrrec_cli.errors import MatrrecError

COLUMNS = ["user", "item", "timestamp"]


def _bad_line(lines: Iterable[bytes], ok: Callable[[bytes], bool]) -> int | None:
    for i, line in enumerate(lines, start=1):
        if line.strip() and not ok(line):
            return i
    return None


def _fail(where: str, lines: Callable[[], Iterable[bytes]], ok: Callable[[bytes], bool],
          exc: Exception) -> MatrrecError:
    try:
        n = _bad_line(lines(), ok)
    except (OSError, EOFError, zipfile.BadZipFile) as scan_exc:
        return MatrrecError(f"{where}: truncated or corrupt file ({scan_exc})")
    if n is None:
        return MatrrecError(f"{where}: cannot parse ({str(exc).splitlines()[0]})")
    return MatrrecError(f"{where}: line {n}: malformed line")


def _frame(user: pa.Array, item: pa.Array, ts: pa.Array) -> pd.DataFrame:
    return pd.DataFrame({"user": user.to_numpy(zero_copy_only=False),
                         "item": item.to_numpy(zero_copy_only=False),
                         "timestamp": ts.to_numpy(zero_copy_only=False).astype("int64")})


def _delimited_ok(sep: bytes, n: int, skip_header: bool = False) -> Callable[[bytes], bool]:
    def ok(line: bytes) -> bool:
        parts = line.rstrip(b"\r\n").split(sep)
        try:
            return len(parts) == n and float(parts[-1]) == int(float(parts[-1]))
        except ValueError:
            return False
    return ok


def _read_delimited(data: bytes, where: str, sep: bytes, names: list[str],
                    header: bool = False) -> pd.DataFrame:
    """Tab-separated user,item,rating,ts (ML-1M's '::' is rewritten to a tab first)."""
    if sep != b"\t":
        data = data.replace(sep, b"\t")
    types = {names[0]: pa.string(), names[1]: pa.string(), names[-1]: pa.float64()}
    try:
        t = pcsv.read_csv(io.BytesIO(data),
                          read_options=pcsv.ReadOptions(column_names=names,
                                                        skip_rows=1 if header else 0),
                          parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
                          convert_options=pcsv.ConvertOptions(column_types=types,
                                                              include_columns=[names[0], names[1],
                                                                               names[-1]]))
    except pa.ArrowInvalid as exc:
        lines = data.splitlines()[1 if header else 0:]
        n = _bad_line(lines, _delimited_ok(b"\t", len(names)))
        raise MatrrecError(f"{where}: line {(n or 0) + header}: malformed line"
                           if n else f"{where}: cannot parse ({exc})") from None
    if t.num_rows and any(t.column(c).null_count for c in (names[0], names[1], names[-1])):
        raise MatrrecError(f"{where}: missing fields (empty user, item or timestamp)")
    return _frame(t.column(names[0]), t.column(names[1]), t.column(names[-1]))


def _zip_member(path: Path, member_suffix: str) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if not names:
                raise MatrrecError(f"{path}: no {member_suffix} inside the zip")
            return zf.read(names[0]), f"{path}:{names[0]}"
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise MatrrecError(f"{path}: truncated or corrupt zip ({exc})") from None


def read_ml1m_zip(path: Path) -> pd.DataFrame:
    """ML-1M: ratings.dat in the zip, UserID::MovieID::Rating::Timestamp."""
    data, where = _zip_member(path, "ratings.dat")
    return _read_delimited(data, where, b"::", ["user", "item", "rating", "timestamp"])


def read_ml100k_zip(path: Path) -> pd.DataFrame:
    """ML-100K: u.data in the zip, tab-separated user item rating timestamp."""
    data, where = _zip_member(path, "/u.data")
    return _read_delimited(data, where, b"\t", ["user", "item", "rating", "timestamp"])


def read_inter(path: Path) -> pd.DataFrame:
    """RecBole atomic .inter: typed header (user_id:token item_id:token ... timestamp:float)."""
    data = Path(path).read_bytes()
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split("\t")
    base = [h.split(":")[0] for h in header]
    for need in ("user_id", "item_id", "timestamp"):
        if need not in base:
            raise MatrrecError(f"{path}: line 1: header lacks the field {need}")
    names = [{"user_id": "user", "item_id": "item"}.get(b, b) for b in base]
    names = [n if n in COLUMNS else f"_{i}" for i, n in enumerate(names)]
    # order columns so that user, item come first and timestamp last for _read_delimited
    order = [names.index("user"), names.index("item"), names.index("timestamp")]
    if order != sorted(order) or order[0] != 0 or order[1] != 1 or order[2] != len(names) - 1:
        df = pd.read_csv(path, sep="\t", dtype=str)
        df = df.rename(columns=dict(zip(header, names, strict=True)))
        return pd.DataFrame({"user": df["user"], "item": df["item"],
                             "timestamp": df["timestamp"].astype("float64").astype("int64")})
    return _read_delimited(data, str(path), b"\t", names, header=True)


AMAZON_SCHEMA = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()),
                           ("unixReviewTime", pa.int64())])


def _amazon_ok(line: bytes) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return all(k in obj for k in AMAZON_SCHEMA.names)


def read_amazon_json(path: Path) -> pd.DataFrame:
    """Amazon 2014 5-core reviews: JSON lines; only reviewerID, asin, unixReviewTime are parsed."""
    opts = pjson.ParseOptions(explicit_schema=AMAZON_SCHEMA, unexpected_field_behavior="ignore")
    compression = "gzip" if str(path).endswith(".gz") else None

    def lines() -> Iterable[bytes]:
        with (gzip.open(path, "rb") if compression else open(path, "rb")) as f:
            yield from f

    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            t = pjson.read_json(stream, parse_options=opts,
                                read_options=pjson.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise _fail(str(path), lines, _amazon_ok, exc) from None
    for col in AMAZON_SCHEMA.names:
        if t.column(col).null_count:
            n = _bad_line(lines(), _amazon_ok)
            raise MatrrecError(f"{path}: line {n}: missing field {col}")
    return _frame(t.column("reviewerID"), t.column("asin"), t.column("unixReviewTime"))


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "ml1m-zip": read_ml1m_zip, "ml100k-zip": read_ml100k_zip, "inter": read_inter,
    "amazon-json": read_amazon_json,
}


def read_raw(path: Path, fmt: str) -> pd.DataFrame:
    """Columns user (token), item (token), timestamp (int64), rows in file order."""
    return READERS[fmt](Path(path))
