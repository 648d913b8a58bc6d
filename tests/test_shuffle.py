"""The shuffle test: `--set shuffle_history=true` permutes each history (seeded, targets kept),
and `report shuffle` compares it with ordered data."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, run_cli

from matrrec_cli.data.split import Sequences, build_sequences, shuffle_histories, split
from matrrec_cli.experiments.shuffle import shuffle_table
from matrrec_cli.train import runs


def _seqs(lengths: list[int]) -> Sequences:
    rows = [(u, 100 * u + t, t) for u, n in enumerate(lengths, 1) for t in range(n)]
    return build_sequences(pd.DataFrame(rows, columns=["user", "item", "timestamp"]),
                           n_items=100 * (len(lengths) + 1))


def _users(seqs: Sequences) -> list[list[int]]:
    return [seqs.items[a:b].tolist() for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:],
                                                      strict=True)]


def test_targets_stay_and_each_split_sees_a_permutation_of_its_history() -> None:
    seqs = _seqs([7, 2, 3, 12, 5])
    train, test = shuffle_histories(seqs, seed=3)
    for s, t, e in zip(_users(train), _users(test), _users(seqs), strict=True):
        if len(e) < 3:  # cannot be split: left as it is
            assert s == t == e
            continue
        assert s[-2:] == e[-2:]  # the valid and test targets stay
        assert sorted(s[:-2]) == sorted(e[:-2])
        assert t[-1] == e[-1]  # the test target stays
        assert sorted(t[:-1]) == sorted(e[:-1])
        # the test history is the trained order with the valid item inserted somewhere
        assert [x for x in t[:-1] if x != e[-2]] == s[:-2]
    assert not np.array_equal(train.items, seqs.items)
    assert np.array_equal(train.offsets, seqs.offsets)


def test_the_permutation_is_the_seeds() -> None:
    seqs = _seqs([9, 9, 9])
    a, b = shuffle_histories(seqs, seed=5), shuffle_histories(seqs, seed=5)
    assert all(np.array_equal(x.items, y.items) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].items, shuffle_histories(seqs, seed=6)[0].items)


def test_orders_are_uniform() -> None:
    """Every order of a 3-item history, and every place of the valid item among 4, equally
    often over 6000 seeds (each count within 5 sigma of its expectation)."""
    seqs = _seqs([5])
    perms, places = Counter(), Counter()
    n = 6000
    for seed in range(n):
        train, test = shuffle_histories(seqs, seed=seed)
        perms[tuple(train.items[:3])] += 1
        places[int(np.flatnonzero(test.items == seqs.items[3])[0])] += 1
    assert set(perms) == set(itertools.permutations(seqs.items[:3].tolist()))
    for counter, k in ((perms, 6), (places, 4)):
        p = 1 / k
        assert len(counter) == k
        for c in counter.values():
            assert abs(c - n * p) < 5 * (n * p * (1 - p)) ** 0.5


def test_split_indexes_the_test_order_for_test_samples() -> None:
    seqs = _seqs([8, 6])
    train, test = shuffle_histories(seqs, seed=0)
    data = split(train, max_len=4, test_seqs=test)
    assert data.sequences("valid") is train
    assert data.sequences("train") is train
    assert data.sequences("test") is test
    assert split(seqs, max_len=4).sequences("test") is seqs


def _train(data: Path, results: Path, model: str, *extra: str) -> dict:
    args = ["train", "--dataset", "cyc", "--model", model, "--data-dir", str(data),
            "--results-dir", str(results), *extra]
    if model != "markov":
        args += ["--epochs", "2", *SMALL]
    assert run_cli(args) == 0
    return args


def _records(results: Path, model: str) -> list[tuple[dict, dict]]:
    return [(c, m) for _, c, m in runs.finished_runs(results) if c["model"] == model]


def test_markov_loses_its_cycle_on_shuffled_histories(tiny: Path, tmp_path: Path) -> None:
    """The users walk an item cycle: a first-order chain learns it from ordered histories; on
    shuffled ones the last item no longer predicts the next, so most of its NDCG goes."""
    res = tmp_path / "r"
    _train(tiny, res, "markov")
    _train(tiny, res, "markov", "--set", "shuffle_history=true")
    by = {bool(c.get("shuffle_history")): (c, m) for c, m in _records(res, "markov")}
    ordered, shuffled = by[False][1]["test"]["ndcg@10"], by[True][1]["test"]["ndcg@10"]
    assert ordered > 0.5
    assert shuffled < 0.6 * ordered
    assert by[True][0]["config_hash"] != by[False][0]["config_hash"]
    assert by[True][0]["sources"]["shuffle_history"] == "command line --set"


def test_a_shuffled_run_evaluates_to_its_own_numbers(tiny: Path, tmp_path: Path) -> None:
    """`matrrec evaluate` rebuilds the same permutation from the run's seed (a trained model:
    its ranks depend on the histories it is given)."""
    from matrrec_cli.train.pipeline import evaluate_run

    res = tmp_path / "r"
    _train(tiny, res, "matrrec", "--set", "shuffle_history=true", "--set", "scan_impl=torch")
    (run, _, _), = runs.finished_runs(res)
    for name in ("valid", "test"):
        assert evaluate_run(run, split_name=name)["matches_stored"]


def _fake_run(results: Path, name: str, *, model: str, seed: int, shuffled: bool,
              ndcg: float, ranks: list[int], objective: str = "prefix") -> None:
    run = results / "runs" / "ds" / model / name
    run.mkdir(parents=True)
    cfg = {"dataset": "ds", "model": model, "seed": seed, "epochs": 300, "max_len": 50,
           "dropout": 0.4, "objective": objective, "preset": "paper", "tag": "",
           "model_config": {}, "sources": {}, "data_dir": "data", "config_hash": name}
    if shuffled:
        cfg["shuffle_history"] = True
        cfg["sources"]["shuffle_history"] = "command line --set"
    (run / runs.CONFIG).write_text(json.dumps(cfg))
    (run / runs.METRICS).write_text(json.dumps({"test": {"ndcg@10": ndcg},
                                                "stop_reason": "early stopping"}))
    pd.DataFrame({"user": range(1, len(ranks) + 1), "split": "test", "rank": ranks}).to_parquet(
        run / runs.RANKS)


def test_report_shuffle_compares_each_model_with_its_ordered_runs(tmp_path: Path) -> None:
    from scipy import stats

    from matrrec_cli.experiments.ablation import welch_p
    from matrrec_cli.experiments.significance import ndcg10

    rng = np.random.default_rng(0)
    ordered, shuffled = [0.30, 0.32, 0.31], [0.20, 0.22, 0.19]
    ranks: dict[bool, list[list[int]]] = {False: [], True: []}
    for i, (o, s) in enumerate(zip(ordered, shuffled, strict=True)):
        for flag, value in ((False, o), (True, s)):
            r = rng.integers(1, 30 if not flag else 60, size=80).tolist()
            ranks[flag].append(r)
            # the shuffled run first: the family's departures must not name the varied key
            _fake_run(tmp_path, f"2026010{i}-00000{1 - int(flag)}-x", model="sasrec", seed=2020 + i,
                      shuffled=flag, ndcg=value, ranks=r)
    _fake_run(tmp_path, "20260109-000000-y", model="gru4rec", seed=2020, shuffled=False,
              ndcg=0.1, ranks=[1, 2])
    # only shuffled runs of a departing configuration: the ordered side asked with its flags
    _fake_run(tmp_path, "20260109-000001-z", model="markov", seed=2020, shuffled=True,
              ndcg=0.1, ranks=[1, 2], objective="all")
    df, todo = shuffle_table(tmp_path, ["ds"])
    assert "matrrec train --dataset ds --model markov --seeds 3 --objective all" in todo
    row = df.set_index("model").loc["sasrec"]
    assert row["ordered"] == pytest.approx(np.mean(ordered))
    assert row["shuffled_std"] == pytest.approx(np.std(shuffled, ddof=1))
    assert row["change_pct"] == pytest.approx(100 * (np.mean(shuffled) / np.mean(ordered) - 1))
    assert row["welch_p"] == pytest.approx(welch_p(shuffled, ordered))
    assert row["departures"] == ""
    per_user = {f: ndcg10(np.array(ranks[f], dtype=float).T).mean(axis=1) for f in ranks}
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(per_user[True] - per_user[False])
                                              .pvalue)
    assert "gru4rec" not in df["model"].tolist()
    assert "matrrec train --dataset ds --model gru4rec --seeds 3 --set shuffle_history=true" \
        in todo
    assert "matrrec train --dataset ds --model matrrec --seeds 3" in todo
    assert run_cli(["report", "shuffle", "--dataset", "ds", "--results-dir", str(tmp_path)]) == 0
    assert (tmp_path / "shuffle.csv").exists()
