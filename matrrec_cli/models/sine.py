"""SINE (protocol §10), RecBole 1.2.1 `sine.py` with its parameter names.

Sparse-interest network: K of the `prototype_size` concept prototypes are activated per user,
each item is softly assigned to them, and K interest vectors are aggregated into one user vector.
Steps 1-10 of protocol §10 are marked in `seq_repr`.

Faithful quirks, kept as is:
* No padding mask anywhere: pads (E[0], trainable through the CE matmul) take part in every
  softmax over positions, so the number of pads changes the output.
* With CE (RecBole's default here) the covariance regulariser is not added (RecBole adds it for
  loss_type NLL only), so `reg_loss_ratio` is inert and kept only for the record.
* The softmax-over-positions reshape uses the array length (RecBole uses MAX_ITEM_LIST_LENGTH; the
  two agree because every batch is padded to max_len).
Init: w1, w2, w3, w4, w_k_1, w_k_2 ~ N(0, 0.01) (RecBole draws them with numpy; here torch's RNG,
so the seed still fixes them), C and E xavier_normal, LayerNorm 1/0.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.models.base import SeqBatch, SequentialRecommender


@dataclasses.dataclass
class SINEConfig:
    """RecBole 1.2.1 `properties/model/SINE.yaml` (the released yaml overrides nothing)."""

    embedding_size: int = 64  # item embedding width D
    prototype_size: int = 50  # number of concept prototypes
    interest_size: int = 3  # K interests activated per user
    tau_ratio: float = 0.1  # temperature of the interest aggregation softmax
    reg_loss_ratio: float = 0.5  # only used with loss_type NLL in RecBole: inert with CE
    layer_norm_eps: float = 1e-12  # ln2 / ln4
    initializer_range: float = 0.01  # std of the hand-made weight matrices (hard-coded in RecBole)


class SINE(SequentialRecommender):
    """SINE with CE over all items against the tied item embedding."""

    Config = SINEConfig
    causal = False
    supports_all_objective = False
    right_padding_invariant = False  # no padding mask (the quirk)

    def __init__(self, *, n_items: int, max_len: int, config: SINEConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        D, K = cfg.embedding_size, cfg.interest_size
        std = cfg.initializer_range
        # construction order as RecBole, so the random stream is consumed in the same order
        self.w1 = nn.Parameter(torch.randn(D, D) * std)
        self.w2 = nn.Parameter(torch.randn(D) * std)
        self.w3 = nn.Parameter(torch.randn(D, D) * std)
        self.w4 = nn.Parameter(torch.randn(D) * std)
        self.C = nn.Embedding(cfg.prototype_size, D)
        self.w_k_1 = nn.Parameter(torch.randn(K, D, D) * std)
        self.w_k_2 = nn.Parameter(torch.randn(K, D) * std)
        self.item_embedding = nn.Embedding(n_items, D, padding_idx=0)
        self.ln2 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ln4 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        with torch.no_grad():  # RecBole's _init_weights in `self.apply` order
            nn.init.xavier_normal_(self.C.weight)
            nn.init.xavier_normal_(self.item_embedding.weight)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The user vector v (B, D); `lengths` is unused: there is no padding mask (the quirk)."""
        cfg = self.config
        K, D = cfg.interest_size, cfg.embedding_size
        x = self.item_embedding(item_seq)  # (B, L, D), pads included
        # 1. concept activation: self-attentive pooling z over all L slots
        a = torch.softmax(torch.tanh(x @ self.w1) @ self.w2, dim=1)  # (B, L)
        z = (a.unsqueeze(1) @ x).squeeze(1)  # (B, D)
        # 2-3. prototype scores, top-K prototypes gated by sigmoid(score)
        s = z @ self.C.weight.T  # (B, P)
        s_top, idx = s.topk(K, dim=1, sorted=True)  # (B, K)
        s_top, idx = s_top.flip(1), idx.flip(1)  # ascending, as RecBole's argsort()[:, -K:]
        C_u = self.C(idx) * torch.sigmoid(s_top).unsqueeze(2)  # (B, K, D)
        # 4. intention assignment P(k|t)
        P_k_t = torch.softmax(
            F.normalize(x @ self.w3, p=2, dim=2) @ self.ln2(C_u).transpose(1, 2), dim=2
        )  # (B, L, K)
        # 5. attention weighting P(t|k), one attention per interest
        a_k = torch.tanh(x.unsqueeze(1) @ self.w_k_1)  # (B, K, L, D)
        P_t_k = torch.softmax((a_k @ self.w_k_2.view(K, D, 1)).squeeze(3), dim=2)  # (B, K, L)
        # 6. interest embeddings delta_k
        w = P_k_t.transpose(1, 2) * P_t_k  # (B, K, L)
        delta = F.normalize(w @ x, p=2, dim=2)  # (B, K, D)
        # 7-8. prototype sequence and its attentive pooling (w3 reused)
        x_bar = P_k_t @ C_u  # (B, L, D)
        att = torch.softmax(torch.tanh(x_bar @ self.w3) @ self.w4, dim=1)  # (B, L)
        C_apt = self.ln4((att.unsqueeze(1) @ x_bar).squeeze(1))  # (B, D)
        # 9. aggregation over interests
        e_k = (delta @ C_apt.unsqueeze(2)).squeeze(2) / cfg.tau_ratio  # (B, K)
        return (torch.softmax(e_k, dim=1).unsqueeze(2) * delta).sum(dim=1)  # (B, D)

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        assert batch.target is not None, "SINE trains on objective 'prefix' only"
        logits = self.item_scores(self.seq_repr(batch.item_seq, batch.lengths))  # (B, n_items)
        return F.cross_entropy(logits, batch.target)  # CE: no regulariser (protocol §10)
