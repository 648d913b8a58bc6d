"""`matrrec report breakdown`: quantile buckets, mean ± std over seeds and paired tests per
bucket, checked against brute force on fabricated run records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import import_synthetic
from helpers import run_cli as _run
from scipy import stats
from test_claims import fake_run

from matrrec_cli.experiments import breakdown as bd
from matrrec_cli.experiments import claims as cl

SEEDS = {"matrrec": (1, 2, 3), "sasrec": (1, 2, 3), "mamba4rec": (1, 2, 3), "markov": (1,)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A prepared dataset of 240 users (enough for 4 buckets of at least 50)."""
    return import_synthetic(tmp_path_factory.mktemp("data"), "cyc", n_users=240, n_items=30,
                            max_len=30)


@pytest.fixture(scope="module")
def hist(data: Path) -> pd.Series:
    return bd.user_features("cyc", data)["history_length"]


def _ranks(users: pd.Index, seed: int, model: str, short: pd.Index) -> pd.Series:
    """Random ranks 1..25; MaTrRec's short-history users near the top (the claim holding)."""
    rng = np.random.default_rng(1000 * seed + sum(map(ord, model)))
    r = pd.Series(rng.integers(1, 26, len(users)), index=users)
    if model == "matrrec":
        r[short] = rng.integers(1, 4, len(short))
    return r


def _fabricate(root: Path, data: Path, hist: pd.Series, models=tuple(SEEDS)) -> None:
    bucket, _ = bd.length_buckets(hist)
    short = bucket.index[bucket == 0]
    for model in models:
        for seed in SEEDS[model]:
            fake_run(root, "cyc", model, seed, 0.05, data_dir=data,
                     ranks=_ranks(hist.index, seed, model, short))


def _brute_ranks(root: Path, model: str) -> pd.DataFrame:
    """users x seeds test ranks, read straight from the run directories."""
    cols = {}
    for run in (root / "runs" / "cyc" / model).iterdir():
        seed = json.loads((run / "config.json").read_text())["seed"]
        r = pd.read_parquet(run / "ranks.parquet")
        cols[seed] = r[r["split"] == "test"].set_index("user")["rank"]
    return pd.DataFrame(cols)


def _ndcg(rank: float) -> float:
    return 1 / math.log2(rank + 1) if rank <= 10 else 0.0


def test_length_buckets_are_quantiles_of_enough_users(hist: pd.Series) -> None:
    bucket, labels = bd.length_buckets(hist)
    counts = bucket.value_counts().sort_index()
    assert len(labels) == bd.N_BUCKETS == 4
    assert (counts >= bd.MIN_USERS).all()
    assert counts.sum() == len(hist)
    # never split a length; buckets ordered by length; labels name the lengths they hold
    spans = hist.groupby(bucket).agg(["min", "max"])
    assert (spans["min"].iloc[1:].to_numpy() > spans["max"].iloc[:-1].to_numpy()).all()
    for i, label in enumerate(labels):
        lo, hi = spans.loc[i]
        assert label == (str(lo) if lo == hi else f"{lo}-{hi}")


def test_mean_and_std_over_seeds_equal_brute_force(data: Path, hist: pd.Series,
                                                   tmp_path: Path) -> None:
    _fabricate(tmp_path, data, hist)
    df = bd.breakdown(tmp_path, "cyc")
    assert list(df.columns) == bd.TABLE_COLUMNS
    bucket, labels = bd.length_buckets(hist)
    length = df[df["by"] == "history_length"]
    assert list(dict.fromkeys(length["bucket"])) == labels
    # MODEL_ORDER, then models outside Table 2
    assert list(dict.fromkeys(df["model"])) == ["sasrec", "mamba4rec", "matrrec", "markov"]
    for model, seeds in SEEDS.items():
        ranks = _brute_ranks(tmp_path, model)
        for i, label in enumerate(labels):
            sub = ranks.loc[bucket.index[bucket == i]]
            row = length[(length["bucket"] == label) & (length["model"] == model)].iloc[0]
            assert row["n_users"] == len(sub)
            assert row["seeds"] == len(seeds)
            for name, per_user in (("ndcg@10", sub.map(_ndcg)), ("recall@5", sub <= 5),
                                   ("recall@10", sub <= 10)):
                per_seed = [float(np.mean(per_user[s])) for s in seeds]
                assert row[name] == pytest.approx(np.mean(per_seed), rel=1e-12)
                if len(seeds) > 1:
                    assert row[f"{name}_std"] == pytest.approx(np.std(per_seed, ddof=1),
                                                               rel=1e-12)
                else:  # one seed: no spread measured
                    assert math.isnan(row[f"{name}_std"])
    pop = df[(df["by"] == "target_popularity") & (df["model"] == "matrrec")]
    assert pop["n_users"].sum() == len(hist)
    assert pop["bucket"].iloc[0].startswith("q1: ")


def test_wilcoxon_and_bh_per_bucket_equal_scipy(data: Path, hist: pd.Series,
                                                tmp_path: Path) -> None:
    _fabricate(tmp_path, data, hist)
    tests = bd.bucket_tests(bd.load(tmp_path, "cyc"))
    assert list(tests.columns) == bd.TEST_COLUMNS
    bucket, labels = bd.length_buckets(hist)
    ours = _brute_ranks(tmp_path, "matrrec").map(_ndcg)
    assert list(dict.fromkeys(tests["model"])) == ["sasrec", "mamba4rec", "markov"]
    for base in ("sasrec", "mamba4rec", "markov"):
        theirs = _brute_ranks(tmp_path, base).map(_ndcg)
        rows = tests[tests["model"] == base]
        assert list(rows["bucket"]) == labels
        ps = []
        for (_, row), i in zip(rows.iterrows(), range(len(labels)), strict=True):
            users = bucket.index[bucket == i]
            o, b = ours.loc[users], theirs.loc[users]
            assert row["n_users"] == len(users)
            assert row["ours"] == pytest.approx(o.mean(axis=0).mean(), rel=1e-12)
            assert row["base"] == pytest.approx(b.mean(axis=0).mean(), rel=1e-12)
            assert row["gain_pct"] == pytest.approx(100 * (row["ours"] / row["base"] - 1))
            p = stats.wilcoxon(o.mean(axis=1), b.mean(axis=1)).pvalue
            assert row["p"] == pytest.approx(p, rel=1e-12)
            ps.append(p)
        want = stats.false_discovery_control(ps, method="bh")
        assert rows["p_bh"].to_numpy() == pytest.approx(want, rel=1e-12)
        assert (rows["significant"] == (rows["p_bh"] < 0.05)).all()
    # the fabricated gain lives in the shortest bucket only
    first = tests[tests["bucket"] == labels[0]]
    assert first["significant"].all()
    assert (first["gain_pct"] > 0).all()


def test_cli_prints_counts_tests_and_the_claim2_verdict(data: Path, hist: pd.Series,
                                                        tmp_path: Path, capsys) -> None:
    _fabricate(tmp_path, data, hist)
    assert _run(["report", "breakdown", "--dataset", "cyc", "--results-dir",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    bucket, labels = bd.length_buckets(hist)
    for i, label in enumerate(labels):  # each bucket with its user count
        assert any(label in line and f" {int((bucket == i).sum())} " in line
                   for line in out.splitlines()), label
    assert "seeds: sasrec 3, mamba4rec 3, matrrec 3, markov 1" in " ".join(out.split())
    assert "p_bh" in out
    want = cl.claim2("cyc", cl.chosen_runs(tmp_path, ["cyc"]), None)[0]
    assert want.verdict == "holds", want.evidence
    assert f"histories): {want.verdict}" in out
    assert want.evidence[:60] in " ".join(out.split())
    main = pd.read_csv(tmp_path / "breakdown_cyc.csv")
    tests = pd.read_csv(tmp_path / "breakdown_tests_cyc.csv")
    assert {"ndcg@10_std", "recall@5", "recall@5_std", "recall@10_std"} <= set(main.columns)
    assert list(tests.columns) == bd.TEST_COLUMNS
    assert len(tests) == 3 * len(labels)
    assert (tmp_path / "breakdown_cyc.png").read_bytes()[:4] == b"\x89PNG"

    assert _run(["report", "breakdown", "--dataset", "cyc", "--results-dir", str(tmp_path),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(main)
    assert rows[0].keys() == set(bd.TABLE_COLUMNS)
    assert _run(["report", "breakdown", "--dataset", "cyc", "--results-dir", str(tmp_path),
                 "--markdown"]) == 0
    assert "| bucket | users |" in capsys.readouterr().out


def test_without_matrrec_no_tests_and_one_line(data: Path, hist: pd.Series, tmp_path: Path,
                                               capsys) -> None:
    _fabricate(tmp_path, data, hist, models=("sasrec", "mamba4rec"))
    assert bd.bucket_tests(bd.load(tmp_path, "cyc")).empty
    assert _run(["report", "breakdown", "--dataset", "cyc", "--results-dir",
                 str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "No paired tests: no matrrec runs" in out
    assert "histories): no runs" in out
    assert "matrrec train --dataset cyc --model matrrec --seeds 5" in out
    assert (tmp_path / "breakdown_cyc.csv").exists()
    assert not (tmp_path / "breakdown_tests_cyc.csv").exists()
