"""Full-ranking metrics from the target's rank (protocol §4).

There is one target per row, so with r the 1-based rank of the target:
  Recall@K = Hit@K = 1[r <= K],  NDCG@K = 1[r <= K] / log2(r + 1),  MRR@K = 1[r <= K] / r.
Each is averaged over users (one row per user). Comparisons and tables use the value rounded to 4
decimals (RecBole's metric_decimal_place); the full-precision mean is stored as well.

Tie rule: rank = 1 + #items scoring strictly higher than the target, so the target wins every
exact tie (optimistic). RecBole's torch.topk leaves tie order unspecified; with float scores exact
ties are negligible (protocol §4).
"""

from __future__ import annotations

import numpy as np
import torch

TOPK = (5, 10, 20)  # the paper's cut-offs
DECIMALS = 4  # RecBole's metric_decimal_place


def ranks_from_scores(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 + #columns scoring strictly higher than the target column, per row: (B, N) -> (B,)."""
    t = scores.gather(1, target.view(-1, 1))  # (B, 1)
    return 1 + (scores > t).sum(dim=1)


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """Recall@5/10/20, NDCG@5/10/20 and MRR@10 averaged over rows, full precision."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks to average")
    out: dict[str, float] = {}
    for k in TOPK:
        out[f"recall@{k}"] = float(np.mean(r <= k))
    for k in TOPK:
        out[f"ndcg@{k}"] = float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))
    out["mrr@10"] = float(np.mean(np.where(r <= 10, 1.0 / r, 0.0)))
    return out


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics rounded to 4 decimals, as compared and reported (RecBole)."""
    return {k: round(v, DECIMALS) for k, v in metrics.items()}
