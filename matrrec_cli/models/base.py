"""The contract every model in the zoo implements.

Conventions (protocol §2, §4, §9):
* Item ids are 1..n_items-1; 0 is padding. `n_items` counts the padding id, like RecBole.
* `item_seq` is (B, L) with the history at positions 0..len-1 and right padding by 0.
* `lengths` is (B,) with 1 <= len <= L.
* Scores are over all `n_items` columns; column 0 (padding) takes part in the training softmax,
  as in RecBole, and the evaluator sets it to -inf before ranking.

Objectives (chosen by the trainer, `SeqBatch` carries what each needs):
* "prefix": one sample per prefix, cross-entropy of the representation at len-1 against `target`.
* "all": one row per user, cross-entropy at every position t < len against `targets[:, t]` (the
  next item; 0 = no target). Only for causal models (`supports_all_objective`), where the output at
  t depends on positions <= t alone, so it trains on the same (history -> next item) pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from matrrec_cli.models.chunked_loss import cross_entropy as chunked_cross_entropy


@dataclasses.dataclass
class SeqBatch:
    """A training or evaluation batch. Tensors live on the model's device."""

    item_seq: torch.Tensor  # (B, L) int64, right-padded with 0
    lengths: torch.Tensor  # (B,) int64, number of real items in each row
    target: torch.Tensor | None = None  # (B,) int64: next item after the history ("prefix")
    targets: torch.Tensor | None = None  # (B, L) int64: next item at each position ("all")
    #                                      0 = no target

    def to(self, device: torch.device | str) -> SeqBatch:
        # fields(), not astuple(): astuple deep-copies every tensor before the move
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SeqBatch(
            **{k: None if t is None else t.to(device, non_blocking=True) for k, t in values.items()}
        )


def gather_last(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """h[b, lengths[b]-1] for h of shape (B, L, D) -> (B, D)."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.size(-1))  # (B, 1, D)
    return h.gather(1, idx).squeeze(1)


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement `encode` (causal models) or override `seq_repr`.

    Subclasses define a nested `@dataclass Config` holding their hyperparameters with RecBole
    1.2.1's defaults, and construct from `(n_items=..., max_len=..., config=Config(...))`.
    """

    Config: ClassVar[type[Any]]
    #: True when the output at position t depends only on items at positions <= t.
    causal: ClassVar[bool] = True
    #: True when the model can train on every position at once (objective "all").
    supports_all_objective: ClassVar[bool] = True
    #: True when full_sort_scores ignores what lies past len-1 (extra right padding changes
    #: nothing). False for models that read pads by design (NextItNet reads position L-1; SINE
    #: has no padding mask). The contract test checks this invariance where it is True.
    right_padding_invariant: ClassVar[bool] = True
    #: False for count-based models (pop, markov): the trainer calls `fit_data(items, offsets)`
    #: once instead of running epochs of gradient steps.
    trainable: ClassVar[bool] = True

    def fit_data(self, items: Any, offsets: Any, *, split: str) -> None:
        """Take what is known from the data before `split`'s targets (CSR items/offsets). Count
        models count here; a trained model's state is its weights, so this does nothing."""

    def __init__(self, *, n_items: int, max_len: int, config: Any) -> None:
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.config = config

    # --- representations -------------------------------------------------------------------
    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-position hidden states (B, L, D). Causal models implement this."""
        raise NotImplementedError(f"{type(self).__name__} has no per-position encoder")

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The user representation (B, D): by default the encoder output at position len-1."""
        return gather_last(self.encode(item_seq, lengths), lengths)

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Scores (..., n_items) of representations h (..., D): dot product with the tied
        item embedding, as every CE model in RecBole does."""
        return h @ self.item_embedding.weight.T

    # --- the two things the trainer and evaluator call ------------------------------------
    def full_sort_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores over all items (B, n_items) for the next item after each history."""
        return self.item_scores(self.seq_repr(item_seq, lengths))

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        """Mean cross-entropy over all n_items columns (padding column included, as RecBole).
        With the tied item embedding as the output layer the logits are never materialized
        whole past a memory budget (chunked_loss.py: the same loss to float rounding)."""
        tied = type(self).item_scores is SequentialRecommender.item_scores
        sampled = getattr(self, "sampled_softmax", None)  # --set loss=sampled (the trainer's)
        if batch.targets is not None:  # objective "all"
            h = self.encode(batch.item_seq, batch.lengths)  # (B, L, D)
            mask = batch.targets > 0  # (B, L)
            if sampled is not None:
                return sampled.loss(h[mask], self.item_embedding.weight, batch.targets[mask])
            if tied:
                return chunked_cross_entropy(h[mask], self.item_embedding.weight,
                                             batch.targets[mask])
            return F.cross_entropy(self.item_scores(h[mask]), batch.targets[mask])
        assert batch.target is not None
        h = self.seq_repr(batch.item_seq, batch.lengths)  # (B, D)
        if sampled is not None:
            return sampled.loss(h, self.item_embedding.weight, batch.target)
        if tied:
            return chunked_cross_entropy(h, self.item_embedding.weight, batch.target)
        return F.cross_entropy(self.item_scores(h), batch.target)  # (B, n_items) logits

    # --- settings presets ------------------------------------------------------------------
    @classmethod
    def paper_overrides(cls, *, dropout: float) -> dict[str, Any]:
        """Config overrides of the `paper` preset: the released MaTrRec yaml (hidden 64,
        1 layer, 1 head, the dataset's dropout) applied to this model's own keys."""
        return {}

    @classmethod
    def dropout_overrides(cls, p: float) -> dict[str, Any]:
        """Config overrides that set every dropout of this model to `p` (for `--dropout`)."""
        return {}
