"""GRU4Rec (protocol §10): E[seq] -> Dropout -> GRU (no bias) -> Linear -> read out at len-1.

RecBole 1.2.1 `gru4rec.py`, parameter names included. Causal (a left-to-right GRU), so it trains
on objective "all" as well. Init as RecBole's `_init_weights`: xavier_normal for the item
embedding (its padding row too), xavier_uniform for the first GRU layer's weight_ih/weight_hh
(deeper layers keep torch's default, as in RecBole), torch's default for `dense`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.models.draws import Dropout


@dataclasses.dataclass
class GRU4RecConfig:
    """RecBole 1.2.1 `properties/model/GRU4Rec.yaml`."""

    embedding_size: int = 64  # item embedding width, also the output width (tied scores)
    hidden_size: int = 128  # GRU state width; the paper preset (released yaml) sets 64
    num_layers: int = 1  # stacked GRU layers
    dropout_prob: float = 0.3  # on the item embeddings only


class GRU4Rec(SequentialRecommender):
    """GRU4Rec with CE over all items against the tied item embedding."""

    Config = GRU4RecConfig
    causal = True
    supports_all_objective = True

    def __init__(self, *, n_items: int, max_len: int, config: GRU4RecConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        self.item_embedding = nn.Embedding(n_items, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = Dropout(cfg.dropout_prob)
        self.gru_layers = nn.GRU(
            input_size=cfg.embedding_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            bias=False,
            batch_first=True,
        )
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        with torch.no_grad():  # RecBole's _init_weights, module order as `self.apply`
            nn.init.xavier_normal_(self.item_embedding.weight)
            nn.init.xavier_uniform_(self.gru_layers.weight_hh_l0)
            nn.init.xavier_uniform_(self.gru_layers.weight_ih_l0)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.emb_dropout(self.item_embedding(item_seq))  # (B, L, E)
        h, _ = self.gru_layers(x)  # (B, L, H)
        return self.dense(h)  # (B, L, E)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        # the yaml's hidden_size and dropout_prob keys are GRU4Rec's own; n_layers is not
        # (GRU4Rec reads num_layers, 1 by default either way)
        return {"hidden_size": 64, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"dropout_prob": p}
