"""`matrrec report claims`: each claim's verdict computed from fabricated run records."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import import_synthetic

from matrrec_cli.cli import main
from matrrec_cli.data.registry import training_defaults
from matrrec_cli.experiments import breakdown as bd
from matrrec_cli.experiments import claims as cl
from matrrec_cli.experiments.breakdown import user_features

_names = itertools.count()
DROPOUT_KEYS = ("dropout_prob", "hidden_dropout_prob", "attn_dropout_prob")


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


def fake_run(root: Path, dataset: str, model: str, seed: int, ndcg: float, *,
             dropout: float | None = None, max_len: int | None = None,
             model_config: dict | None = None,
             sources: dict | None = None, ranks: pd.Series | None = None,
             data_dir: Path | None = None) -> Path:
    """A finished run's records as `matrrec train` leaves them (without checkpoints); dropout
    and max_len default to the dataset's."""
    own = training_defaults(dataset, data_dir)
    dropout = own.dropout if dropout is None else dropout
    max_len = own.max_len if max_len is None else max_len
    run = root / "runs" / dataset / model / f"20260101-{next(_names):06d}-{model}{seed}"
    run.mkdir(parents=True)
    mc = {"use_position_embedding": False, **dict.fromkeys(DROPOUT_KEYS, dropout),
          **(model_config or {})}
    cfg = {"dataset": dataset, "model": model, "seed": seed, "preset": "paper",
           "objective": "prefix", "max_len": max_len, "dropout": dropout, "epochs": 300,
           "model_config": mc, "sources": sources or {}, "tag": "",
           "data_dir": str(data_dir or "data")}
    test = {"recall@5": ndcg * 1.5, "recall@10": ndcg * 2, "recall@20": ndcg * 3,
            "ndcg@10": ndcg}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "env.json").write_text(json.dumps({"device": "cpu"}))
    (run / "history.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 1.0}) + "\n")
    if ranks is not None:
        pd.DataFrame({"user": ranks.index.astype(np.int64), "split": "test",
                      "rank": ranks.to_numpy()}).to_parquet(run / "ranks.parquet")
    (run / "metrics.json").write_text(json.dumps({"test": test, "valid": test,
                                                  "stopped_early": True}))
    return run


def verdict(df: pd.DataFrame, claim: int, dataset: str) -> pd.Series:
    rows = df[(df["claim"] == claim) & (df["dataset"] == dataset) & (df["subject"] == "")]
    assert len(rows) == 1
    return rows.iloc[0]


# --- claims 1 and 2 need per-user ranks of a prepared dataset ----------------------------------

@pytest.fixture(scope="module")
def cyc(tmp_path_factory) -> tuple[Path, pd.Series, pd.Series]:
    """A prepared dataset of 240 users; each test user's history length and length bucket."""
    data = import_synthetic(tmp_path_factory.mktemp("data"), "cyc", n_users=240, n_items=30,
                            max_len=30)
    hist = user_features("cyc", data)["history_length"]
    bucket, labels = bd.length_buckets(hist)
    assert len(labels) == 4  # 4 quantile buckets of at least 50 users
    return data, hist, bucket


def _ranks(users: pd.Index, value: int, better: pd.Index | None = None, to: int = 1,
           spread: int = 3) -> pd.Series:
    """Ranks around `value` (varied by user, as real ranks are); `to` for the `better` users."""
    r = pd.Series(value + users.to_numpy() % spread, index=users)
    if better is not None:
        r[better] = to
    return r


def test_claim1_holds_fails_and_undecided(cyc, tmp_path: Path) -> None:
    data, hist, _ = cyc
    users = hist.index
    for seed in (1, 2):
        fake_run(tmp_path, "cyc", "matrrec", seed, 0.6, ranks=_ranks(users, 2), data_dir=data)
        for b in cl.BASELINES:
            fake_run(tmp_path, "cyc", b, seed, 0.5, ranks=_ranks(users, 4, spread=5),
                     data_dir=data)
    df = cl.claims(tmp_path, ["cyc"])
    row = verdict(df, 1, "cyc")
    assert row["verdict"] == "holds", row["evidence"]
    assert "NOT the protocol" not in row["evidence"]
    details = df[(df["claim"] == 1) & (df["subject"] != "")]
    assert list(details["subject"]) == [f"vs {b}" for b in cl.BASELINES]
    assert (details["verdict"] == "better").all()
    assert (details["p_bh"] < 0.01).all()

    # a baseline that ties MaTrRec: not distinguishable at 2 seeds
    same = _ranks(users, 2)
    for run in (tmp_path / "runs" / "cyc" / "narm").iterdir():
        pd.DataFrame({"user": users.astype(np.int64), "split": "test",
                      "rank": same.to_numpy()}).to_parquet(run / "ranks.parquet")
    assert verdict(cl.claims(tmp_path, ["cyc"]), 1, "cyc")["verdict"] == \
        "not distinguishable at 2 seeds"
    # a baseline better than MaTrRec: does not hold, and says which
    for run in (tmp_path / "runs" / "cyc" / "sasrec").iterdir():
        pd.DataFrame({"user": users.astype(np.int64), "split": "test", "rank": 1}).to_parquet(
            run / "ranks.parquet")
    row = verdict(cl.claims(tmp_path, ["cyc"]), 1, "cyc")
    assert row["verdict"] == "does not hold"
    assert "worse than sasrec" in row["evidence"]


def test_claim1_names_missing_baselines_and_no_runs(cyc, tmp_path: Path) -> None:
    data, hist, _ = cyc
    with pytest.raises(Exception, match="give --dataset"):
        cl.claims(tmp_path, None)
    row = verdict(cl.claims(tmp_path, ["cyc"]), 1, "cyc")
    assert row["verdict"] == "no runs"
    assert "matrrec train --dataset cyc --model matrrec --seeds 5" in row["commands"]
    for seed in (1, 2):
        fake_run(tmp_path, "cyc", "matrrec", seed, 0.6, ranks=_ranks(hist.index, 2),
                 data_dir=data)
        fake_run(tmp_path, "cyc", "gru4rec", seed, 0.5, ranks=_ranks(hist.index, 4),
                 data_dir=data)
    row = verdict(cl.claims(tmp_path, ["cyc"]), 1, "cyc")
    assert row["verdict"] == "holds for 1 of 8 baselines"  # the others are named
    assert row["kind"] == "holds"
    assert "untested: narm, sasrec" in row["evidence"]
    assert "matrrec train --dataset cyc --model mamba4rec --seeds 5" in row["commands"]
    assert "--model gru4rec" not in row["commands"]


@pytest.mark.parametrize(("case", "expected"), [
    ("short", "holds"), ("long", "does not hold"), ("few", "not distinguishable at 2 seeds")])
def test_claim2_gain_by_history_length(cyc, tmp_path: Path, case: str, expected: str) -> None:
    data, hist, bucket = cyc
    users = hist.index
    short, long = bucket.index[bucket == 0], bucket.index[bucket == bucket.max()]
    better = {"short": short, "long": long, "few": short[:2]}[case]
    for seed in (1, 2):
        fake_run(tmp_path, "cyc", "matrrec", seed, 0.6, data_dir=data,
                 ranks=_ranks(users, 5, better, to=1))
        for b in cl.COLD_VS:  # bucket 0 of the baselines at rank 3: a base to gain on
            fake_run(tmp_path, "cyc", b, seed, 0.5, data_dir=data,
                     ranks=_ranks(users, 5, better, to=3))
    df = cl.claims(tmp_path, ["cyc"])
    row = verdict(df, 2, "cyc")
    assert row["verdict"] == expected, row["evidence"]
    assert f"({len(short)})" in row["evidence"]  # the bucket's user count is printed
    assert "whole test set Recall@5" in row["evidence"]
    details = df[(df["claim"] == 2) & (df["subject"] != "")]
    assert len(details) == 2 * 4  # 4 buckets x (mamba4rec, sasrec)
    assert details["p_bh"].notna().all()


def test_claim2_without_a_baseline_says_which_to_train(cyc, tmp_path: Path) -> None:
    data, hist, _ = cyc
    fake_run(tmp_path, "cyc", "matrrec", 1, 0.6, ranks=_ranks(hist.index, 2), data_dir=data)
    fake_run(tmp_path, "cyc", "sasrec", 1, 0.6, ranks=_ranks(hist.index, 2), data_dir=data)
    row = verdict(cl.claims(tmp_path, ["cyc"]), 2, "cyc")
    assert row["verdict"] == "no runs"
    assert row["commands"] == "matrrec train --dataset cyc --model mamba4rec --seeds 5"


def test_length_buckets_merge_small_quantiles() -> None:
    hist = pd.Series([3] * 120 + [4] * 30 + list(range(5, 65)))  # ties: qcut drops edges
    bucket, labels = bd.length_buckets(hist)
    counts = bucket.value_counts().sort_index().tolist()
    assert min(counts) >= 50
    assert labels[0] == "3"
    assert sum(counts) == len(hist)


# --- claim 3: Add PE ----------------------------------------------------------------------------

PE = {"model_config": {"use_position_embedding": True},
      "sources": {"model.use_position_embedding": "ablate Add PE"}}


@pytest.mark.parametrize(("pe", "expected"), [
    ((0.050, 0.051, 0.052), "holds"), ((0.060, 0.061, 0.062), "does not hold"),
    ((0.054, 0.058, 0.056), "not distinguishable at 3 seeds")])
def test_claim3_add_pe_against_the_default(tmp_path: Path, pe, expected: str) -> None:
    for seed, (d, p) in enumerate(zip((0.055, 0.056, 0.057), pe, strict=True), 1):
        fake_run(tmp_path, "musical", "matrrec", seed, d)
        fake_run(tmp_path, "musical", "matrrec", seed, p, **PE)
        # another ablation (Remove FFN) at its own values never stands in for the default
        fake_run(tmp_path, "musical", "matrrec", seed, 0.01, model_config={"use_ffn": False},
                 sources={"model.use_ffn": "ablate Remove FFN"})
    row = verdict(cl.claims(tmp_path, ["musical"]), 3, "musical")
    assert row["verdict"] == expected, row["evidence"]
    assert "(3 seeds) vs L=1,H=1" in row["evidence"]
    assert "Welch p" in row["evidence"]


def test_claim3_without_add_pe_runs_prints_the_ablation(tmp_path: Path) -> None:
    fake_run(tmp_path, "musical", "matrrec", 1, 0.05)
    row = verdict(cl.claims(tmp_path, ["musical"]), 3, "musical")
    assert row["verdict"] == "no runs"
    assert row["commands"] == "matrrec ablate --dataset musical --add pe --seeds 5"


# --- claim 4: sweeps ------------------------------------------------------------------------------

def _sweeps(root: Path, dropout: dict[float, float], max_len: dict[int, float],
            noise: float) -> None:
    """Three seeds per point; the dropout 0.4 / L 50 point is the plain run both share."""
    for seed in (1, 2, 3):
        jitter = noise * (seed - 2)
        for v, m in dropout.items():
            src = {} if v == 0.4 else {"dropout": "sweep dropout",
                                       **{f"model.{k}": "sweep dropout" for k in DROPOUT_KEYS}}
            fake_run(root, "musical", "matrrec", seed, m + jitter, dropout=v, sources=src)
        for v, m in max_len.items():
            if v != 50:
                fake_run(root, "musical", "matrrec", seed, m + jitter, max_len=v,
                         sources={"max_len": "sweep max-len"})


DROPOUTS, LENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5), (10, 20, 30, 40, 50, 70)


@pytest.mark.parametrize(("shape", "expected"), [
    ("peak", "holds"), ("other", "does not hold"), ("flat", "not distinguishable at 3 seeds")])
def test_claim4_sweeps(tmp_path: Path, shape: str, expected: str) -> None:
    def curve(values, claimed, lead):
        out = {v: 0.050 - 0.002 * abs(i - values.index(claimed)) for i, v in enumerate(values)}
        return out if lead else dict.fromkeys(values, 0.050)
    if shape == "other":  # dropout 0.3 well above 0.4
        dropout = {**curve(DROPOUTS, 0.4, True), 0.3: 0.060}
    else:
        dropout = curve(DROPOUTS, 0.4, shape == "peak")
    lengths = {**curve(LENGTHS, 50, shape != "flat"), 50: dropout[0.4]}
    _sweeps(tmp_path, dropout, lengths, noise=0.0005 if shape != "flat" else 0.003)
    df = cl.claims(tmp_path, ["musical"])
    row = verdict(df, 4, "musical")
    assert row["verdict"] == expected, row["evidence"]
    parts = df[(df["claim"] == 4) & df["subject"].isin(["dropout", "max_len"])].set_index(
        "subject")
    assert "best 0.4, claimed 0.4" in parts.loc["dropout", "evidence"] or shape != "peak"
    if shape == "other":
        assert parts.loc["dropout", "verdict"] == "does not hold"
        assert "significantly better: 0.3" in parts.loc["dropout", "evidence"]
        # the best point's lead over each of its neighbours, tested as the claimed one's is
        assert "best 0.3 vs 0.2: Welch p" in parts.loc["dropout", "evidence"]
        assert "best 0.3 vs 0.4: Welch p" in parts.loc["dropout", "evidence"]
    else:
        assert "; best 0.4 vs" not in parts.loc["dropout", "evidence"]  # said once, as claimed
    if shape == "peak":
        assert "70 vs 50: -" in parts.loc["max_len", "evidence"]
        assert "(falls" in parts.loc["max_len", "evidence"]
    points = df[(df["claim"] == 4) & df["subject"].str.startswith("dropout=")]
    assert len(points) == len(DROPOUTS)


def test_claim4_without_sweeps_prints_both(tmp_path: Path) -> None:
    fake_run(tmp_path, "musical", "matrrec", 1, 0.05)  # one point: no sweep yet
    row = verdict(cl.claims(tmp_path, ["musical"]), 4, "musical")
    assert row["verdict"] == "no runs"
    assert row["commands"].split(" ; ") == [
        "matrrec sweep dropout 0.1,0.2,0.3,0.4,0.5 --dataset musical --seeds 5",
        "matrrec sweep max_len 10,20,30,40,50,70 --dataset musical --seeds 5"]


# --- claim 5: cost --------------------------------------------------------------------------------

def _profile(root: Path, rows: list[tuple[str, float, float]], device: str = "cuda:0") -> None:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"dataset": "musical", "model": m, "max_len": 50, "synthetic": False,
                   "device": device, "memory_gb": 1.0, "memory_kind": "cuda peak allocated",
                   "train_s_per_epoch": t, "inference_s": i} for m, t, i in rows]).to_csv(
        root / "table5_complexity.csv", index=False)


@pytest.mark.parametrize(("matrrec", "expected"), [
    ((0.13, 0.05), "holds"), ((0.40, 0.05), "does not hold")])
def test_claim5_cost_ratios(tmp_path: Path, matrrec, expected: str) -> None:
    _profile(tmp_path, [("matrrec", *matrrec), ("mamba4rec", 0.12, 0.05),
                        ("nextitnet", 0.85, 0.20), ("sasrec", 0.11, 0.02)])
    row = verdict(cl.claims(tmp_path, ["musical"]), 5, "musical")
    assert row["verdict"] == expected, row["evidence"]
    assert row["evidence"].startswith("on cuda:0, L 50:")
    assert "train s/epoch / nextitnet" in row["evidence"]


def test_claim5_takes_matrrec_from_table5_beside_its_baselines(tmp_path: Path) -> None:
    """MaTrRec at the dataset's L is a cell of both tables; the ratio uses Table 5's, measured
    with the baselines, not Table 4's (here 10x slower: it would flip the verdict)."""
    _profile(tmp_path, [("matrrec", 0.13, 0.05), ("mamba4rec", 0.12, 0.05),
                        ("nextitnet", 0.85, 0.20)])
    t5 = pd.read_csv(tmp_path / "table5_complexity.csv")
    t5[t5["model"] == "matrrec"].assign(train_s_per_epoch=1.3).to_csv(
        tmp_path / "table4_max_len.csv", index=False)
    row = verdict(cl.claims(tmp_path, ["musical"]), 5, "musical")
    assert row["verdict"] == "holds", row["evidence"]


def test_claim5_without_nextitnet_prints_profile(tmp_path: Path) -> None:
    _profile(tmp_path, [("matrrec", 0.13, 0.05), ("mamba4rec", 0.12, 0.05)])
    row = verdict(cl.claims(tmp_path, ["musical"]), 5, "musical")
    assert row["verdict"] == "no runs"
    assert row["commands"] == ("matrrec profile --dataset musical --model "
                               "matrrec,mamba4rec,nextitnet,sasrec")


# --- the command --------------------------------------------------------------------------------

def test_report_claims_command(tmp_path: Path, capsys) -> None:
    _profile(tmp_path, [("matrrec", 0.13, 0.05), ("mamba4rec", 0.12, 0.05),
                        ("nextitnet", 0.85, 0.20)])
    args = ["report", "claims", "--dataset", "musical", "--dataset", "health",
            "--results-dir", str(tmp_path)]
    assert _run([*args, "--markdown"]) == 0
    out = capsys.readouterr().out
    for text in ("| 5 |", "| **holds** |", "| **no runs** |"):
        assert text in out
    assert "matrrec ablate --dataset health --add pe --seeds 5" in out
    assert "```sh" in out
    csv = pd.read_csv(tmp_path / "claims.csv")
    assert set(csv["dataset"]) == {"musical", "health", "musical+health"}
    overall = csv[(csv["dataset"] == "musical+health") & (csv["claim"] == 5)].iloc[0]
    assert overall["verdict"] == "holds"  # health has no profile rows: left out, named
    # a second dataset's report keeps the first one's rows
    assert _run(["report", "claims", "--dataset", "office", "--results-dir", str(tmp_path),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["claim"] for r in rows} == {1, 2, 3, 4, 5}
    assert {"musical", "office"} <= set(pd.read_csv(tmp_path / "claims.csv")["dataset"])


def test_claim1_says_when_table2_chose_an_ablation_for_matrrec(cyc, tmp_path: Path) -> None:
    data, hist, _ = cyc
    for seed in (1, 2):  # only Add PE runs of MaTrRec: Table 2's cell takes them
        fake_run(tmp_path, "cyc", "matrrec", seed, 0.6, ranks=_ranks(hist.index, 2),
                 data_dir=data, **PE)
        fake_run(tmp_path, "cyc", "gru4rec", seed, 0.5, ranks=_ranks(hist.index, 4, spread=5),
                 data_dir=data)
    row = verdict(cl.claims(tmp_path, ["cyc"]), 1, "cyc")
    assert "NOT the protocol's model (use_position_embedding true" in row["evidence"]
