"""Paired significance tests between MaTrRec and each baseline, from the saved per-user ranks.

Both models are scored on the same test users (the leave-one-out split is deterministic), so
every test pairs the two models' outcomes user by user:

* NDCG@10 (a per-user value in [0, 1], mostly 0): paired t-test and Wilcoxon signed-rank test
  (zero differences dropped, scipy's default "wilcox"), on each user's NDCG@10 averaged over the
  seeds of each model's runs.
* Recall@K (a per-user hit): exact McNemar test, i.e. a two-sided binomial test on the discordant
  users (ours hit / baseline missed vs the reverse). A hit needs one run per user, so it uses the
  first seed the two models share (else each model's first seed).

p-values are Benjamini-Hochberg corrected over every test in one report. Table 2's marks use the
corrected Wilcoxon p for NDCG@10 and the corrected McNemar p for Recall@K: improvement with
p_bh < 0.01 (the paper's claim).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matrrec_cli.errors import MatrrecError, warn
from matrrec_cli.experiments.table2 import Selection, chosen_runs
from matrrec_cli.train import runs

ALPHA = 0.01
OURS = "matrrec"
RECALL_KS = (5, 10, 20)
MARK_TEST = {"ndcg@10": "wilcoxon"} | {f"recall@{k}": "mcnemar" for k in RECALL_KS}


def test_ranks(run_dir: Path) -> pd.Series:
    """user -> test rank of one run."""
    path = run_dir / runs.RANKS
    if not path.exists():
        raise MatrrecError(f"{run_dir} has no {runs.RANKS}; re-run matrrec train for it")
    try:
        df = pd.read_parquet(path, columns=["split", "user", "rank"])
    except Exception as exc:  # truncated or not Parquet: pyarrow raises several kinds
        raise MatrrecError(f"{path} is corrupt ({type(exc).__name__}); train the run again"
                           ) from None
    df = df[df["split"] == "test"]
    return pd.Series(df["rank"].to_numpy(), index=df["user"].to_numpy())


def ndcg10(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)


def _paired(ours: list[pd.Series], base: list[pd.Series]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user mean NDCG@10 over seeds, and the first seed's ranks, aligned on common users.
    `ours`/`base`: each run's test ranks (user -> rank)."""
    def mean_ndcg(ranks: list[pd.Series]) -> pd.Series:
        return pd.concat([pd.Series(ndcg10(r.to_numpy()), r.index) for r in ranks],
                         axis=1).mean(axis=1)

    nd = pd.concat({"ours": mean_ndcg(ours), "base": mean_ndcg(base)}, axis=1, join="inner")
    rk = pd.concat({"ours": ours[0], "base": base[0]}, axis=1, join="inner")
    return nd, rk


def _tests(nd: pd.DataFrame, rk: pd.DataFrame) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    diff = nd["ours"] - nd["base"]
    if np.allclose(diff, 0):
        t_p = w_p = 1.0
        t_stat = w_stat = 0.0
    else:
        t = stats.ttest_rel(nd["ours"], nd["base"])
        w = stats.wilcoxon(nd["ours"], nd["base"])
        t_stat, t_p, w_stat, w_p = float(t.statistic), float(t.pvalue), float(w.statistic), \
            float(w.pvalue)
    common = {"n_users": len(nd), "ours": nd["ours"].mean(), "base": nd["base"].mean()}
    out.append({"metric": "ndcg@10", "test": "t-test", "statistic": t_stat, "p": t_p, **common})
    out.append({"metric": "ndcg@10", "test": "wilcoxon", "statistic": w_stat, "p": w_p, **common})
    for k in RECALL_KS:
        hit_o, hit_b = rk["ours"].to_numpy() <= k, rk["base"].to_numpy() <= k
        b, c = int((hit_o & ~hit_b).sum()), int((~hit_o & hit_b).sum())
        p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
        out.append({"metric": f"recall@{k}", "test": "mcnemar", "statistic": float(b - c),
                    "p": p, "n_users": len(rk), "ours": hit_o.mean(), "base": hit_b.mean(),
                    "discordant": f"{b}/{c}"})
    return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p of per-user values (scipy's defaults: zero
    differences dropped); 1.0 when every pair ties, where there is nothing to test."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.allclose(a - b, 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few non-zero pairs: exact/normal notes
        return float(stats.wilcoxon(a, b).pvalue)


def wilcoxon_users(a: pd.Series, b: pd.Series) -> float:
    """`wilcoxon_p` of two per-user series (user -> value), paired on the users both have."""
    users = a.index.intersection(b.index)
    return wilcoxon_p(a.loc[users].to_numpy(), b.loc[users].to_numpy())


def bh(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg corrected p-values, in the order given."""
    from scipy import stats

    if not ps:
        return []
    return [float(p) for p in stats.false_discovery_control(np.clip(ps, 0, 1), method="bh")]


def _seed_first(members: list[tuple[Path, dict, dict]], shared: list[int]) -> list[Path]:
    """Run dirs with the first shared seed first (McNemar uses element 0)."""
    key = shared[0] if shared else None
    return [r for r, c, _ in sorted(members, key=lambda m: m[1]["seed"] != key)]


def significance(results_dir: str | Path, datasets: list[str] | None = None,
                 selection: Selection | None = None) -> pd.DataFrame:
    """Every (dataset, baseline, metric, test) with raw and BH-corrected p and the verdict, over
    the runs Table 2 uses (`selection`, see report.candidates)."""
    from scipy import stats

    chosen = chosen_runs(results_dir, datasets, selection=selection)
    cache: dict[Path, pd.Series] = {}

    def ranks(run: Path) -> pd.Series:  # MaTrRec's runs pair with every baseline: read once
        if run not in cache:
            cache[run] = test_ranks(run)
        return cache[run]

    rows = []
    for (ds, model), members in sorted(chosen.items()):
        if model == OURS or (ds, OURS) not in chosen:
            continue
        ours = chosen[(ds, OURS)]
        shared = sorted({c["seed"] for _, c, _ in ours} & {c["seed"] for _, c, _ in members})
        try:
            nd, rk = _paired([ranks(r) for r in _seed_first(ours, shared)],
                             [ranks(r) for r in _seed_first(members, shared)])
        except MatrrecError as exc:  # one bad ranks file: skip this pair, keep the others
            warn(f"{ds}: {OURS} vs {model} left out: {exc}")
            continue
        for row in _tests(nd, rk):
            rows.append({"dataset": ds, "baseline": model, "ours_seeds": len(ours),
                         "base_seeds": len(members), **row})
    if not rows:
        raise MatrrecError("significance needs finished matrrec runs and at least one baseline "
                           "on the same dataset; run matrrec train --model ... first")
    df = pd.DataFrame(rows)
    df["p_bh"] = stats.false_discovery_control(df["p"].clip(0, 1).to_numpy(), method="bh")
    df["significant"] = df["p_bh"] < ALPHA
    df["better"] = np.where(df["ours"] > df["base"], OURS,
                            np.where(df["ours"] < df["base"], "baseline", "tie"))
    return df


def marks(sig: pd.DataFrame) -> dict[tuple[str, str, str], str | None]:
    """(dataset, baseline, metric) -> which of the two is significantly better at p_bh < 0.01
    (OURS or "baseline"; Table 2's * and its cell marks), None when neither is."""
    out = {}
    for _, r in sig.iterrows():
        if MARK_TEST.get(r["metric"]) == r["test"]:
            out[(r["dataset"], r["baseline"], r["metric"])] = (
                r["better"] if bool(r["significant"]) and r["better"] != "tie" else None)
    return out
