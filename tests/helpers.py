"""Shared test helpers: a tiny causal model and synthetic data (importable by every test module
and by the SIGKILL subprocess), and a synthetic dataset imported through the real CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from matrrec_cli.cli import main
from matrrec_cli.models.base import SequentialRecommender


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


def import_synthetic(root: Path, name: str = "cyc", *, n_users: int = 30, n_items: int = 20,
                     max_len: int = 15, train_len: int = 8, dropout: float | None = None
                     ) -> Path:
    """`matrrec import` of synthetic_interactions as dataset `name` into `root` (the data
    directory, returned); the CSV stays at root/i.csv."""
    csv = root / "i.csv"
    synthetic_interactions(n_users=n_users, n_items=n_items, max_len=max_len).to_csv(
        csv, index=False)
    extra = ["--dropout", str(dropout)] if dropout is not None else []
    with pytest.raises(SystemExit) as e:
        main(["import", name, "--from-file", str(csv), "--format", "table", "--kcore", "0",
              "--max-len", str(train_len), "--data-dir", str(root), *extra])
    assert not e.value.code
    return root


# A MaTrRec small enough for seconds-long experiment tests.
SMALL = ["--set", "hidden_size=16", "--set", "inner_size=32", "--set", "d_state=4",
         "--set", "batch_size=256"]


def run_cli(args: list[str]) -> int:
    """`matrrec ARGS` in this process; its exit status."""
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


def scan_inputs(n_b: int, L: int, d: int, n: int, dtype: torch.dtype, dt_shift: float = 0.0,
                *, seed: int = 1, delta_bias: bool = False) -> dict[str, torch.Tensor]:
    """Random inputs of a selective scan: u, delta (+ dt_shift), A < 0, B, C, D, z, and with
    `delta_bias` a dt bias (drawn last, so the others do not depend on it)."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "u": torch.randn(n_b, L, d, generator=g, dtype=dtype),
        "delta": torch.randn(n_b, L, d, generator=g, dtype=dtype) + dt_shift,
        "A": -torch.exp(torch.randn(d, n, generator=g, dtype=dtype)),
        "B": torch.randn(n_b, L, n, generator=g, dtype=dtype),
        "C": torch.randn(n_b, L, n, generator=g, dtype=dtype),
        "D": torch.randn(d, generator=g, dtype=dtype),
        "z": torch.randn(n_b, L, d, generator=g, dtype=dtype),
    }
    if delta_bias:
        out["delta_bias"] = torch.randn(d, generator=g, dtype=dtype)
    return out

