"""CORE with dnn_type "trm" (protocol §10), RecBole 1.2.1 `core.py` with its parameter names.

    x = SessDropout(E[seq]);  out = TransNet(x) (pos. emb + LN + Dropout + causal/pad mask)
    alpha = softmax_L(fn(out)) with pads at -9e15 (in double);  s = normalize(sum_j alpha_j x_j)
    logits = s · normalize(ItemDropout(E))ᵀ / 0.07 in training, s · normalize(E)ᵀ / 0.07 in eval

The weighted sum is over the dropped-out embeddings x, not the transformer outputs (CORE's
"representation-consistent" encoder). Init: EVERY parameter, LayerNorm weights and biases and the
position table included, ~ U(±1/√embedding_size) (RecBole's `_reset_parameters`, which overwrites
TransNet's normal init). The pooling spans the whole history, so "prefix" only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.models.base import SeqBatch, SequentialRecommender
from matrrec_cli.models.draws import Dropout
from matrrec_cli.models.layers import TransformerEncoder, attention_mask


@dataclasses.dataclass
class COREConfig:
    """RecBole 1.2.1 `properties/model/CORE.yaml` (dnn_type trm)."""

    embedding_size: int = 64  # item embedding and transformer width
    inner_size: int = 256  # FFN width
    n_layers: int = 2  # transformer layers; the paper preset sets 1
    n_heads: int = 2  # attention heads; the paper preset sets 1
    hidden_dropout_prob: float = 0.5  # TransNet embeddings, attention output, FFN output
    attn_dropout_prob: float = 0.5  # on the attention probabilities
    layer_norm_eps: float = 1e-12  # every LayerNorm
    sess_dropout: float = 0.2  # on the session's item embeddings
    item_dropout: float = 0.2  # on the item table in the training logits
    temperature: float = 0.07  # logits = cosine / temperature


class TransNet(nn.Module):
    """The transformer that produces the pooling weights alpha (B, L, 1)."""

    def __init__(self, cfg: COREConfig, max_len: int) -> None:
        super().__init__()
        D = cfg.embedding_size
        self.position_embedding = nn.Embedding(max_len, D)
        self.trm_encoder = TransformerEncoder(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            hidden_size=D,
            inner_size=cfg.inner_size,
            hidden_dropout_prob=cfg.hidden_dropout_prob,
            attn_dropout_prob=cfg.attn_dropout_prob,
            layer_norm_eps=cfg.layer_norm_eps,
        )
        self.LayerNorm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.fn = nn.Linear(D, 1)

    def forward(self, item_seq: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.dropout(self.LayerNorm(item_emb + self.position_embedding(pos)[None]))
        out = self.trm_encoder(x, attention_mask(item_seq))  # (B, L, D)
        alpha = self.fn(out).double()  # (B, L, 1)
        alpha = torch.where((item_seq > 0).unsqueeze(-1), alpha, -9e15)
        return torch.softmax(alpha, dim=1, dtype=torch.float)  # (B, L, 1)


class CORE(SequentialRecommender):
    """CORE-trm with cosine / temperature logits."""

    Config = COREConfig
    causal = False  # the pooled output sums over the whole history
    supports_all_objective = False

    def __init__(self, *, n_items: int, max_len: int, config: COREConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        self.sess_dropout = Dropout(cfg.sess_dropout)
        # over items, not batch rows: every rank draws the same mask from the same state
        self.item_dropout = nn.Dropout(cfg.item_dropout)
        self.item_embedding = nn.Embedding(n_items, cfg.embedding_size, padding_idx=0)
        self.net = TransNet(cfg, max_len)
        stdv = 1.0 / math.sqrt(cfg.embedding_size)
        with torch.no_grad():  # _reset_parameters: every parameter, in registration order
            for p in self.parameters():
                p.uniform_(-stdv, stdv)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.sess_dropout(self.item_embedding(item_seq))  # (B, L, D)
        alpha = self.net(item_seq, x)  # (B, L, 1)
        return F.normalize((alpha * x).sum(dim=1), dim=-1)  # (B, D), over x, not net outputs

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        items = F.normalize(self.item_embedding.weight, dim=-1)  # (n_items, D)
        return h @ items.T / self.config.temperature

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        assert batch.target is not None, "CORE trains on objective 'prefix' only"
        s = self.seq_repr(batch.item_seq, batch.lengths)  # (B, D)
        items = F.normalize(self.item_dropout(self.item_embedding.weight), dim=-1)  # (n_items, D)
        return F.cross_entropy(s @ items.T / self.config.temperature, batch.target)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        # the yaml's hidden_size is not CORE's key (embedding_size, 64 either way); sess_dropout
        # and item_dropout are CORE's own keys and stay
        return {"n_layers": 1, "n_heads": 1, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"hidden_dropout_prob": p, "attn_dropout_prob": p}
