"""`matrrec import`: every format gives the same prepared dataset; bad files fail with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from matrrec_cli.cli import main
from matrrec_cli.data.prepared import load_interactions, load_meta

# three users in time order; u2's rows are out of time order in the table file on purpose
SEQS = {"u1": ["a", "b", "c", "a"], "u2": ["b", "c", "d"], "u3": ["d", "a", "b", "c", "e"]}


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


def _expected() -> list[tuple[str, str]]:
    return [(u, i) for u, items in SEQS.items() for i in items]


def _prepared_pairs(root: Path, name: str) -> list[tuple[str, str]]:
    df = load_interactions(name, root)
    users = pd.read_parquet(root / name / "user_map.parquet").set_index("id")["token"]
    items = pd.read_parquet(root / name / "item_map.parquet").set_index("id")["token"]
    return [(users[u], items[i]) for u, i in zip(df["user"], df["item"], strict=True)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    seq = tmp_path / "s.txt"
    seq.write_text("".join(f"{u} {' '.join(i)}\n" for u, i in SEQS.items()))
    pairs = tmp_path / "p.txt"
    pairs.write_text("".join(f"{u} {i}\n" for u, i in _expected()))
    rows = [(u, i, 100 + t) for u, items in SEQS.items() for t, i in enumerate(items)]
    rows = rows[4:7][::-1] + rows[:4] + rows[7:]  # u2 reversed and first: time decides order
    table = tmp_path / "t.tsv"
    table.write_text("uid\titem\tts\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    parquet = tmp_path / "t.parquet"
    pd.DataFrame(rows, columns=["uid", "item", "ts"]).to_parquet(parquet)
    inter = tmp_path / "t.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                     + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    return {"seq": seq, "pairs": pairs, "table": table, "parquet": parquet, "inter": inter}


@pytest.mark.parametrize("kind", ["seq", "pairs", "table", "parquet", "inter"])
def test_every_format_gives_the_same_sequences(files, kind: str, tmp_path: Path) -> None:
    fmt = "table" if kind == "parquet" else kind
    extra = ["--user-col", "uid", "--time-col", "ts"] if fmt == "table" else []
    root = tmp_path / "data"
    assert _run(["import", "mine", "--from-file", str(files[kind]), "--format", fmt,
                 "--kcore", "0", "--data-dir", str(root), *extra]) == 0
    assert sorted(_prepared_pairs(root, "mine"), key=lambda p: p[0]) == _expected()
    meta = load_meta("mine", root)
    assert meta["filter"]["kcore_user"] == 0
    assert meta["sources"][0]["format"] == fmt
    assert len(meta["sources"][0]["sha256"]) == 64
    assert meta["imported"] is True


def test_kcore_is_applied_and_an_empty_result_is_an_error(files, tmp_path: Path,
                                                          capsys) -> None:
    root = tmp_path / "data"
    assert _run(["import", "mine", "--from-file", str(files["seq"]), "--format", "seq",
                 "--kcore", "2", "--data-dir", str(root)]) == 0
    # 2-core: only item e (once) goes; every user keeps at least 2 items
    assert sorted(_prepared_pairs(root, "mine"), key=lambda p: p[0]) == [
        p for p in _expected() if p != ("u3", "e")]
    # 4-core: u2 (3 items) goes, then d (1 left), then u3 (3 left), then every item of u1
    assert _run(["import", "four", "--from-file", str(files["seq"]), "--format", "seq",
                 "--kcore", "4", "--data-dir", str(root)]) == 1
    assert "no interactions left after the 4/4-core filter" in capsys.readouterr().err


def test_imported_dataset_trains_like_a_registered_one(tmp_path: Path, capsys) -> None:
    from helpers import synthetic_interactions

    csv = tmp_path / "i.csv"
    synthetic_interactions(n_users=20, max_len=12).to_csv(csv, index=False)
    root = tmp_path / "data"
    assert _run(["import", "cyc", "--from-file", str(csv), "--format", "table", "--max-len", "8",
                 "--kcore", "0", "--data-dir", str(root)]) == 0
    capsys.readouterr()
    assert _run(["train", "--dataset", "cyc", "--model", "gru4rec", "--epochs", "1", "--json",
                 "--device", "cpu", "--data-dir", str(root),
                 "--results-dir", str(tmp_path / "res")]) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert cfg["max_len"] == 8  # the import's training default
    assert cfg["dropout"] == 0.4


@pytest.mark.parametrize(("content", "fmt", "message"), [
    ("u1 a b\nu2\n", "seq", "line 2: expected `user item1 item2 ...`"),
    ("u1 a\nu1 b c\n", "pairs", "line 2: expected `user item`, got 3 fields"),
    ("u1 a\nu2 b\nu1 c\n", "pairs", "line 3: user 'u1' appears again"),
    ("user,item,timestamp\nu1,a,5\nu2,b,yesterday\n", "table", "line 3: timestamp 'yesterday'"),
    ("user,item,timestamp\nu1,,5\n", "table", "line 2: empty item"),
    ("who,what\nu1,a\n", "table", "no column(s) user, item, timestamp"),
    ("", "seq", "no interactions in the file"),
])
def test_malformed_files_fail_with_one_line(tmp_path: Path, capsys, content: str, fmt: str,
                                            message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    root = tmp_path / "data"
    assert _run(["import", "bad", "--from-file", str(path), "--format", fmt, "--kcore", "0",
                 "--data-dir", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0]
    assert not (root / "bad" / "meta.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["import", "ml-100k", "--format", "seq"], "registered dataset"),
    (["import", "a/b", "--format", "seq"], "use letters, digits"),
    (["import", "x", "--format", "xml"], "'xml' is not one of"),
])
def test_bad_arguments_exit_2(files, capsys, args: list[str], message: str) -> None:
    assert _run([*args, "--from-file", str(files["seq"])]) == 2
    assert message in capsys.readouterr().err
