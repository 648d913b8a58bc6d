"""A tiny causal model and synthetic data for the trainer tests (importable by the others and by
the SIGKILL subprocess), plus checks that the tiny model honours the contract the trainer uses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from torch import nn

from matrrec_cli.models.base import SeqBatch, SequentialRecommender


@dataclasses.dataclass
class TinyConfig:
    hidden_size: int = 16  # small enough for a few-second test
    dropout_prob: float = 0.2  # dropout on: exercises the torch RNG in resume tests


class TinyGRU(SequentialRecommender):
    """Embedding -> dropout -> GRU, causal, tied output embedding."""

    Config = TinyConfig

    def __init__(self, *, n_items: int, max_len: int, config: TinyConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        self.item_embedding = nn.Embedding(n_items, config.hidden_size, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.dropout(self.item_embedding(item_seq)))  # (B, L, D)
        return out

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict:
        return {"hidden_size": 16, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict:
        return {"dropout_prob": p}


def synthetic_interactions(n_users: int = 60, n_items: int = 40, seed: int = 0,
                           min_len: int = 5, max_len: int = 30) -> pd.DataFrame:
    """Users walking a noisy item cycle (learnable), rows grouped by user, chronological."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        n = int(rng.integers(min_len, max_len + 1))
        cur = int(rng.integers(1, n_items + 1))
        for t in range(n):
            rows.append((u, cur, 1000 * u + t))
            step = 1 if rng.random() < 0.8 else int(rng.integers(1, n_items))
            cur = (cur - 1 + step) % n_items + 1
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype(
        {"user": "int32", "item": "int32", "timestamp": "int64"})


def test_tiny_model_is_causal() -> None:
    torch.manual_seed(0)
    model = TinyGRU(n_items=11, max_len=6, config=TinyConfig()).eval()
    seq = torch.tensor([[3, 4, 5, 6, 0, 0]])
    changed = seq.clone()
    changed[0, 3] = 9
    h1, h2 = model.encode(seq, torch.tensor([4])), model.encode(changed, torch.tensor([4]))
    assert torch.equal(h1[:, :3], h2[:, :3])
    assert not torch.equal(h1[:, 3], h2[:, 3])


def test_tiny_model_losses_agree_on_one_pair() -> None:
    """With a single position the two objectives are the same cross-entropy."""
    torch.manual_seed(0)
    model = TinyGRU(n_items=11, max_len=4, config=TinyConfig(dropout_prob=0.0))
    seq = torch.tensor([[3, 0, 0, 0]])
    prefix = model.calculate_loss(SeqBatch(seq, torch.tensor([1]), target=torch.tensor([7])))
    targets = torch.tensor([[7, 0, 0, 0]])
    every = model.calculate_loss(SeqBatch(seq, torch.tensor([1]), targets=targets))
    assert torch.allclose(prefix, every)
