"""Cold-start breakdown: test metrics by user history length and by target-item popularity.

The paper claims MaTrRec helps short-sequence users most (claim 2); this measures it. For every
model with finished runs on a dataset (the configuration Table 2 uses, one run per seed), each
test user's rank gives NDCG@10, Recall@5 and Recall@10. The users are bucketed by
  * history length: the user's interactions before the test item (the whole history, not the
    last L), in up to N_BUCKETS equal-count buckets (`length_buckets`). Quantiles rather than
    fixed edges, because on a sparse 5-core dataset such as Musical almost every user falls
    into the shortest fixed bucket, leaving the others too small to compare anything;
  * target popularity: how often the test item occurs in the training part of all users
    (everything but each user's last two items), in quintile buckets of the test targets.

Per (bucket, model) the metric is averaged over the bucket's users in each seed's run, and the
table gives the mean and sample std (ddof=1) of those per-seed means: the spread a reader
needs to judge a gap between models is the one between training runs, not between users.
With one seed the std is NaN (no spread can be measured; 0 would claim a certainty there is
none). Only users present in every loaded run and in the prepared dataset count, so all
models are scored on the same users.

`bucket_tests` then pairs MaTrRec with each other model per history-length bucket: the
relative NDCG@10 gain of the seed means, and a Wilcoxon signed-rank test on per-user NDCG@10
averaged over seeds (paired by user), Benjamini-Hochberg corrected across the buckets of that
comparison. claims.claim2 gives the verdict from the same buckets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from matrrec_cli.data.prepared import load_interactions, load_meta, require_prepared
from matrrec_cli.data.split import MIN_ITEMS, build_sequences, known_positions
from matrrec_cli.errors import MatrrecError, warn
from matrrec_cli.experiments.significance import bh, ndcg10, test_ranks, wilcoxon_p
from matrrec_cli.experiments.table2 import (
    Members,
    Selection,
    chosen_runs,
    model_order,
)
from matrrec_cli.io import atomic_path
from matrrec_cli.paths import published_dir, stores_text

OURS = "matrrec"
N_BUCKETS, MIN_USERS = 4, 50  # quantile buckets of history length; fewest users per bucket
N_POPULARITY = 5  # quintiles of the test targets' popularity
ALPHA = 0.05  # claim 2's level for a bucket's corrected p
BYS = ("history_length", "target_popularity")
METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ndcg@10": ndcg10,
    "recall@5": lambda r: (r <= 5).astype(float),
    "recall@10": lambda r: (r <= 10).astype(float),
}
TABLE_COLUMNS = ["dataset", "by", "bucket", "model", "n_users", "seeds",
                 *(c for m in METRICS for c in (m, f"{m}_std"))]
TEST_COLUMNS = ["dataset", "bucket", "n_users", "model", "ours", "base", "gain_pct", "p",
                "p_bh", "significant"]


def user_features(dataset: str, data_dir: str | Path) -> pd.DataFrame:
    """user -> history length before the test item and the test target's train popularity."""

    seqs = build_sequences(load_interactions(dataset, Path(data_dir)),
                           n_items=int(load_meta(dataset, Path(data_dir))["n_items"]) + 1)
    lo, hi = seqs.offsets[:-1], seqs.offsets[1:]
    ok = (hi - lo) >= MIN_ITEMS
    lo, hi, users = lo[ok], hi[ok], seqs.users[ok]
    counts = np.bincount(seqs.items[known_positions(seqs.offsets, held_out=2)],
                         minlength=seqs.n_items)
    target = seqs.items[hi - 1]
    return pd.DataFrame({"history_length": hi - 1 - lo, "target_popularity": counts[target]},
                        index=users)


def users_path(results_dir: str | Path, dataset: str) -> Path:
    """Where `matrrec publish` keeps user_features of a dataset beside the published runs."""
    return published_dir(results_dir) / "users" / f"{dataset}.parquet"


def features(dataset: str, data_dir: str | Path, results_dir: str | Path | None = None
             ) -> pd.DataFrame:
    """user_features from the prepared dataset, else the published copy in `results_dir` (a
    fresh clone has the published runs but not the data)."""
    path = users_path(results_dir, dataset) if results_dir is not None else None
    try:
        require_prepared(dataset, data_dir)
    except MatrrecError:
        if path is None or not path.is_file():
            raise
        try:
            return pd.read_parquet(path).set_index("user")
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            raise MatrrecError(f"{path} is unreadable ({type(exc).__name__}); run matrrec "
                               "publish where the dataset is prepared to write it again") from None
    return user_features(dataset, data_dir)


def length_buckets(hist: pd.Series, n: int = N_BUCKETS, min_users: int = MIN_USERS
                   ) -> tuple[pd.Series, list[str]]:
    """user -> bucket (0 = shortest histories), and the buckets' labels: equal-count (quantile)
    buckets of history length, closed at each n-quantile of the users but never inside a
    length (so a length most users share is a bucket of its own); a bucket under `min_users`
    joins its neighbour, since a paired test on a handful of users says nothing."""
    counts = hist.value_counts().sort_index()
    groups: list[list[int]] = [[]]
    seen = 0
    for length, count in counts.items():  # close a bucket at each quantile of the users
        groups[-1].append(int(length))
        seen += int(count)
        if seen >= len(groups) * len(hist) / n and seen < len(hist):
            groups.append([])
    merged: list[list[int]] = []
    for g in (g for g in groups if g):  # a bucket under min_users joins the next one
        if merged and int(counts[merged[-1]].sum()) < min_users:
            merged[-1] += g
        else:
            merged.append(g)
    if len(merged) > 1 and int(counts[merged[-1]].sum()) < min_users:  # the last: the previous
        merged[-2] += merged.pop()
    groups = merged
    mapping = {length: i for i, g in enumerate(groups) for length in g}
    labels = [f"{g[0]}" if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in groups]
    return hist.map(mapping).astype(int), labels


def popularity_buckets(pop: pd.Series, n: int = N_POPULARITY) -> tuple[pd.Series, list[str]]:
    """user -> quantile bucket of the test target's train count, and labels "q1: 0-3", ...
    Tied counts stay in one bucket, so buckets can be unequal (or fewer than n when few
    distinct counts exist)."""
    if pop.nunique() < 2:  # one count: qcut has no edges to cut at
        return pd.Series(0, index=pop.index), [f"q1: {int(pop.iloc[0]) if len(pop) else 0}"]
    q = pd.qcut(pop, n, duplicates="drop")
    # an interval (a, b] of integer counts holds floor(a)+1 .. floor(b)
    labels = [f"q{i + 1}: {math.floor(iv.left) + 1}-{math.floor(iv.right)}"
              for i, iv in enumerate(q.cat.categories)]
    return pd.Series(q.cat.codes, index=pop.index).astype(int), labels


@dataclasses.dataclass
class PerUser:
    """What the breakdown and its tests are computed from, read once."""

    dataset: str
    ranks: dict[str, pd.DataFrame]  # model -> test ranks, common users x seeds
    buckets: pd.DataFrame  # user -> bucket number per `by` (0 = first label)
    labels: dict[str, list[str]]  # by -> bucket labels in order
    chosen: dict[tuple[str, str], Members]  # (dataset, model) -> the runs, as chosen_runs
    data_dir: Path

    def users(self, by: str, i: int) -> pd.Index:
        codes = self.buckets[by]
        return codes.index[codes == i]


def load(results_dir: str | Path, dataset: str, data_dir: str | Path | None = None,
         selection: Selection | None = None) -> PerUser:
    """Every chosen model's per-seed test ranks on the users they all share, and the buckets."""
    chosen = chosen_runs(results_dir, [dataset], selection=selection)
    if not chosen:
        raise MatrrecError(f"no finished runs on {dataset} under {stores_text(results_dir)}; "
                           f"run matrrec train --dataset {dataset} first")
    return per_user(chosen, dataset, data_dir, results_dir=results_dir)


def per_user(chosen: dict[tuple[str, str], Members], dataset: str,
             data_dir: str | Path | None = None, *,
             results_dir: str | Path | None = None) -> PerUser:
    """`load` from runs already chosen ((dataset, model) -> runs, as chosen_runs gives); the
    users' features from the prepared dataset, else from `results_dir`'s published evidence."""
    data_dir = Path(data_dir or next(iter(chosen.values()))[0][1]["data_dir"])
    feat = features(dataset, data_dir, results_dir)
    ranks: dict[str, pd.DataFrame] = {}
    order = model_order([model for _, model in chosen])  # Table 2's columns, in its order
    for (_, model), members in sorted(chosen.items(), key=lambda kv: order.index(kv[0][1])):
        try:
            frame = pd.concat({cfg["seed"]: test_ranks(run) for run, cfg, _ in members}, axis=1)
        except MatrrecError as exc:  # one bad ranks file: leave this model out, keep the rest
            warn(f"{model} left out of the breakdown: {exc}")
            continue
        ranks[model] = frame.dropna()
    if not ranks:
        raise MatrrecError(f"no run on {dataset} has readable per-user ranks")
    users = feat.index
    for frame in ranks.values():
        users = users.intersection(frame.index)
    if users.empty:
        raise MatrrecError(f"the runs' test users are not users of {dataset} in {data_dir}; "
                           "give --data-dir where the runs' dataset is prepared")
    users = users.sort_values()
    hist, hist_labels = length_buckets(feat.loc[users, "history_length"])
    pop, pop_labels = popularity_buckets(feat.loc[users, "target_popularity"])
    return PerUser(dataset, {m: f.loc[users].astype(float) for m, f in ranks.items()},
                   pd.DataFrame({"history_length": hist, "target_popularity": pop}),
                   {"history_length": hist_labels, "target_popularity": pop_labels},
                   chosen, data_dir)


def _seed_stats(per_seed: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN with one seed) of per-seed values."""
    mean = float(per_seed.mean())
    return mean, float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan


def breakdown_table(pu: PerUser) -> pd.DataFrame:
    """Long table (TABLE_COLUMNS): per (by, bucket, model) the users, the seeds, and for each
    metric the mean and std over seeds of the per-seed bucket means."""
    rows = []
    for by in BYS:
        for i, label in enumerate(pu.labels[by]):
            users = pu.users(by, i)
            if users.empty:
                continue
            for model, ranks in pu.ranks.items():
                sub = ranks.loc[users].to_numpy()  # users x seeds
                row = {"dataset": pu.dataset, "by": by, "bucket": label, "model": model,
                       "n_users": len(users), "seeds": sub.shape[1]}
                for name, fn in METRICS.items():
                    row[name], row[f"{name}_std"] = _seed_stats(fn(sub).mean(axis=0))
                rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def breakdown(results_dir: str | Path, dataset: str, data_dir: str | Path | None = None,
              selection: Selection | None = None) -> pd.DataFrame:
    """`breakdown_table` of the runs Table 2 uses on `dataset`."""
    return breakdown_table(load(results_dir, dataset, data_dir, selection))


def bucket_tests(pu: PerUser) -> pd.DataFrame:
    """MaTrRec against every other model per history-length bucket (TEST_COLUMNS): ours / base
    are the NDCG@10 means over seeds of per-seed bucket means, gain_pct their relative gap
    (NaN when base is 0), p the Wilcoxon test on per-user NDCG@10 averaged over seeds, p_bh
    corrected over the buckets of that baseline (each baseline is its own question: is the
    gain over it largest for short histories?). Empty when MaTrRec has no runs."""
    if OURS not in pu.ranks:
        return pd.DataFrame(columns=TEST_COLUMNS)
    nd = {m: pd.DataFrame(ndcg10(r.to_numpy()), index=r.index) for m, r in pu.ranks.items()}
    rows = []
    for base in (m for m in pu.ranks if m != OURS):
        part = []
        for i, label in enumerate(pu.labels["history_length"]):
            users = pu.users("history_length", i)
            o, b = nd[OURS].loc[users], nd[base].loc[users]
            ours, mean_b = float(o.mean(axis=0).mean()), float(b.mean(axis=0).mean())
            part.append({"dataset": pu.dataset, "bucket": label, "n_users": len(users),
                         "model": base, "ours": ours, "base": mean_b,
                         "gain_pct": 100 * (ours - mean_b) / mean_b if mean_b else math.nan,
                         "p": wilcoxon_p(o.mean(axis=1).to_numpy(), b.mean(axis=1).to_numpy())})
        for row, q in zip(part, bh([r["p"] for r in part]), strict=True):
            row["p_bh"], row["significant"] = q, q < ALPHA
        rows += part
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def plot(df: pd.DataFrame, path: Path) -> None:
    """NDCG@10 per bucket, one bar per model with the std over seeds as an error bar, for both
    breakdowns (PNG, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BYS), figsize=(12, 4))
    for ax, by in zip(axes, BYS, strict=True):
        sub = df[df["by"] == by]
        buckets, models = list(dict.fromkeys(sub["bucket"])), list(dict.fromkeys(sub["model"]))
        wide, err = (sub.pivot(index="bucket", columns="model", values=col)
                     .reindex(index=buckets, columns=models)  # bucket order as computed
                     for col in ("ndcg@10", "ndcg@10_std"))
        if not wide.empty:
            wide.plot.bar(ax=ax, rot=0, width=0.85, yerr=err, capsize=2,  # NaN (one seed): no bar
                          error_kw={"elinewidth": 0.8})
        ax.set_title(f"{df['dataset'].iloc[0]}: NDCG@10 by {by.replace('_', ' ')}")
        ax.set_xlabel(by.replace("_", " "))
        ax.set_ylabel("NDCG@10 (mean ± std over seeds)")
        if not wide.empty:
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
