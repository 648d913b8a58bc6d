"""Bad `matrrec import` (and `download --from-file`) inputs and options: one line on stderr that
names the file or option and says what is wrong, a non-zero exit status, no traceback, and no
Parquet or meta.json written."""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import data_dumps as dumps
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matrrec_cli.cli import main

Writer = Callable[[Path], None]
HEAD = "user,item,timestamp\n"
ROWS = "u1,a,1\nu1,b,2\n"
INTER_HEAD = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
INTER_ROW = "u1\ta\t4\t1\n"


def _bytes(data: bytes | str) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return write


def _parquet(**override: pa.Array) -> Writer:
    cols = {"user": pa.array(["u1", "u2"]), "item": pa.array(["a", "b"]),
            "timestamp": pa.array([1, 2], pa.int64())}
    cols.update(override)

    def write(path: Path) -> None:
        pq.write_table(pa.table(cols), path)
    return write


def _parquet_table(table: pa.Table) -> Writer:
    def write(path: Path) -> None:
        pq.write_table(table, path)
    return write


def _cut_parquet(path: Path) -> None:
    _parquet()(path)
    path.write_bytes(path.read_bytes()[:-30])  # footer gone, as after an interrupted copy


def _flip_middle(data: bytes) -> bytes:
    body = bytearray(data)
    body[len(body) // 2] ^= 0xFF  # damage inside the deflate stream
    return bytes(body)


# (id, file name, writer, --format, extra args, what the message says after the file name)
CASES: list[tuple[str, str, Writer, str, list[str], str]] = [
    # time values in a CSV table
    ("csv-inf", "t.csv", _bytes(HEAD + ROWS + "u2,a,inf\n"), "table", [],
     "line 4: timestamp 'inf' is not a finite number; use whole numbers such as Unix seconds"),
    ("csv-nan", "t.csv", _bytes(HEAD + ROWS + "u2,a,nan\n"), "table", [],
     "line 4: timestamp 'nan' is not a finite number"),
    ("csv-2^63", "t.csv", _bytes(HEAD + ROWS + "u2,a,9223372036854775808\n"), "table", [],
     "line 4: timestamp '9223372036854775808' is outside the 64-bit integer range"),
    ("csv-1e19", "t.csv", _bytes(HEAD + ROWS + "u2,a,1e19\n"), "table", [],
     "line 4: timestamp '1e19' is outside the 64-bit integer range"),
    ("csv-below-int64", "t.csv", _bytes(HEAD + ROWS + "u2,a,-9223372036854775809\n"), "table",
     [], "line 4: timestamp '-9223372036854775809' is outside the 64-bit integer range"),
    ("csv-fraction", "t.csv", _bytes(HEAD + ROWS + "u2,a,1.5\n"), "table", [],
     "line 4: timestamp '1.5' is not a whole number"),
    ("csv-empty-time", "t.csv", _bytes(HEAD + ROWS + "u2,a,\n"), "table", [],
     "line 4: empty timestamp"),
    ("csv-short-row", "t.csv", _bytes(HEAD + ROWS + "u2,a\n"), "table", [],
     "line 4: empty timestamp"),
    ("csv-long-row", "t.csv", _bytes(HEAD + ROWS + "u2,a,3,4\n"), "table", [],
     "line 4: 4 fields where the header has 3; quote values that contain the separator ','"),
    ("csv-date-time", "t.csv", _bytes(HEAD + ROWS + "u2,a,2020-01-01\n"), "table", [],
     "line 4: timestamp '2020-01-01' is not a number"),
    ("csv-mixed-time", "t.csv", _bytes(HEAD + "u1,a,1\nu1,b,1.0e3\nu2,a,x7\n"), "table", [],
     "line 4: timestamp 'x7' is not a number"),
    ("csv-blank-lines-counted", "t.csv", _bytes(HEAD + "\nu1,a,1\n\n\nu2,,3\n"), "table", [],
     "line 6: empty item"),
    ("csv-crlf", "t.csv", _bytes((HEAD + ROWS + "u2,a,inf\n").replace("\n", "\r\n")), "table",
     [], "line 4: timestamp 'inf'"),
    # CSV structure
    ("csv-empty-file", "t.csv", _bytes(""), "table", [],
     "the file is empty; a table needs a header line"),
    ("csv-header-only", "t.csv", _bytes(HEAD), "table", [], "no interactions in the file"),
    ("csv-wrong-sep", "t.csv", _bytes(HEAD.replace(",", "\t") + ROWS.replace(",", "\t")),
     "table", [], "the header has a single column, so the separator is probably not ','"),
    ("csv-dup-column", "t.csv", _bytes("user,item,user,timestamp\nu1,a,u9,1\n"), "table", [],
     "line 1: column 'user' appears 2 times; rename the copies or pick another column with "
     "--user-col"),
    ("csv-no-user-col", "t.csv", _bytes(HEAD + ROWS), "table", ["--user-col", "uid"],
     "no column(s) uid; the file has 'user', 'item', 'timestamp'"),
    ("csv-no-time-col", "t.csv", _bytes(HEAD + ROWS), "table", ["--time-col", "ts"],
     "no column(s) ts;"),
    ("tsv-no-item-col", "t.tsv", _bytes("user\tts\nu1\t1\n"), "table", ["--time-col", "ts"],
     "no column(s) item; the file has 'user', 'ts'"),
    # encodings and compression of a CSV table
    ("csv-not-utf8", "t.csv", _bytes(HEAD.encode() + b"u1,a,1\nu\xff,b,2\n"), "table", [],
     "line 3: not UTF-8 text; convert the file to UTF-8"),
    ("csv-latin1-header", "t.csv", _bytes(b"us\xe9r,item,timestamp\nu1,a,1\n"), "table", [],
     "line 1: not UTF-8 text"),
    ("csv-utf16", "t.csv", _bytes((HEAD + ROWS).encode("utf-16")), "table", [],
     "the file is UTF-16 text; save it as UTF-8"),
    ("csv-is-gzip", "t.csv", _bytes(gzip.compress((HEAD + ROWS).encode())), "table", [],
     "the file is gzip-compressed; decompress it first"),
    ("csv-gz-truncated", "t.csv.gz", _bytes(gzip.compress((HEAD + ROWS * 500).encode())[:60]),
     "table", [], "truncated or corrupt compressed file"),
    ("csv-gz-corrupt", "t.csv.gz", _bytes(_flip_middle(gzip.compress((HEAD + ROWS * 500).encode(),
                                                                     mtime=0))),
     "table", [], "truncated or corrupt compressed file"),
    ("csv-gz-not-utf8", "t.csv.gz", _bytes(gzip.compress(HEAD.encode() + b"u\xff,a,1\n")),
     "table", [], "line 2: not UTF-8 text"),
    # Parquet tables: column types, values, damage
    ("pq-list-user", "t.parquet", _parquet(user=pa.array([[1, 2], [3]])), "table", [],
     "column 'user' has type list<element: int64>; ids must be text or integers"),
    ("pq-struct-item", "t.parquet", _parquet(item=pa.array([{"x": 1}, {"x": 2}])), "table", [],
     "column 'item' has type struct<x: int64>"),
    ("pq-float-item", "t.parquet", _parquet(item=pa.array([1.5, 2.5])), "table", [],
     "column 'item' has type double"),
    ("pq-float-inf-time", "t.parquet", _parquet(timestamp=pa.array([1.0, float("inf")])),
     "table", [], "row 2: timestamp 'inf' is not a finite number"),
    ("pq-float-nan-time", "t.parquet", _parquet(timestamp=pa.array([1.0, float("nan")])),
     "table", [], "row 2: timestamp 'nan' is not a finite number"),
    ("pq-float-1e19-time", "t.parquet", _parquet(timestamp=pa.array([1.0, 1e19])), "table", [],
     "row 2: timestamp '1e+19' is outside the 64-bit integer range"),
    ("pq-float-2^63-time", "t.parquet", _parquet(timestamp=pa.array([1.0, 2.0**63])), "table",
     [], "row 2: timestamp '9.223372036854776e+18' is outside the 64-bit integer range"),
    ("pq-float-fraction-time", "t.parquet", _parquet(timestamp=pa.array([1.0, 1.5])), "table",
     [], "row 2: timestamp '1.5' is not a whole number"),
    ("pq-uint64-time", "t.parquet", _parquet(timestamp=pa.array([1, 2**63], pa.uint64())),
     "table", [], "row 2: timestamp 9223372036854775808 is outside the 64-bit integer range"),
    ("pq-null-time", "t.parquet", _parquet(timestamp=pa.array([1, None], pa.int64())), "table",
     [], "row 2: empty timestamp"),
    ("pq-bool-time", "t.parquet", _parquet(timestamp=pa.array([True, False])), "table", [],
     "column 'timestamp' has type bool; use whole numbers such as Unix seconds"),
    ("pq-decimal-fraction-time", "t.parquet",
     _parquet(timestamp=pa.array([Decimal("1.0"), Decimal("2.5")], pa.decimal128(5, 1))),
     "table", [], "row 2: timestamp '2.5' is not a whole number"),
    ("pq-text-time", "t.parquet", _parquet(timestamp=pa.array(["1", "soon"])), "table", [],
     "row 2: timestamp 'soon' is not a number"),
    ("pq-null-user", "t.parquet", _parquet(user=pa.array(["u1", None])), "table", [],
     "row 2: empty user"),
    ("pq-empty-item", "t.parquet", _parquet(item=pa.array(["a", ""])), "table", [],
     "row 2: empty item"),
    ("pq-dup-column", "t.parquet", _parquet_table(pa.Table.from_arrays(
        [pa.array(["u1"]), pa.array(["a"]), pa.array(["u2"]), pa.array([1])],
        names=["user", "item", "user", "timestamp"])), "table", [],
     "schema: column 'user' appears 2 times"),
    ("pq-no-item-col", "t.parquet", _parquet_table(pa.table({"user": ["u"], "timestamp": [1]})),
     "table", [], "no column(s) item; the file has 'user', 'timestamp'"),
    ("pq-truncated", "t.parquet", _cut_parquet, "table", [],
     "not a readable Parquet file (Parquet magic bytes not found"),
    ("pq-is-csv", "t.parquet", _bytes(HEAD + ROWS), "table", [], "not a readable Parquet file"),
    ("pq-empty-file", "t.parquet", _bytes(b""), "table", [],
     "not a readable Parquet file (Parquet file size is 0 bytes)"),
    ("pq-no-rows", "t.parquet", _parquet_table(pa.table({"user": pa.array([], pa.string()),
                                                         "item": pa.array([], pa.string()),
                                                         "timestamp": pa.array([], pa.int64())})),
     "table", [], "no interactions in the file"),
    # RecBole .inter
    ("inter-reordered-bad", "t.inter",
     _bytes("timestamp:float\tuser_id:token\titem_id:token\n1\tu1\ta\nsoon\tu1\tb\n"), "inter",
     [], "line 3: timestamp 'soon' is not a number"),
    ("inter-inf", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t4\tinf\n"), "inter", [],
     "line 3: timestamp 'inf' is not a finite number"),
    ("inter-nan", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t4\tnan\n"), "inter", [],
     "line 3: timestamp 'nan' is not a finite number"),
    ("inter-2^63", "t.inter",
     _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t4\t9223372036854775808\n"), "inter", [],
     "line 3: timestamp '9223372036854775808' is outside the 64-bit integer range"),
    ("inter-1e19", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t4\t1e19\n"), "inter", [],
     "line 3: timestamp '1e19' is outside the 64-bit integer range"),
    ("inter-negative-fraction", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t4\t-2.5\n"),
     "inter", [], "line 3: timestamp '-2.5' is not a whole number"),
    ("inter-empty-user", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "\tb\t4\t2\n"), "inter", [],
     "line 3: empty user_id"),
    ("inter-short-line", "t.inter", _bytes(INTER_HEAD + INTER_ROW + "u1\tb\t2\n"), "inter", [],
     "line 3: malformed line (expected 4 tab-separated fields, got 3)"),
    ("inter-not-utf8", "t.inter",
     _bytes(INTER_HEAD.encode() + INTER_ROW.encode() + b"u\xff\tb\t4\t2\n"), "inter", [],
     "line 3: user_id is not UTF-8 text"),
    ("inter-latin1-header", "t.inter", _bytes(b"\xe9" + INTER_HEAD.encode()), "inter", [],
     "line 1: not UTF-8 text"),
    ("inter-empty-file", "t.inter", _bytes(""), "inter", [],
     "the file is empty; an .inter file starts with a header"),
    ("inter-header-only", "t.inter", _bytes(INTER_HEAD), "inter", [],
     "no interactions in the file"),
    ("inter-comma-sep", "t.inter", _bytes(INTER_HEAD.replace("\t", ",") + "u1,a,4,1\n"),
     "inter", [], "line 1: header lacks the field item_id"),
    ("inter-dup-field", "t.inter",
     _bytes("user_id:token\titem_id:token\ttimestamp:float\ttimestamp:float\nu1\ta\t1\t2\n"),
     "inter", [], "line 1: field timestamp appears 2 times in the header; keep one"),
    ("inter-gzip", "t.inter", _bytes(gzip.compress(INTER_HEAD.encode())), "inter", [],
     "the file is gzip-compressed; decompress it first"),
    # seq and pairs
    ("seq-not-utf8", "s.txt", _bytes(b"u1 a b\nu2 \xe9t\xe9 b\n"), "seq", [],
     "line 2: not UTF-8 text"),
    ("pairs-not-utf8", "p.txt", _bytes(b"u1 a\nu1 b\nu\xff c\n"), "pairs", [],
     "line 3: not UTF-8 text"),
    ("seq-utf16", "s.txt", _bytes("u1 a b\n".encode("utf-16")), "seq", [],
     "the file is UTF-16 text"),
    ("seq-commas", "s.txt", _bytes("u1,a,b\n"), "seq", [],
     "line 1: expected `user item1 item2 ...`, got only 'u1,a,b'; fields are separated by "
     "spaces or tabs"),
    ("pairs-commas", "p.txt", _bytes("u1 a\nu1,b\n"), "pairs", [],
     "line 2: expected `user item`, got 1 fields; fields are separated by spaces or tabs"),
    ("seq-empty-file", "s.txt", _bytes(""), "seq", [], "no interactions in the file"),
    ("pairs-blank-lines", "p.txt", _bytes("\n\n  \n"), "pairs", [],
     "no interactions in the file"),
    ("seq-gzip", "s.txt.gz", _bytes(gzip.compress(b"u1 a b\n")), "seq", [],
     "the file is gzip-compressed"),
    ("pairs-parquet", "p.txt", _parquet(), "pairs", [], "this is a Parquet file; name it "
     ".parquet and use --format table"),
]


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("matrrec: error: "), err
    return lines[0]


def _nothing_written(root: Path, name: str) -> None:
    assert not (root / name / "interactions.parquet").exists()
    assert not (root / name / "meta.json").exists()


@pytest.mark.parametrize(("file", "write", "fmt", "extra", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file_fails_with_one_line(tmp_path: Path, capsys, file: str, write: Writer,
                                      fmt: str, extra: list[str], message: str) -> None:
    path = tmp_path / file
    write(path)
    root = tmp_path / "data"
    code = _run(["import", "bad", "--from-file", str(path), "--format", fmt, "--kcore", "0",
                 "--data-dir", str(root), *extra])
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith(f"matrrec: error: {path}: "), line
    assert message in line, line
    _nothing_written(root, "bad")


def test_unreadable_file_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # root ignores permissions, so the refusal is simulated where the reader opens the file
    path = tmp_path / "s.txt"
    path.write_text("u1 a b\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", refuse)
    root = tmp_path / "data"
    assert _run(["import", "bad", "--from-file", str(path), "--format", "seq", "--kcore", "0",
                 "--data-dir", str(root)]) == 1
    assert _one_line(capsys) == f"matrrec: error: {path}: cannot read the file (Permission denied)"
    _nothing_written(root, "bad")


@pytest.mark.parametrize(("what", "message"), [
    ("missing", "no such file"), ("directory", "is a directory; give the file inside it")])
def test_from_file_must_be_a_file(tmp_path: Path, capsys, what: str, message: str) -> None:
    path = tmp_path / "in"
    if what == "directory":
        path.mkdir()
    root = tmp_path / "data"
    assert _run(["import", "bad", "--from-file", str(path), "--format", "seq",
                 "--data-dir", str(root)]) == 1
    assert _one_line(capsys) == f"matrrec: error: --from-file {path}: {message}"
    _nothing_written(root, "bad")


# Options are checked before the file is touched: the file here does not even exist.
@pytest.mark.parametrize(("args", "message"), [
    (["--dropout", "5", "--max-len", "-3"], "--max-len must be 1 or more, not -3"),
    (["--dropout", "5"], "--dropout must be at least 0 and below 1, not 5.0"),
    (["--dropout", "1"], "--dropout must be at least 0 and below 1, not 1.0"),
    (["--dropout", "-0.1"], "--dropout must be at least 0 and below 1, not -0.1"),
    (["--dropout", "nan"], "--dropout must be at least 0 and below 1, not nan"),
    (["--max-len", "0"], "--max-len must be 1 or more, not 0"),
    (["--kcore", "-1"], "--kcore must be 0 (keep all) or more, not -1"),
    (["--format", "table", "--user-col", "id", "--item-col", "id"],
     "--user-col and --item-col both name the column 'id'"),
    (["--format", "table", "--time-col", "item"],
     "--item-col and --time-col both name the column 'item'"),
    (["--format", "table", "--user-col", ""], "--user-col must name a column, not ''"),
    (["--format", "table", "--sep", ""], "--sep must be the field separator"),
])
def test_bad_options_exit_2_before_reading(tmp_path: Path, capsys, args: list[str],
                                           message: str) -> None:
    root = tmp_path / "data"
    fmt = [] if "--format" in args else ["--format", "seq"]
    assert _run(["import", "bad", "--from-file", str(tmp_path / "absent.csv"), *fmt, *args,
                 "--data-dir", str(root)]) == 2
    assert message in _one_line(capsys)
    _nothing_written(root, "bad")


# ---- the raw-dump readers behind `matrrec download --from-file` (amazon-json, ml zips, inter)

ROWS_RAW = dumps.interactions(n=120)
REVIEWS = dumps.amazon_lines(ROWS_RAW).splitlines(keepends=True)
REVIEW = '{{"reviewerID": {}, "asin": {}, "unixReviewTime": {}}}\n'


def _reviews(line6: str | bytes) -> bytes:
    lines = list(REVIEWS)
    lines[5] = line6.encode() if isinstance(line6, str) else line6
    return b"".join(lines)


def _zip(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)
    return buf.getvalue()


RATINGS = "".join(f"{u}::{i}::4::{t}\n" for u, i, t in ROWS_RAW).encode()

# (id, file name, --format of the source, bytes, what the message says after the file name)
RAW_CASES: list[tuple[str, str, str, bytes, str]] = [
    ("amazon-bad-utf8", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(b'{"reviewerID": "A\xff", "asin": "B1", "unixReviewTime": 5}\n')),
     "line 6: not UTF-8 text"),
    ("amazon-corrupt-deflate", "r.json.gz", "amazon-json",
     _flip_middle(gzip.compress(b"".join(REVIEWS), mtime=0)), "truncated or corrupt file"),
    ("amazon-truncated", "r.json.gz", "amazon-json", gzip.compress(b"".join(REVIEWS))[:300],
     "truncated or corrupt file"),
    ("amazon-null-field", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format("null", '"B1"', 5))), "line 6: field reviewerID is null"),
    ("amazon-missing-field", "r.json.gz", "amazon-json",
     gzip.compress(_reviews('{"reviewerID": "A", "unixReviewTime": 5}\n')),
     "line 6: missing field asin"),
    ("amazon-missing-time", "r.json", "amazon-json",
     _reviews('{"reviewerID": "A", "asin": "B"}\n'), "line 6: missing field unixReviewTime"),
    ("amazon-number-id", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format(2**70, '"B1"', 5))),
     f"line 6: field reviewerID is {2**70}, not a string"),
    ("amazon-huge-time", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format('"A"', '"B1"', 2**63))),
     "line 6: field unixReviewTime is outside the 64-bit integer range"),
    ("amazon-float-time", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format('"A"', '"B1"', 1.5))),
     "line 6: field unixReviewTime is 1.5, not an integer"),
    ("amazon-text-time", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format('"A"', '"B1"', '"5"'))),
     'line 6: field unixReviewTime is "5", not an integer'),
    ("amazon-empty-id", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(REVIEW.format('""', '"B1"', 5))), "line 6: field reviewerID is empty"),
    ("amazon-duplicate-key", "r.json.gz", "amazon-json",
     gzip.compress(_reviews(
         '{"reviewerID": "A", "reviewerID": "C", "asin": "B1", "unixReviewTime": 5}\n')),
     "line 6: field reviewerID appears twice"),
    ("amazon-not-object", "r.json.gz", "amazon-json", gzip.compress(_reviews("[1, 2]\n")),
     "line 6: malformed line (not a JSON object)"),
    ("amazon-empty", "r.json.gz", "amazon-json", gzip.compress(b""),
     "no interactions in the file"),
    ("ml1m-corrupt-deflate", "ml-1m.zip", "ml1m-zip",
     _flip_middle(_zip("ml-1m/ratings.dat", RATINGS)), "truncated or corrupt zip"),
    ("ml1m-inf", "ml-1m.zip", "ml1m-zip", _zip("ml-1m/ratings.dat", RATINGS + b"1::2::4::inf\n"),
     "line 121: timestamp 'inf' is not a finite number"),
    ("ml1m-2^63", "ml-1m.zip", "ml1m-zip",
     _zip("ml-1m/ratings.dat", RATINGS + b"1::2::4::9223372036854775808\n"),
     "line 121: timestamp '9223372036854775808' is outside the 64-bit integer range"),
    ("ml1m-not-utf8", "ml-1m.zip", "ml1m-zip",
     _zip("ml-1m/ratings.dat", RATINGS + b"1\xff::2::4::5\n"), "line 121: user is not UTF-8"),
    ("ml1m-few-fields", "ml-1m.zip", "ml1m-zip", _zip("ml-1m/ratings.dat", RATINGS + b"1::2\n"),
     "line 121: malformed line (expected 4 '::'-separated fields, got 2)"),
    ("ml1m-empty-zip", "ml-1m.zip", "ml1m-zip", b"", "truncated or corrupt zip"),
    ("ml100k-wrong-archive", "ml-100k.zip", "ml100k-zip", _zip("x/y.txt", b"a"),
     "no /u.data inside the zip"),
    ("inter-reordered-bad", "t.inter", "inter",
     b"timestamp:float\tuser_id:token\titem_id:token\n1\tu1\ta\nsoon\tu1\tb\n",
     "line 3: timestamp 'soon' is not a number"),
]


@pytest.fixture
def tiny_registry(tmp_path: Path, monkeypatch) -> Callable[[str, str], None]:
    """A registry with one dataset `tiny` whose single source has no checksum."""
    def register(file: str, fmt: str) -> None:
        toml = tmp_path / "datasets.toml"
        toml.write_text('[tiny]\ntitle = "tiny"\nkcore = { user = 0, item = 0 }\n'
                        "training = { max_len = 50, dropout = 0.4 }\n[[tiny.sources]]\n"
                        f'kind = "url"\nurl = "http://127.0.0.1:9/{file}"\nfile = "{file}"\n'
                        f'format = "{fmt}"\n')
        monkeypatch.setenv("MATRREC_DATASETS_TOML", str(toml))
    return register


@pytest.mark.parametrize(("file", "fmt", "body", "message"), [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_bad_raw_dump_fails_with_one_line(tmp_path: Path, capsys, tiny_registry, file: str,
                                          fmt: str, body: bytes, message: str) -> None:
    tiny_registry(file, fmt)
    path = tmp_path / file
    path.write_bytes(body)
    root = tmp_path / "data"
    assert _run(["download", "tiny", "--from-file", str(path), "--data-dir", str(root)]) == 1
    line = _one_line(capsys)
    assert file in line, line
    assert message in line, line
    _nothing_written(root, "tiny")


def test_amazon_reader_names_the_line_of_a_null_field_directly(tmp_path: Path) -> None:
    # the library call, as `prepare` makes it: the error is a MatrrecError, never 'line None'
    from matrrec_cli.data.readers import read_raw
    from matrrec_cli.errors import MatrrecError

    path = tmp_path / "r.json.gz"
    path.write_bytes(gzip.compress(_reviews(REVIEW.format('"A"', "null", 5))))
    with pytest.raises(MatrrecError, match=r"r\.json\.gz: line 6: field asin is null$"):
        read_raw(path, "amazon-json")

