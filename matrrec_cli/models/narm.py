"""NARM (protocol §10), RecBole 1.2.1 `narm.py` with its parameter names.

    E -> Dropout(0.25) -> GRU (no bias) -> g_1..g_L;  c_global = g_{len-1}
    alpha_j = v · sigmoid(A1 g_j + A2 c_global) · mask_j      (NOT softmax-normalised; pads 0)
    c_local = sum_j alpha_j g_j;  out = B · Dropout(0.5)([c_local; c_global])

Faithful quirks: alpha is an unnormalised gate (RecBole's, and the original NARM code's), and the
mask is applied to the sigmoid before `v_t` (no bias, so that zeroes the pad weights). The read-out
needs the whole history at once, so NARM trains on objective "prefix" only.
Init: xavier_normal for the item embedding and every Linear; the GRU keeps torch's default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from matrrec_cli.models.base import SequentialRecommender, gather_last
from matrrec_cli.models.draws import Dropout


@dataclasses.dataclass
class NARMConfig:
    """RecBole 1.2.1 `properties/model/NARM.yaml`."""

    embedding_size: int = 64  # item embedding width, also the output width (tied scores)
    hidden_size: int = 128  # GRU and attention width; the paper preset sets 64
    n_layers: int = 1  # stacked GRU layers
    dropout_probs: tuple[float, float] = (0.25, 0.5)  # (on embeddings, on [c_local; c_global])


class NARM(SequentialRecommender):
    """NARM with CE over all items against the tied item embedding."""

    Config = NARMConfig
    causal = False  # c_local attends to the whole history
    supports_all_objective = False

    def __init__(self, *, n_items: int, max_len: int, config: NARMConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        H = cfg.hidden_size
        self.item_embedding = nn.Embedding(n_items, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = Dropout(cfg.dropout_probs[0])
        self.gru = nn.GRU(cfg.embedding_size, H, cfg.n_layers, bias=False, batch_first=True)
        self.a_1 = nn.Linear(H, H, bias=False)
        self.a_2 = nn.Linear(H, H, bias=False)
        self.v_t = nn.Linear(H, 1, bias=False)
        self.ct_dropout = Dropout(cfg.dropout_probs[1])
        self.b = nn.Linear(2 * H, cfg.embedding_size, bias=False)
        with torch.no_grad():  # RecBole's _init_weights in `self.apply` order
            for m in (self.item_embedding, self.a_1, self.a_2, self.v_t, self.b):
                nn.init.xavier_normal_(m.weight)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        g, _ = self.gru(self.emb_dropout(self.item_embedding(item_seq)))  # (B, L, H)
        c_global = gather_last(g, lengths)  # (B, H)
        mask = (item_seq > 0).unsqueeze(-1).to(g.dtype)  # (B, L, 1)
        q = torch.sigmoid(self.a_1(g) + self.a_2(c_global).unsqueeze(1))  # (B, L, H)
        alpha = self.v_t(mask * q)  # (B, L, 1), unnormalised
        c_local = (alpha * g).sum(dim=1)  # (B, H)
        c = self.ct_dropout(torch.cat([c_local, c_global], dim=1))  # (B, 2H)
        return self.b(c)  # (B, E)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        # The released yaml's dropout keys (dropout_prob, ...) are not NARM's `dropout_probs`,
        # so only hidden_size changes (protocol §10, NARM "Override").
        return {"hidden_size": 64}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        # Empty on purpose: the trainer applies these in the paper preset too, and the yaml does
        # not touch NARM's dropouts. Set them with `dropout_probs` explicitly.
        return {}
