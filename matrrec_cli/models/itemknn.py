"""Item-kNN on the last item: score candidates by their cosine similarity to the last item.

Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001; the
session-based form (neighbours of the current item only) is session-rec's `ItemKNN`
(Hidasi et al. 2016's baseline; Ludewig & Jannach 2018).

Definition. Items are binary vectors over users, built from every user's known part (see pop.py:
the training part for validation, plus the valid item for the test); U_a = the users whose known
part holds a. sim(a, b) = |U_a ∩ U_b| / sqrt(|U_a| |U_b|) for b != a (an item is not its own
neighbour: sim(a, a) = 1 would rank the last item first). Each item keeps its `neighbors` most
similar items (ties: lower id first; any value >= the number of items keeps all of them) and the
score of b after a history is sim(last item, b), 0 outside the kept neighbours. session-rec's
ItemKNN also shrinks the cosine (lambda 20, alpha 0.5); this is the plain cosine.

The similarities are computed sparsely (scipy X^T X over co-occurring pairs only) and stored as
CSR buffers: at most n_items x neighbors entries (6.3M for Electronics at 100, ~100 MB).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from matrrec_cli.data.split import known_positions
from matrrec_cli.models.base import gather_last
from matrrec_cli.models.pop import held_out
from matrrec_cli.models.sr import (
    CountScorer,
    ScorerConfig,
    gather_rows,
    known_user_items,
    row_pointers,
)

ALL = 1_000_000_000  # `neighbors` value meaning "keep every neighbour"


@dataclasses.dataclass
class ItemKNNConfig(ScorerConfig):
    neighbors: int = 100  # neighbours kept per item (session-rec's n_sims); >= n_items: all


class ItemKNN(CountScorer):
    Config = ItemKNNConfig
    data_buffers = ("sim_cols", "sim_values")
    grid: ClassVar[dict[str, list[Any]]] = {"neighbors": [20, 50, 100, ALL]}

    def __init__(self, *, n_items: int, max_len: int, config: ItemKNNConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        self.register_buffer("sim_rows", torch.zeros(n_items + 1, dtype=torch.int64))  # CSR
        self.register_buffer("sim_cols", torch.zeros(0, dtype=torch.int64))  # (nnz,)
        self.register_buffer("sim_values", torch.zeros(0, dtype=torch.float64))  # (nnz,)

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        super().fit_data(items, offsets, split=split)
        n = self.n_items
        known = known_positions(offsets, held_out(self.config, split))
        user, item = known_user_items(items, offsets, known, n)
        x = sp.csr_matrix((np.ones(len(user), dtype=np.int64), (user, item)),
                          shape=(len(offsets) - 1, n))  # (U, n) binary
        co = (x.T @ x).tocoo()  # (n, n) |U_a ∩ U_b|, co-occurring pairs only
        count = np.bincount(item, minlength=n).astype(np.float64)  # (n,) |U_a|
        off = co.row != co.col
        a, b = co.row[off].astype(np.int64), co.col[off].astype(np.int64)
        sim = co.data[off] / np.sqrt(count[a] * count[b])
        order = np.lexsort((b, -sim, a))  # per item a: most similar first, ties by lower id
        a, b, sim = a[order], b[order], sim[order]
        rank = np.arange(len(a)) - row_pointers(a, n)[a]  # 0 = a's nearest neighbour
        keep = rank < self.config.neighbors
        a, b, sim = a[keep], b[keep], sim[keep]
        self._set(sim_rows=row_pointers(a, n), sim_cols=b, sim_values=sim)

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = gather_last(item_seq.unsqueeze(-1), lengths).squeeze(-1)  # (B,) last item
        return gather_rows(self.sim_rows, self.sim_cols, self.sim_values, last,
                           self.n_items)  # (B, n_items) sim(last, b)
