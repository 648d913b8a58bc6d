"""Raw-format readers (protocol §1.3): user/item tokens and int64 timestamps, in file order.

Only the three needed fields are parsed, with pyarrow's streaming CSV/JSON readers, so review text
never becomes Python objects (issue item 6). Every value is checked before it becomes a key: ids
are non-empty text or integers, times whole numbers in the int64 range. A plain cast would turn
`inf` into an error deep in pandas and wrap 2^63 around to INT64_MIN (the newest item would become
the first of its history). On any failure the file is re-scanned line by line (slow path, errors
only) to name the first bad line and why.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import zipfile
import zlib
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from matrrec_cli.errors import MatrrecError

COLUMNS = ["user", "item", "timestamp"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TIME_HINT = "use whole numbers such as Unix seconds"
EMPTY = "is empty"
BOM = b"\xef\xbb\xbf"
# what reading a damaged compressed file raises, from Python's modules or from Arrow's
CORRUPT = (OSError, EOFError, zlib.error, zipfile.BadZipFile, lzma.LZMAError)


class BadValue(Exception):
    """A value that cannot be an id or a time key, at 0-based row `index` (None: the column as a
    whole, e.g. its type) of `column`."""

    def __init__(self, index: int | None, reason: str, column: str = "") -> None:
        super().__init__(reason)
        self.index, self.reason, self.column = index, reason, column

    def describe(self) -> str:
        if self.index is None:
            return f"column {self.column!r} {self.reason}"
        return f"empty {self.column}" if self.reason == EMPTY else f"{self.column} {self.reason}"


def parse_time(text: str) -> int:
    """One time value as an exact int: integers as written, other numbers only when whole, read
    as decimals (float64 would round above 2^53 and merge neighbouring times). ValueError says
    why not, e.g. "'inf' is not a finite number"."""
    s = text.strip()
    if not s:
        raise ValueError(EMPTY)
    try:
        value = int(s)
    except ValueError:
        try:
            d = Decimal(s)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a number") from None
        if not d.is_finite():
            raise ValueError(f"{text!r} is not a finite number") from None
        if d.adjusted() > 19:  # before int(): '1e999999999' would build a huge integer
            raise ValueError(f"{text!r} is outside the 64-bit integer range") from None
        if d != d.to_integral_value():
            raise ValueError(f"{text!r} is not a whole number") from None
        value = int(d)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{text!r} is outside the 64-bit integer range")
    return value


def _time_reason(exc: ValueError) -> str:
    return EMPTY if str(exc) == EMPTY else f"{exc}; {TIME_HINT}"


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):  # pandas categoricals arrive as dictionaries
        values = values.dictionary_decode()
    return values


def _first(mask: pa.Array) -> int | None:
    i = pc.index(mask, True).as_py()
    return None if i < 0 else i


def time_key(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow column as int64 time keys; BadValue at the first value that is not one."""
    values = _plain(values)
    t = values.type
    if (i := _first(pc.is_null(values))) is not None:
        raise BadValue(i, EMPTY)
    if pa.types.is_integer(t):
        limit = pa.scalar(INT64_MAX, pa.uint64())
        if pa.types.is_uint64(t) and (i := _first(pc.greater(values, limit))) is not None:
            raise BadValue(i, f"{values[i].as_py()} is outside the 64-bit integer range; "
                              f"{TIME_HINT}")
        return values.cast(pa.int64()).to_numpy()
    if pa.types.is_floating(t):
        f = values.cast(pa.float64()).to_numpy()
        ok = np.isfinite(f) & (f >= -(2.0**63)) & (f < 2.0**63)
        ok[ok] = f[ok] == np.floor(f[ok])
        if not ok.all():
            i = int(np.argmin(ok))
            try:
                parse_time(repr(float(f[i])))
            except ValueError as exc:
                raise BadValue(i, _time_reason(exc)) from None
        return f.astype(np.int64)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return values.cast(pa.int64()).to_numpy()  # in the column's own unit: order is kept
    if pa.types.is_date(t):
        return values.cast(pa.int32() if pa.types.is_date32(t) else pa.int64()) \
            .cast(pa.int64()).to_numpy()
    if pa.types.is_decimal(t):  # exact as text: the string rules below decide
        values, t = values.cast(pa.string()), pa.string()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # plain integers, or whole numbers with a zero fraction ('881250949.0', as in RecBole's
        # timestamp:float columns): vectorised; anything else exact per value (slow path)
        for strip in (False, True):
            text = pc.replace_substring_regex(values, r"^(-?\d+)\.0*$", r"\1") if strip \
                else values
            try:
                return pc.cast(text, pa.int64()).to_numpy()
            except pa.ArrowInvalid:
                pass
        out = np.empty(len(values), np.int64)
        for i, text in enumerate(values.to_pylist()):
            try:
                out[i] = parse_time(text)
            except ValueError as exc:
                raise BadValue(i, _time_reason(exc)) from None
        return out
    raise BadValue(None, f"has type {t}; {TIME_HINT}")


def id_tokens(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow column as id tokens (object array of str): text as is, integers in decimal."""
    values = _plain(values)
    t = values.type
    if pa.types.is_integer(t):
        values = values.cast(pa.string())
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        try:
            values = values.cast(pa.string())
        except pa.ArrowInvalid:
            raise BadValue(None, "is not UTF-8 text; convert it to UTF-8") from None
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise BadValue(None, f"has type {t}; ids must be text or integers (convert the column)")
    if (i := _first(pc.is_null(values))) is not None or \
            (i := _first(pc.equal(values, ""))) is not None:
        raise BadValue(i, EMPTY)
    return values.to_numpy(zero_copy_only=False)


def to_frame(user: pa.Array | pa.ChunkedArray, item: pa.Array | pa.ChunkedArray,
             timestamp: pa.Array | pa.ChunkedArray,
             names: tuple[str, str, str] = ("user", "item", "timestamp")) -> pd.DataFrame:
    """The raw frame from three Arrow columns, each checked; a BadValue names the column (by
    `names`, as the file calls it) and the earliest bad row over all three."""
    out, bad = {}, []
    for key, values, convert, name in zip(COLUMNS, (user, item, timestamp),
                                          (id_tokens, id_tokens, time_key), names, strict=True):
        try:
            out[key] = convert(values)
        except BadValue as exc:
            exc.column = name
            bad.append(exc)
    if bad:
        raise min(bad, key=lambda e: -1 if e.index is None else e.index)
    return pd.DataFrame(out)


def binary_file(where: str, head: bytes) -> MatrrecError | None:
    """The error for a file whose first bytes show it is not UTF-8 text (None: they do not)."""
    if head.startswith(b"\x1f\x8b"):
        return MatrrecError(f"{where}: the file is gzip-compressed; decompress it first (gunzip)")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return MatrrecError(f"{where}: the file is UTF-16 text; save it as UTF-8")
    if head.startswith(b"PAR1"):
        return MatrrecError(f"{where}: this is a Parquet file; name it .parquet and use "
                            "--format table")
    if head.startswith(b"PK\x03\x04"):
        return MatrrecError(f"{where}: the file is a zip archive; extract it first")
    return None


def not_utf8(where: str, line: int | None, head: bytes) -> MatrrecError:
    """The error for text that does not decode: what the file probably is and what to do."""
    if binary := binary_file(where, head):
        return binary
    at = f"{where}: line {line}" if line else where
    return MatrrecError(f"{at}: not UTF-8 text; convert the file to UTF-8 "
                        "(e.g. iconv -f latin1 -t utf-8)")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _locate(where: str, lines: Callable[[], Iterable[bytes]],
            check: Callable[[bytes], str | None], exc: Exception,
            first: int = 1) -> MatrrecError:
    """The error for a file that failed to read: the first line `check` rejects (with why), else
    a truncated/corrupt file, an empty one, or what the reader said."""
    seen = 0
    try:
        for n, line in enumerate(lines(), start=first):
            if not line.strip():
                continue
            seen += 1
            if (reason := check(line)) is not None:
                return MatrrecError(f"{where}: line {n}: {reason}")
    except CORRUPT as scan_exc:
        return MatrrecError(f"{where}: truncated or corrupt file ({first_line(scan_exc)}); "
                            "fetch it again")
    if not seen:
        return MatrrecError(f"{where}: no interactions in the file")
    if isinstance(exc, BadValue):
        at = "" if exc.index is None else f"row {exc.index + 1}: "
        return MatrrecError(f"{where}: {at}{exc.describe()}")
    return MatrrecError(f"{where}: cannot parse ({first_line(exc)})")


def _delimited_check(n: int, idx: list[int], sep_name: str,
                     labels: tuple[str, str, str]) -> Callable[[bytes], str | None]:
    """Why one delimited line is bad (None: it is fine): the same rules as the fast path."""
    def check(line: bytes) -> str | None:
        parts = line.rstrip(b"\r\n").split(b"\t")
        if len(parts) != n:
            return f"malformed line (expected {n} {sep_name}-separated fields, got {len(parts)})"
        for key, column, i in zip(COLUMNS, labels, idx, strict=True):
            try:
                text = parts[i].decode("utf-8")
            except UnicodeDecodeError:
                return f"{column} is not UTF-8 text; convert the file to UTF-8"
            if key != "timestamp" and not text:
                return f"empty {column}"
            if key == "timestamp":
                try:
                    parse_time(text)
                except ValueError as exc:
                    reason = _time_reason(exc)
                    return f"empty {column}" if reason == EMPTY else f"{column} {reason}"
        return None
    return check


def _read_delimited(data: bytes, where: str, names: list[str], *, header: bool = False,
                    sep_name: str = "tab",
                    labels: tuple[str, str, str] = ("user", "item", "timestamp")) -> pd.DataFrame:
    """Tab-separated fields called `names` (ML-1M's '::' is rewritten to a tab first); user,
    item and timestamp are read, the other fields skipped."""
    skip = int(header)
    check = _delimited_check(len(names), [names.index(c) for c in COLUMNS], sep_name, labels)
    try:
        t = pcsv.read_csv(io.BytesIO(data),
                          read_options=pcsv.ReadOptions(column_names=names, skip_rows=skip),
                          parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
                          convert_options=pcsv.ConvertOptions(
                              column_types=dict.fromkeys(COLUMNS, pa.string()),
                              include_columns=COLUMNS))
        return to_frame(t.column("user"), t.column("item"), t.column("timestamp"), labels)
    except (pa.ArrowException, BadValue) as exc:
        raise _locate(where, lambda: data.splitlines()[skip:], check, exc, 1 + skip) from None


def _zip_member(path: Path, member_suffix: str) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if not names:
                raise MatrrecError(f"{path}: no {member_suffix} inside the zip; is it the right "
                                   "archive?")
            return zf.read(names[0]), f"{path}:{names[0]}"
    except CORRUPT as exc:
        raise MatrrecError(f"{path}: truncated or corrupt zip ({first_line(exc)}); fetch it "
                           "again") from None


def read_ml1m_zip(path: Path) -> pd.DataFrame:
    """ML-1M: ratings.dat in the zip, UserID::MovieID::Rating::Timestamp."""
    data, where = _zip_member(path, "ratings.dat")
    return _read_delimited(data.replace(b"::", b"\t"), where,
                           ["user", "item", "rating", "timestamp"], sep_name="'::'")


def read_ml100k_zip(path: Path) -> pd.DataFrame:
    """ML-100K: u.data in the zip, tab-separated user item rating timestamp."""
    data, where = _zip_member(path, "/u.data")
    return _read_delimited(data, where, ["user", "item", "rating", "timestamp"])


INTER_EXAMPLE = "user_id:token<TAB>item_id:token<TAB>timestamp:float"


def read_inter(path: Path) -> pd.DataFrame:
    """RecBole atomic .inter: typed header (user_id:token item_id:token ... timestamp:float), the
    three fields in any order."""
    data = Path(path).read_bytes()
    data = data.removeprefix(BOM)  # else the first field would be '\ufeffuser_id'
    if not data.strip():
        raise MatrrecError(f"{path}: the file is empty; an .inter file starts with a header "
                           f"such as {INTER_EXAMPLE}")
    try:
        first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8(str(path), 1, data[:4]) from None
    base = [h.split(":")[0].strip() for h in first.split("\t")]
    for need in ("user_id", "item_id", "timestamp"):
        if need not in base:
            sep = "" if "\t" in first else "; the header has no tab: fields must be tab-separated"
            raise MatrrecError(f"{path}: line 1: header lacks the field {need} (expected "
                               f"{INTER_EXAMPLE}){sep}")
        if base.count(need) > 1:
            raise MatrrecError(f"{path}: line 1: field {need} appears {base.count(need)} times "
                               "in the header; keep one")
    key = {"user_id": "user", "item_id": "item", "timestamp": "timestamp"}
    names = [key.get(b, f"_{i}") for i, b in enumerate(base)]
    return _read_delimited(data, str(path), names, header=True,
                           labels=("user_id", "item_id", "timestamp"))


AMAZON_SCHEMA = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()),
                           ("unixReviewTime", pa.int64())])


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    for k in AMAZON_SCHEMA.names:
        if keys.count(k) > 1:
            raise _DuplicateKey(k)
    return dict(pairs)


def _amazon_check(line: bytes) -> str | None:
    """Why one review line is bad (None: it is fine), for the slow path."""
    try:
        obj = json.loads(line, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        return "not UTF-8 text; the dump is damaged, fetch it again"
    except _DuplicateKey as exc:
        return f"field {exc} appears twice"
    except ValueError as exc:
        return f"malformed line ({getattr(exc, 'msg', exc)})"
    if not isinstance(obj, dict):
        return "malformed line (not a JSON object)"
    for key in AMAZON_SCHEMA.names:
        if key not in obj:
            return f"missing field {key}"
        value = obj[key]
        if value is None:
            return f"field {key} is null"
        if key == "unixReviewTime":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"field {key} is {json.dumps(value)[:40]}, not an integer"
            if not INT64_MIN <= value <= INT64_MAX:
                return f"field {key} is outside the 64-bit integer range"
        elif not isinstance(value, str):
            return f"field {key} is {json.dumps(value)[:40]}, not a string"
        elif not value:
            return f"field {key} is empty"
    return None


def read_amazon_json(path: Path) -> pd.DataFrame:
    """Amazon 2014 5-core reviews: JSON lines, gzip-compressed or not (told by the first bytes,
    not the name); only reviewerID, asin, unixReviewTime are parsed."""
    opts = pjson.ParseOptions(explicit_schema=AMAZON_SCHEMA, unexpected_field_behavior="ignore")
    with open(path, "rb") as f:
        compression = "gzip" if f.read(2) == b"\x1f\x8b" else None

    def lines() -> Iterable[bytes]:
        if compression:
            with gzip.open(path, "rb") as f:
                # a damaged deflate stream can inflate to plausible garbage: the CRC at the end
                # tells, so check it before blaming a line
                while f.read(1 << 24):
                    pass
        with (gzip.open(path, "rb") if compression else open(path, "rb")) as f:
            yield from f

    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            t = pjson.read_json(stream, parse_options=opts,
                                read_options=pjson.ReadOptions(block_size=16 << 20))
        return to_frame(*(t.column(c) for c in AMAZON_SCHEMA.names),
                        names=tuple(AMAZON_SCHEMA.names))
    # Arrow raises UnicodeDecodeError for bad UTF-8, OSError/EOFError for a damaged gzip
    except (pa.ArrowException, ValueError, BadValue, *CORRUPT) as exc:
        raise _locate(str(path), lines, _amazon_check, exc) from None


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "ml1m-zip": read_ml1m_zip, "ml100k-zip": read_ml100k_zip, "inter": read_inter,
    "amazon-json": read_amazon_json,
}


def read_raw(path: Path, fmt: str) -> pd.DataFrame:
    """Columns user (token), item (token), timestamp (int64), rows in file order."""
    try:
        df = READERS[fmt](Path(path))
    except OSError as exc:  # unreadable (permissions, a directory); damage is reported above
        raise MatrrecError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if df.empty:
        raise MatrrecError(f"{path}: no interactions in the file")
    return df
