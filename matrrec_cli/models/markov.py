"""First-order Markov chain: score next items by how often they followed the user's last item.

`fit_data` counts transitions (item_t -> item_t+1) and item popularity inside the part of every
sequence known before the split's target (see pop.py: training part for validation, plus the
valid item for the test). Scores are transition count + popularity / (max pop + 1):
the fraction is below 1, so popularity only breaks ties between equal counts (and ranks items
that never followed the last item). The transition table is stored sparsely as CSR buffers
(row pointers, columns, counts): Electronics' 63k x 63k dense table would need 16 GB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from matrrec_cli.data.split import known_positions
from matrrec_cli.models.base import gather_last
from matrrec_cli.models.pop import Pop, PopConfig, held_out


@dataclasses.dataclass
class MarkovConfig(PopConfig):
    popularity_tie_break: bool = True  # False: ties between equal counts stay ties


class Markov(Pop):
    Config = MarkovConfig

    def __init__(self, *, n_items: int, max_len: int, config: MarkovConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        self.register_buffer("trans_rows", torch.zeros(n_items + 1, dtype=torch.int64))  # CSR
        self.register_buffer("trans_cols", torch.zeros(0, dtype=torch.int64))  # (nnz,)
        self.register_buffer("trans_counts", torch.zeros(0))  # (nnz,)

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        super().fit_data(items, offsets, split=split)
        known = known_positions(offsets, held_out(self.config, split))
        src = np.flatnonzero(known[:-1] & known[1:])  # both ends known
        # consecutive known positions always belong to one user: users are separated by their
        # held-out item(s)
        pair = items[src] * self.n_items + items[src + 1]
        keys, counts = np.unique(pair, return_counts=True)
        rows, cols = keys // self.n_items, keys % self.n_items
        self.trans_rows = torch.from_numpy(
            np.searchsorted(rows, np.arange(self.n_items + 1)).astype(np.int64))
        self.trans_cols = torch.from_numpy(cols.astype(np.int64))
        self.trans_counts = torch.from_numpy(counts.astype(np.float32))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the table's size depends on the data: take the stored shapes before copying
        for name in ("trans_cols", "trans_counts"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = gather_last(item_seq.unsqueeze(-1), lengths).squeeze(-1)  # (B,) last item
        start, stop = self.trans_rows[last], self.trans_rows[last + 1]
        n = stop - start  # (B,) transitions out of each last item
        row = torch.repeat_interleave(torch.arange(len(last), device=last.device), n)
        first = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        pos = torch.arange(int(n.sum()), device=last.device) - first + \
            torch.repeat_interleave(start, n)
        scores = torch.zeros(len(last), self.n_items, device=last.device)
        scores[row, self.trans_cols[pos]] = self.trans_counts[pos]
        if self.config.popularity_tie_break:
            scores += self.popularity / (self.popularity.max() + 1)
        return scores  # (B, n_items)

    def full_sort_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.seq_repr(item_seq, lengths)
