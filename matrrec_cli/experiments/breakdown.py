"""Cold-start breakdown: test metrics by user history length and by target-item popularity.

The paper claims MaTrRec helps short-sequence users most; this measures it. For every model with
finished runs on a dataset (the configuration Table 2 uses), each test user's rank is turned
into Recall@10 and NDCG@10 (averaged over seeds), then averaged within buckets of
  * history length: the user's interactions before the test item (the whole history, not the
    last L), buckets <=5, 6-10, 11-20, 21-50, >50;
  * target popularity: how often the test item occurs in the training part of all users
    (everything but each user's last two items), in quintile buckets of the test targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matrrec_cli.data.prepared import load_interactions, load_meta
from matrrec_cli.data.split import MIN_ITEMS, build_sequences, known_positions
from matrrec_cli.errors import MatrrecError, warn
from matrrec_cli.experiments.significance import ndcg10, test_ranks
from matrrec_cli.experiments.table2 import MODEL_ORDER, Selection, chosen_runs
from matrrec_cli.io import atomic_path

LENGTH_EDGES = (0, 5, 10, 20, 50, np.inf)
LENGTH_LABELS = ("<=5", "6-10", "11-20", "21-50", ">50")


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


def _buckets(feat: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=feat.index)
    out["history_length"] = pd.cut(feat["history_length"], LENGTH_EDGES, labels=LENGTH_LABELS)
    pop = feat["target_popularity"]
    # quintiles of the test targets' popularity; tied counts stay in one bucket, so buckets can
    # be unequal (or fewer than 5 when few distinct counts exist)
    q = pd.qcut(pop, 5, duplicates="drop")
    out["target_popularity"] = q.map(lambda iv: f"{int(iv.left) + 1}-{int(iv.right)}").astype(str)
    order = {f"{int(iv.left) + 1}-{int(iv.right)}": i for i, iv in enumerate(q.cat.categories)}
    out["target_popularity"] = out["target_popularity"].map(lambda b: f"q{order[b] + 1}: {b}")
    return out


def breakdown(results_dir: str | Path, dataset: str, data_dir: str | Path | None = None,
              selection: Selection | None = None) -> pd.DataFrame:
    """Long table: by, bucket, model, n_users, recall@10, ndcg@10 (the runs Table 2 uses)."""

    chosen = {m: members for (ds, m), members
              in chosen_runs(results_dir, [dataset], selection=selection).items()}
    if not chosen:
        raise MatrrecError(f"no finished runs on {dataset} under {Path(results_dir) / 'runs'}; "
                           f"run matrrec train --dataset {dataset} first")
    data_dir = data_dir or next(iter(chosen.values()))[0][1]["data_dir"]
    buckets = _buckets(user_features(dataset, data_dir))
    rows = []
    for model in sorted(chosen, key=lambda m: MODEL_ORDER.index(m) if m in MODEL_ORDER else 99):
        try:
            ranks = pd.concat([test_ranks(run) for run, _, _ in chosen[model]], axis=1)
        except MatrrecError as exc:  # one bad ranks file: leave this model out, keep the rest
            warn(f"{model} left out of the breakdown: {exc}")
            continue
        per_user = pd.DataFrame({
            "ndcg@10": ndcg10(ranks.to_numpy()).mean(axis=1),
            "recall@10": (ranks.to_numpy() <= 10).mean(axis=1)}, index=ranks.index)
        joined = per_user.join(buckets, how="inner")
        for by in ("history_length", "target_popularity"):
            grouped = joined.groupby(by, observed=True)
            for bucket, sub in grouped:
                rows.append({"dataset": dataset, "by": by, "bucket": str(bucket), "model": model,
                             "n_users": len(sub), "seeds": len(chosen[model]),
                             "recall@10": round(sub["recall@10"].mean(), 4),
                             "ndcg@10": round(sub["ndcg@10"].mean(), 4)})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: Path) -> None:
    """NDCG@10 per bucket, one bar per model, for both breakdowns (PNG, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bys = ("history_length", "target_popularity")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, by in zip(axes, bys, strict=True):
        sub = df[df["by"] == by]
        wide = sub.pivot(index="bucket", columns="model", values="ndcg@10")
        wide = wide.reindex(list(dict.fromkeys(sub["bucket"])))  # bucket order as computed
        wide = wide[list(dict.fromkeys(sub["model"]))]
        wide.plot.bar(ax=ax, rot=0, width=0.85)
        ax.set_title(f"{df['dataset'].iloc[0]}: NDCG@10 by {by.replace('_', ' ')}")
        ax.set_xlabel(by.replace("_", " "))
        ax.set_ylabel("NDCG@10")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
