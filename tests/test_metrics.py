"""Metrics against closed forms and a topk-based brute force (protocol §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matrrec_cli.train.metrics import metrics_from_ranks, ranks_from_scores, rounded


def test_closed_forms() -> None:
    m = metrics_from_ranks(np.array([1, 3, 10, 11, 25]))
    assert m["recall@5"] == pytest.approx(2 / 5)
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["recall@20"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert m["ndcg@20"] == pytest.approx(
        (1 + 1 / math.log2(4) + 1 / math.log2(11) + 1 / math.log2(12)) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)


def test_rank_is_one_plus_strictly_higher_and_wins_ties() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.9, 0.2], [3.0, 2.0, 1.0, 0.0, -1.0]])
    ranks = ranks_from_scores(scores, torch.tensor([2, 4]))
    assert ranks.tolist() == [2, 5]  # tie with column 1 goes to the target


def test_matches_topk_recall_ndcg_without_ties() -> None:
    """RecBole's definition (hit in torch.topk, DCG at the hit position) equals the rank form."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 500, generator=g)
    target = torch.randint(1, 500, (300,), generator=g)
    scores[:, 0] = -torch.inf
    m = metrics_from_ranks(ranks_from_scores(scores, target).numpy())
    top = torch.topk(scores, 20, dim=1).indices
    hit = top == target[:, None]  # (B, 20)
    for k in (5, 10, 20):
        assert m[f"recall@{k}"] == pytest.approx(hit[:, :k].any(1).float().mean().item())
        disc = 1 / torch.log2(torch.arange(2, k + 2).float())
        assert m[f"ndcg@{k}"] == pytest.approx((hit[:, :k].float() * disc).sum(1).mean().item(),
                                               abs=1e-6)


def test_rounding_is_four_decimals() -> None:
    assert rounded({"ndcg@10": 0.123456}) == {"ndcg@10": 0.1235}
