"""Inputs next to the rejected ones that must be imported, and imported right: negative and
very large whole-number times kept exactly, a byte-order mark, CRLF, .inter columns in any order,
Parquet integer/dictionary/timestamp columns, gzip tables, separators as typed in a shell."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import data_dumps as dumps
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matrrec_cli.cli import main
from matrrec_cli.data.prepared import load_interactions

BIG = 2**62  # above 2^53: float64 would make BIG and BIG + 1 equal and lose their order


def _import(tmp_path: Path, path: Path, fmt: str, *extra: str) -> dict[str, list[tuple]]:
    """Import `path`; {user token: [(item token, timestamp), ...] in sequence order}."""
    root = tmp_path / "data"
    with pytest.raises(SystemExit) as e:
        main(["import", "mine", "--from-file", str(path), "--format", fmt, "--kcore", "0",
              "--data-dir", str(root), *extra])
    assert e.value.code == 0
    df = load_interactions("mine", root)
    users = pd.read_parquet(root / "mine" / "user_map.parquet").set_index("id")["token"]
    items = pd.read_parquet(root / "mine" / "item_map.parquet").set_index("id")["token"]
    out: dict[str, list[tuple]] = {}
    for u, i, t in zip(df["user"], df["item"], df["timestamp"], strict=True):
        out.setdefault(users[u], []).append((items[i], int(t)))
    return out


def test_negative_and_whole_float_times_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,item,timestamp\nu1,a,5\nu1,b,-10\nu1,c,3.0\nu1,d,-1e1\n")
    assert _import(tmp_path, path, "table") == {
        "u1": [("b", -10), ("d", -10), ("c", 3), ("a", 5)]}  # b before d: file order breaks ties


@pytest.mark.parametrize("fmt", ["table", "inter"])
def test_large_integer_times_are_exact(tmp_path: Path, fmt: str) -> None:
    if fmt == "table":
        path = tmp_path / "t.csv"
        path.write_text(f"user,item,timestamp\nu1,a,{BIG + 1}\nu1,b,{BIG}\nu1,c,{2**63 - 1}\n")
    else:
        path = tmp_path / "t.inter"
        path.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                        f"u1\ta\t{BIG + 1}\nu1\tb\t{BIG}\nu1\tc\t{2**63 - 1}\n")
    assert _import(tmp_path, path, fmt) == {"u1": [("b", BIG), ("a", BIG + 1), ("c", 2**63 - 1)]}


@pytest.mark.parametrize(("file", "fmt", "text"), [
    ("t.csv", "table", f"user,item,timestamp\n{2**70},{2**64 + 1},1\n{2**70},007,2\n"),
    ("s.txt", "seq", f"{2**70} {2**64 + 1} 007\n"),
])
def test_huge_integer_ids_are_tokens_as_written(tmp_path: Path, file: str, fmt: str,
                                               text: str) -> None:
    path = tmp_path / file
    path.write_text(text)
    seqs = _import(tmp_path, path, fmt)
    assert list(seqs) == [str(2**70)]
    assert [i for i, _ in seqs[str(2**70)]] == [str(2**64 + 1), "007"]


def test_inter_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "t.inter"
    path.write_text("timestamp:float\trating:float\titem_id:token\tuser_id:token\n"
                    "20\t4\ta\tu1\n10\t5\tb\tu1\n15\t3\tc\tu2\n")
    assert _import(tmp_path, path, "inter") == {"u1": [("b", 10), ("a", 20)], "u2": [("c", 15)]}


@pytest.mark.parametrize(("file", "fmt", "text"), [
    ("t.csv", "table", "user,item,timestamp\nu1,a,1\nu1,b,2\n"),
    ("t.inter", "inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ta\t1\nu1\tb\t2\n"),
    ("s.txt", "seq", "u1 a b\n"),
    ("p.txt", "pairs", "u1 a\nu1 b\n"),
])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_byte_order_mark_and_crlf(tmp_path: Path, file: str, fmt: str, text: str,
                                  newline: str) -> None:
    path = tmp_path / file
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", newline).encode())
    seqs = _import(tmp_path, path, fmt)
    assert list(seqs) == ["u1"]  # not '\ufeffu1', and no '\r' in any token
    assert [i for i, _ in seqs["u1"]] == ["a", "b"]


def test_parquet_integer_dictionary_and_timestamp_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "user": pa.array([2**64 - 1, 2**64 - 1, 7], pa.uint64()),
        "item": pa.array(["x", "y", "x"]).dictionary_encode(),
        "timestamp": pa.array([2000, 1000, 1500], pa.timestamp("ms")),
        "when": pa.array([Decimal(BIG + 1), Decimal(BIG), Decimal("7.0")], pa.decimal128(20, 1)),
    }), path)
    assert _import(tmp_path, path, "table") == {
        str(2**64 - 1): [("y", 1000), ("x", 2000)], "7": [("x", 1500)]}
    assert _import(tmp_path, path, "table", "--time-col", "when") == {
        str(2**64 - 1): [("y", BIG), ("x", BIG + 1)], "7": [("x", 7)]}


def test_gzip_table_and_separators_as_typed(tmp_path: Path) -> None:
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(b"user,item,timestamp\nu1,a,2\nu1,b,1\n"))
    assert _import(tmp_path, gz, "table") == {"u1": [("b", 1), ("a", 2)]}
    tab = tmp_path / "t.csv"  # a tab-separated file with a .csv name and --sep '\t' from a shell
    tab.write_text("user\titem\ttimestamp\nu1\ta\t2\nu1\tb\t1\n")
    assert _import(tmp_path, tab, "table", "--sep", "\\t") == {"u1": [("b", 1), ("a", 2)]}
    colons = tmp_path / "r.dat"
    colons.write_text("user::item::timestamp\nu1::a::2\nu1::b::1\n")
    assert _import(tmp_path, colons, "table", "--sep", "::") == {"u1": [("b", 1), ("a", 2)]}


def test_amazon_dump_by_content_not_name(tmp_path: Path) -> None:
    from matrrec_cli.data.readers import read_raw

    rows = dumps.interactions(n=50)
    plain = tmp_path / "reviews_X_5.json.gz"  # hand-fetched and already decompressed
    plain.write_bytes(b"\xef\xbb\xbf" + dumps.amazon_lines(rows))
    df = read_raw(plain, "amazon-json")
    assert list(df["user"][:3]) == [f"U{u}" for u, _, _ in rows[:3]]
    assert df["timestamp"].tolist() == [t for _, _, t in rows]


@pytest.mark.parametrize(("text", "value"), [
    ("-5", -5), (" 12 ", 12), ("1.0e3", 1000), ("4611686018427387905.0", BIG + 1),
    ("9223372036854775807", 2**63 - 1), ("-9223372036854775808.0", -(2**63)), ("-0", 0),
])
def test_parse_time_exact(text: str, value: int) -> None:
    from matrrec_cli.data.readers import parse_time

    assert parse_time(text) == value


@pytest.mark.parametrize(("text", "reason"), [
    ("inf", "not a finite number"), ("-Infinity", "not a finite number"),
    ("nan", "not a finite number"), ("1.5", "not a whole number"), ("x", "not a number"),
    ("9223372036854775808", "outside the 64-bit integer range"),
    ("1e999999999", "outside the 64-bit integer range"), ("9" * 5000, "outside the 64-bit"),
])
def test_parse_time_refuses(text: str, reason: str) -> None:
    from matrrec_cli.data.readers import parse_time

    with pytest.raises(ValueError, match=reason):
        parse_time(text)
