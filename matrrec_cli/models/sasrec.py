"""SASRec (protocol §10), RecBole 1.2.1 `sasrec.py` with its parameter names.

    E[seq] + P[0..L-1] -> LayerNorm -> Dropout -> n x TransformerLayer (post-LN, causal + pad
    mask, additive -10000) -> read out at len-1 -> dot with the tied E

Init: RecBole's `_init_weights`: N(0, 0.02) for Linear and Embedding, zero biases, LN 1/0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from matrrec_cli.models.base import SequentialRecommender
from matrrec_cli.models.draws import Dropout
from matrrec_cli.models.layers import (
    TransformerConfig,
    TransformerEncoder,
    attention_mask,
    init_normal_,
)


@dataclasses.dataclass
class SASRecConfig(TransformerConfig):
    """RecBole 1.2.1 `properties/model/SASRec.yaml` (= TransformerConfig's defaults)."""

    # Speed, not RecBole's: the read-out (prefix loss, evaluation) runs the last layer for the
    # position len-1 only. Same values up to rounding, but its dropout masks are drawn for one
    # position instead of L, so training follows another random stream: off by default.
    readout_only: bool = False

class SASRec(SequentialRecommender):
    """SASRec with CE over all items. Causal: trains on "prefix" or "all"."""

    Config = SASRecConfig
    causal = True
    supports_all_objective = True

    def __init__(self, *, n_items: int, max_len: int, config: SASRecConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        self.item_embedding = nn.Embedding(n_items, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, cfg.hidden_size)
        self.trm_encoder = TransformerEncoder.from_config(cfg)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        init_normal_(self, std=cfg.initializer_range)

    def _embed(self, item_seq: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position_embedding(pos)[None]  # (B, L, D)
        return self.dropout(self.LayerNorm(x))

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.trm_encoder(self._embed(item_seq), attention_mask(item_seq))  # (B, L, D)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.config.readout_only:
            return super().seq_repr(item_seq, lengths)
        return self.trm_encoder(self._embed(item_seq), attention_mask(item_seq),
                                query_idx=(lengths - 1).clamp(min=0))  # (B, D)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        return {"hidden_size": 64, "n_layers": 1, "n_heads": 1, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"hidden_dropout_prob": p, "attn_dropout_prob": p}
