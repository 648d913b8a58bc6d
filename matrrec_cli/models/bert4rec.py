"""BERT4Rec (protocol §10), RecBole 1.2.1 `bert4rec.py` + the `mask_itemseq` transform.

    E[seq] + P -> LN -> Dropout -> bidirectional TransformerEncoder (pad mask only)
    -> Linear -> GELU -> LN -> logits = h · E[:n_items]ᵀ + output_bias

The embedding table has n_items + 1 rows; row n_items is the MASK token.

Training (the masked-item objective, never the sample's target; only its history): RecBole masks
in the DataLoader with Python `random`; here `calculate_loss` does it with the global torch RNG
on the batch's device, so the trainer's RNG checkpoint covers it.
* One coin per batch: with probability ft_ratio only position len-1 is masked.
* Otherwise every real item is masked i.i.d. with p = mask_ratio. All of them become MASK in the
  input, but only the LAST mask_item_length = int(mask_ratio·L) of them per row are trained.
* Quirk (faithful): RecBole marks unused slots with masked_index 0, so a mask at position 0 never
  contributes to the loss. `mask_position_zero=True` counts it (the fix).
* Loss: mean CE over the trained slots (RecBole divides by their count; a batch with none gives
  NaN there, a zero loss here).
Evaluation (`reconstruct_test_data`, faithful): append a pad column, put MASK at index len, drop
column 0, read at len-1. So the OLDEST item is always dropped, even when len < L.
`eval_input="keep_oldest"` (the fix) puts MASK at len and reads there when len < L, and drops the
oldest item only when the history fills all L slots.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import SeqBatch, SequentialRecommender, gather_last
from matrrec_cli.models.chunked_loss import cross_entropy as chunked_cross_entropy
from matrrec_cli.models.draws import Dropout
from matrrec_cli.models.draws import rand as draw_rand
from matrrec_cli.models.layers import (
    TransformerConfig,
    TransformerEncoder,
    attention_mask,
    init_normal_,
)


@dataclasses.dataclass
class BERT4RecConfig(TransformerConfig):
    """RecBole 1.2.1 `BERT4Rec.yaml`: SASRec's keys with dropout 0.2, plus masking."""

    hidden_dropout_prob: float = 0.2  # embeddings, attention output, FFN output
    attn_dropout_prob: float = 0.2  # on the attention probabilities
    mask_ratio: float = 0.2  # i.i.d. mask probability, and int(mask_ratio·L) trained slots
    ft_ratio: float = 0.5  # probability per batch of masking only the last item
    mask_position_zero: bool = False  # False: RecBole's quirk, a mask at position 0 is ignored
    eval_input: Literal["recbole", "keep_oldest"] = "recbole"  # recbole: drops the oldest item

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_input not in ("recbole", "keep_oldest"):
            raise MatrrecError(
                f"bert4rec eval_input must be recbole or keep_oldest, not {self.eval_input!r}"
            )


class BERT4Rec(SequentialRecommender):
    """BERT4Rec: bidirectional, trained on its own masked-item objective."""

    Config = BERT4RecConfig
    causal = False
    supports_all_objective = False

    def __init__(self, *, n_items: int, max_len: int, config: BERT4RecConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        cfg = config
        self.mask_token = n_items  # one extra embedding row
        self.mask_item_length = int(cfg.mask_ratio * max_len)
        self.item_embedding = nn.Embedding(n_items + 1, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, cfg.hidden_size)
        self.trm_encoder = TransformerEncoder.from_config(cfg)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.output_ffn = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.output_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        init_normal_(self, std=cfg.initializer_range)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Per-position outputs (B, L, D) of a sequence that may hold MASK tokens."""
        pos = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position_embedding(pos)[None]  # (B, L, D)
        x = self.dropout(self.LayerNorm(x))
        h = self.trm_encoder(x, attention_mask(item_seq, bidirectional=True))  # MASK is attended
        return self.output_ln(F.gelu(self.output_ffn(h)))

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """(..., n_items): the MASK row is not an item, the output bias is added."""
        return h @ self.item_embedding.weight[: self.n_items].T + self.output_bias

    def eval_input(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor,
                                                                                 torch.Tensor]:
        """The evaluation sequence with MASK after the history, and where to read it."""
        B, L = item_seq.shape
        rows = torch.arange(B, device=item_seq.device)
        seq = torch.cat([item_seq, item_seq.new_zeros(B, 1)], dim=1)  # (B, L+1)
        seq[rows, lengths] = self.mask_token
        if self.config.eval_input == "keep_oldest":
            full = lengths >= L  # only a full history loses its oldest item
            shifted = torch.where(full[:, None], seq[:, 1:], seq[:, :-1])  # (B, L)
            return shifted, torch.where(full, lengths - 1, lengths)
        return seq[:, 1:], lengths - 1  # RecBole: always drop column 0 (the oldest item)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seq, read = self.eval_input(item_seq, lengths)
        return gather_last(self.forward(seq), read + 1)  # gather_last reads at (read+1)-1

    def mask_items(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """RecBole's MaskItemSeq: (masked sequence (B, L), trained slots (B, L) bool)."""
        cfg = self.config
        B, L = item_seq.shape
        device = item_seq.device
        real = item_seq > 0  # (B, L)
        if torch.rand((), device=device) < cfg.ft_ratio:  # one coin per batch
            masked = torch.arange(L, device=device)[None, :] == (lengths - 1)[:, None]
            trained = masked
        else:
            masked = (draw_rand((B, L), device=device) < cfg.mask_ratio) & real  # rank-invariant
            from_right = masked.flip(1).cumsum(1).flip(1)  # (B, L): masks at positions >= j
            trained = masked & (from_right <= self.mask_item_length)  # keep the LAST ones
        if not cfg.mask_position_zero:
            trained = trained.clone()
            trained[:, 0] = False  # masked_index 0 reads as padding (the quirk)
        return torch.where(masked, self.mask_token, item_seq), trained

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        """Masked-item CE on the history; batch.target / targets are not used."""
        seq, trained = self.mask_items(batch.item_seq, batch.lengths)
        self.last_loss_terms = trained.sum()  # the mean below is over these (distributed.py)
        h = self.forward(seq)[trained]  # (N, D)
        if h.size(0) == 0:
            return self.output_bias.sum() * 0.0  # no trained slot in this batch
        # = F.cross_entropy(self.item_scores(h), ...), in chunks past the memory budget
        return chunked_cross_entropy(h, self.item_embedding.weight[: self.n_items],
                                     batch.item_seq[trained], self.output_bias)

    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        return {"hidden_size": 64, "n_layers": 1, "n_heads": 1, **cls.dropout_overrides(dropout)}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        return {"hidden_dropout_prob": p, "attn_dropout_prob": p}
