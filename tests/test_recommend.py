"""`matrrec recommend` and the Python API (`import matrrec`) on an imported synthetic dataset:
the held-out item's place in the full list is the rank evaluation recorded, ids are the file's,
and bad ids are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import import_synthetic

import matrrec
from matrrec_cli.cli import main
from matrrec_cli.errors import MatrrecError
from matrrec_cli.train import runs

SMALL = ["--set", "hidden_size=16", "--set", "embedding_size=16"]


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Run directories of gru4rec, markov and markov with mask_history on dataset 'cyc'."""
    root = tmp_path_factory.mktemp("rec")
    (root / "data").mkdir()
    data = import_synthetic(root / "data", n_users=30, n_items=20, max_len=15, train_len=8)
    out = {}
    for label, model, extra in (("gru4rec", "gru4rec", SMALL), ("markov", "markov", []),
                                ("markov-masked", "markov", ["--set", "mask_history=true"])):
        results = root / label
        assert _run(["train", "--dataset", "cyc", "--model", model, "--epochs", "2",
                     "--device", "cpu", "--data-dir", str(data), "--results-dir",
                     str(results), *extra]) == 0
        (out[label],) = (results / "runs" / "cyc" / model).iterdir()
    out["data"] = data
    return out


def _tokens(data: Path, which: str) -> pd.Series:
    return pd.read_parquet(data / "cyc" / f"{which}_map.parquet").set_index("id")["token"]


@pytest.mark.parametrize("label", ["gru4rec", "markov", "markov-masked"])
@pytest.mark.parametrize("split", ["test", "valid"])
def test_target_position_is_the_recorded_rank(trained, label: str, split: str) -> None:
    run = matrrec.load_run(trained[label], device="cpu")
    assert run.config.mask_history is (label == "markov-masked")
    ranks = pd.read_parquet(trained[label] / runs.RANKS)
    ranks = ranks[ranks["split"] == split].set_index("user")["rank"]
    users = _tokens(trained["data"], "user")
    items = _tokens(trained["data"], "item")
    inter = pd.read_parquet(trained["data"] / "cyc" / "interactions.parquet")
    back = 1 if split == "test" else 2
    ids = list(ranks.index)  # all 30: markov's ties put some targets behind a tied item
    df = run.recommend([users[u] for u in ids], None, include_history=True, split=split)
    for u in ids:
        got = df[df["user"] == users[u]].reset_index(drop=True)
        assert list(got["rank"]) == list(range(1, len(got) + 1))
        assert got["score"].is_monotonic_decreasing
        target = items[int(inter[inter["user"] == u]["item"].iloc[-back])]
        (pos,) = np.flatnonzero(got["item"] == target) + 1
        assert pos == ranks[u], (label, split, u)
        if label != "markov-masked":  # every real item once, padding never
            assert len(got) == len(items)
            assert set(got["item"]) == set(items)


def test_include_history_false_leaves_the_history_out(trained) -> None:
    run = matrrec.load_run(trained["gru4rec"], device="cpu")
    inter = pd.read_parquet(trained["data"] / "cyc" / "interactions.parquet")
    users, items = _tokens(trained["data"], "user"), _tokens(trained["data"], "item")
    df = run.recommend(users[[1, 2, 3]], k=None)
    for u in (1, 2, 3):
        seen = set(items[inter[inter["user"] == u]["item"]])
        listed = set(df[df["user"] == users[u]]["item"])
        assert not listed & seen
        assert listed | seen == set(items)  # everything else is listed (k=None)
    # the scores are score()'s for the user's last max_len items: one code path for both
    hist = list(items[inter[inter["user"] == 1]["item"]])
    full = run.score([hist])[0]
    top = df[df["user"] == users[1]].iloc[0]
    assert full[list(run.item_ids).index(top["item"])] == pytest.approx(top["score"])
    assert np.allclose(run.score([hist[-run.config.max_len:]]), full[None])


def test_cli_recommend_json(trained, capsys) -> None:
    inter = pd.read_parquet(trained["data"] / "cyc" / "interactions.parquet")
    users, items = _tokens(trained["data"], "user"), _tokens(trained["data"], "item")
    capsys.readouterr()
    assert _run(["recommend", str(trained["gru4rec"]), "--user", users[4], "-k", "5",
                 "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["user"] for r in rows} == {users[4]}
    got = [r["item"] for r in rows]
    assert len(set(got)) == 5
    assert set(got) <= set(items)
    assert not set(got) & set(items[inter[inter["user"] == 4]["item"]])


def test_cli_recommend_users_file(trained, tmp_path: Path) -> None:
    users = _tokens(trained["data"], "user")
    (tmp_path / "u.txt").write_text(f"{users[1]}\n{users[2]}\n\n")
    pd.DataFrame({"user": [users[3]]}).to_csv(tmp_path / "u.csv", index=False)
    for src, dst, n in (("u.txt", "r.parquet", 2), ("u.csv", "r.csv", 1)):
        assert _run(["recommend", str(trained["markov"]), "--users", str(tmp_path / src),
                     "-k", "3", "--output", str(tmp_path / dst), "--device", "cpu"]) == 0
        df = (pd.read_parquet if dst.endswith("parquet") else pd.read_csv)(tmp_path / dst)
        assert list(df.columns) == ["user", "rank", "item", "score"]
        assert len(df) == 3 * n


def test_unknown_ids_are_one_line(trained, capsys) -> None:
    run = matrrec.load_run(trained["gru4rec"], device="cpu")
    with pytest.raises(MatrrecError, match="unknown user id 'nobody'"):
        run.recommend(["nobody"])
    with pytest.raises(MatrrecError, match=r"unknown item id .no-such-item.*item_map\.parquet"):
        run.score([[run.item_ids[0], "no-such-item"]])
    for k in (0, -1, "3", 2.5, True):  # the API's k: a whole number of at least 1
        with pytest.raises(MatrrecError, match="k must be a whole number of at least 1"):
            run.recommend([run.user_ids[0]], k=k)
    with pytest.raises(MatrrecError, match="history 0 is empty"):
        run.score([[]])
    assert run.recommend([], k=3).empty  # no users: an empty frame, not an error
    assert len(run.recommend([run.user_ids[0]], k=10**6)) <= len(run.item_ids)  # past the catalog
    capsys.readouterr()
    for args in (["--user", "nobody"], ["--user", "nobody", "--user", "ghost"]):
        assert _run(["recommend", str(trained["gru4rec"]), *args, "--device", "cpu"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("matrrec: error: unknown user id 'nobody'")
    assert _run(["recommend", str(trained["gru4rec"]), "--device", "cpu"]) == 2  # no user
    assert "Traceback" not in capsys.readouterr().err


def test_run_without_best_checkpoint_is_one_line(trained, tmp_path: Path, capsys) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in (runs.CONFIG, runs.METRICS):  # a run shipped from a Ray worker, no checkpoints
        (bare / name).write_bytes((trained["markov"] / name).read_bytes())
    capsys.readouterr()
    assert _run(["recommend", str(bare), "--user", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "best.pt is missing" in err[0]
    assert "--keep-checkpoints" in err[0]


def test_api_config_and_metrics(trained) -> None:
    run = matrrec.load_run(str(trained["gru4rec"]), device="cpu")
    assert run.metrics == json.loads((trained["gru4rec"] / runs.METRICS).read_text())
    assert run.config.model == "gru4rec"
    assert run.config.dataset == "cyc"
    assert run.score([]).shape == (0, len(run.item_ids))


def test_count_model_counts_everything_known_for_a_real_recommendation(trained) -> None:
    run = matrrec.load_run(trained["markov"], device="cpu")
    n = len(pd.read_parquet(trained["data"] / "cyc" / "interactions.parquet"))
    run.recommend(run.user_ids[0], k=1, split="test")
    assert run.model.popularity.sum() == n - len(run.user_ids)  # the test items held out
    run.recommend(run.user_ids[0], k=1)
    assert run.model.popularity.sum() == n  # every known interaction counted


def test_a_run_trained_with_a_relative_data_dir_recommends_from_elsewhere(
        trained, tmp_path: Path, monkeypatch, capsys) -> None:
    """`--data-dir data` is relative to where training ran; from another directory the run's
    data are found beside its results directory (the layout the defaults make)."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(trained["data"], project / "data")
    monkeypatch.chdir(project)
    assert _run(["train", "--dataset", "cyc", "--model", "markov", "--data-dir", "data",
                 "--results-dir", "results"]) == 0
    (run,) = (project / "results" / "runs" / "cyc" / "markov").iterdir()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert _run(["recommend", str(run), "--user", "1", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert _run(["evaluate", str(run)]) == 0
