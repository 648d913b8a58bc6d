"""Most-popular baseline: every user gets the items ranked by how often they occur in training.

No gradient training: `fit_data(..., split=...)` counts what is known before that split's target:
for validation the training part of every sequence (all but the last two items), for the test
also the valid item (all but the last one), since the valid interaction is part of every test
history. This is how the published reference points of these data were computed (ml-100k pop
NDCG@10 0.0230, Musical 0.0420); `test_counts_valid_item=false` counts the training part only.
The target being scored is never counted. The counts are buffers, so best.pt (the test state)
holds them like any model's weights.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from matrrec_cli.data.split import known_positions
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import SeqBatch, SequentialRecommender


@dataclasses.dataclass
class PopConfig:
    test_counts_valid_item: bool = True  # the test state also counts each user's valid item


def held_out(config: PopConfig, split: str) -> int:
    if split not in ("valid", "test"):
        raise MatrrecError(f"split must be valid or test, not {split!r}")
    return 1 if split == "test" and config.test_counts_valid_item else 2


class Pop(SequentialRecommender):
    Config = PopConfig
    trainable: ClassVar[bool] = False
    supports_all_objective: ClassVar[bool] = False  # nothing trains, so no training objective

    def __init__(self, *, n_items: int, max_len: int, config: PopConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        self.register_buffer("popularity", torch.zeros(n_items))  # (n_items,) training counts

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        """Count item occurrences known before `split`'s targets (CSR items/offsets)."""
        known = known_positions(offsets, held_out(self.config, split))
        counts = np.bincount(items[known], minlength=self.n_items)
        self.popularity.copy_(torch.from_numpy(counts[: self.n_items]).float())

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(item_seq.size(0), -1)  # (B, n_items)

    def full_sort_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.seq_repr(item_seq, lengths).clone()

    def calculate_loss(self, batch: SeqBatch) -> torch.Tensor:
        raise MatrrecError(f"{type(self).__name__} is count-based and has no training loss")
