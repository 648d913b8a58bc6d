"""Session-based kNN (SKNN) and its vector-multiplication variant (V-SKNN), over users.

SKNN: Jannach & Ludewig, "When recurrent neural networks meet the neighborhood for session-based
recommendation", RecSys 2017 (session-rec's `ContextKNN`). V-SKNN: Ludewig & Jannach,
"Evaluation of session-based recommendation algorithms", UMUAI 28 (2018) (session-rec's
`VMContextKNN`).

Definition. The neighbours are the users' known parts (see pop.py: the training part for
validation, plus the valid item for the test), each as a set N_u of items. The query is the
scored history (the last max_len items, as the evaluator passes it) as a set Q.
  SKNN:   sim(Q, u) = |Q ∩ N_u| / sqrt(|Q| |N_u|) (cosine of binary vectors).
  V-SKNN: sim(Q, u) = sum over q in Q ∩ N_u of w(q), the query's items weighted by recency
          (a dot product of the weighted query vector with N_u's binary vector), with
          session-rec's weightings, d = how many positions before the last item q last occurs:
            linear 1 - 0.1 d (clipped at 0: the last 10 items count), div (L - d) / L for a
            history of L items (session-rec's VMContextKNN default).
Both keep the `k` most similar users (ties: lower user row first; zero similarity adds nothing)
and score item b by the sum of the similarities of the kept users whose set holds b.
Not included from session-rec: `sample_size` (all users are candidates), V-SKNN's score decay
(`weighting_score`) and its division of the similarity by |Q| (a per-query constant, so it
changes no rank).

Self-match (a documented choice). Here, unlike session-rec's disjoint train/test sessions, the
scored user's own known part is among the neighbours, and `full_sort_scores` cannot know which
user a history belongs to. Its own set holds the whole query, so it is usually the nearest
neighbour. That leaks nothing: a split's target is never in any known part. It adds the user's
own items (which `mask_history=true` removes from the ranking, where it then only costs one of
the k places) and otherwise gives items already seen a little more weight, as every overlapping
neighbour does.

Stored as CSR buffers both ways (user -> items, item -> users) of the distinct known
(user, item) pairs: 2 x 1.7M entries for Electronics (~30 MB). Scoring is scipy.sparse on the
CPU, whatever the model's device: overlaps = Q N^T over the users that share an item with the
query only (never a dense (B, users) array), the top k per row by a sort of those pairs, then
scores = W N with W the kept similarities. Memory per batch: the candidate pairs plus the dense
(B, n_items) float64 scores the evaluator asks for.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from matrrec_cli.data.split import known_positions
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.pop import held_out
from matrrec_cli.models.sr import (
    CountScorer,
    ScorerConfig,
    known_user_items,
    row_pointers,
)


@dataclasses.dataclass
class SKNNConfig(ScorerConfig):
    k: int = 100  # neighbours (users) whose items are scored (session-rec's default)


class SKNN(CountScorer):
    """SKNN: items scored by the summed cosine similarity of the k most similar users."""

    Config = SKNNConfig
    data_buffers = ("user_rows", "user_items", "item_users")
    grid: ClassVar[dict[str, list[Any]]] = {"k": [50, 100, 200, 500]}

    def __init__(self, *, n_items: int, max_len: int, config: SKNNConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        self.register_buffer("user_rows", torch.zeros(1, dtype=torch.int64))  # (U+1,) CSR
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.int64))  # (nnz,)
        self.register_buffer("item_rows", torch.zeros(n_items + 1, dtype=torch.int64))  # CSR
        self.register_buffer("item_users", torch.zeros(0, dtype=torch.int64))  # (nnz,)

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        super().fit_data(items, offsets, split=split)
        known = known_positions(offsets, held_out(self.config, split))
        user, item = known_user_items(items, offsets, known, self.n_items)  # by user, item
        by_item = np.lexsort((user, item))
        self._set(user_rows=row_pointers(user, len(offsets) - 1), user_items=item,
                  item_rows=row_pointers(item[by_item], self.n_items),
                  item_users=user[by_item])

    # --- what V-SKNN changes ----------------------------------------------------------------
    def query_weights(self, lengths: np.ndarray, width: int) -> np.ndarray:
        """The weight (B, width) of each history position in the query: SKNN's set, all 1."""
        return np.ones((len(lengths), width))

    def similarity(self, overlap: np.ndarray, q_size: np.ndarray, n_size: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        """Similarity of each (query, user) pair that shares an item, from the overlap
        sum of query weights over Q ∩ N_u, |Q|, |N_u| and the query's history length (all (P,)).
        SKNN: the cosine |Q ∩ N_u| / sqrt(|Q| |N_u|)."""
        return overlap / np.sqrt(q_size * n_size)

    # --- shared ---------------------------------------------------------------------------
    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n, n_users = self.n_items, len(self.user_rows) - 1
        if n_users == 0:  # not fitted
            return torch.zeros(item_seq.size(0), n, dtype=torch.float64, device=item_seq.device)
        # scipy on the CPU: only the (query, user) pairs that share an item are ever formed
        seq, lens = item_seq.cpu().numpy(), lengths.cpu().numpy()
        users = sp.csr_matrix((np.ones(len(self.user_items)), self.user_items.cpu().numpy(),
                               self.user_rows.cpu().numpy()), shape=(n_users, n))  # (U, n)
        users_t = sp.csr_matrix((np.ones(len(self.item_users)), self.item_users.cpu().numpy(),
                                 self.item_rows.cpu().numpy()), shape=(n, n_users))  # (n, U)
        n_size = np.diff(users.indptr).astype(np.float64)  # (U,) |N_u|
        # the query: each distinct history item with the weight of its latest occurrence
        # (session-rec's position map), as a sparse (B, n) matrix
        weight = self.query_weights(lens, seq.shape[1])  # (B, width)
        row, pos = np.nonzero((np.arange(seq.shape[1]) < lens[:, None]) & (seq > 0) &
                              (weight > 0))  # row-major: later positions last
        key = row * n + seq[row, pos]
        order = np.lexsort((pos, key))
        key, w = key[order], weight[row, pos][order]
        latest = np.append(key[1:] != key[:-1], True)
        key, w = key[latest], w[latest]
        query = sp.csr_matrix((w, (key // n, key % n)), shape=(len(seq), n))  # (B, n)
        q_size = np.bincount(key // n, minlength=len(seq)).astype(np.float64)  # (B,) |Q|
        overlap = (query @ users_t).tocoo()  # (B, U), candidates sharing an item only
        r, u = overlap.row.astype(np.int64), overlap.col.astype(np.int64)
        sim = self.similarity(overlap.data, q_size[r], n_size[u], lens[r].astype(np.float64))
        # the k most similar users per row, ties to the lower user row
        order = np.lexsort((u, -sim, r))
        r, u, sim = r[order], u[order], sim[order]
        rank = np.arange(len(r)) - np.searchsorted(r, r)  # 0 = the row's nearest user
        keep = (rank < self.config.k) & (sim > 0)
        near = sp.csr_matrix((sim[keep], (r[keep], u[keep])), shape=(len(seq), n_users))
        scores = (near @ users).toarray()  # (B, n) sum of the kept users' similarities
        return torch.from_numpy(scores).to(item_seq.device)


@dataclasses.dataclass
class VSKNNConfig(SKNNConfig):
    weighting: str = "linear"  # the query's recency weights: linear or div (session-rec's)


class VSKNN(SKNN):
    """V-SKNN: SKNN with the history's items weighted by recency (dot-product similarity)."""

    Config = VSKNNConfig
    grid: ClassVar[dict[str, list[Any]]] = {"k": [50, 100, 200, 500],
                                            "weighting": ["linear", "div"]}

    def __init__(self, *, n_items: int, max_len: int, config: VSKNNConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        if config.weighting not in ("linear", "div"):
            raise MatrrecError(f"vsknn: weighting must be linear or div, not "
                               f"{config.weighting!r}")

    def query_weights(self, lengths: np.ndarray, width: int) -> np.ndarray:
        """Recency weights times 10 (linear) or times L (div): integers, so the overlaps are
        exact sums; `similarity` divides the factor out."""
        pos = np.arange(width)[None, :]  # (1, width)
        d = lengths[:, None] - 1 - pos  # (B, width) distance to the last item
        # linear: 10 (1 - 0.1 d), at least 0; div: L (L - d) / L = the 1-based position
        w = np.maximum(10 - d, 0) if self.config.weighting == "linear" else pos + 1
        return np.broadcast_to(w, d.shape).astype(np.float64)

    def similarity(self, overlap: np.ndarray, q_size: np.ndarray, n_size: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        """The weighted overlap: sum of the query's recency weights over Q ∩ N_u."""
        return overlap / (10.0 if self.config.weighting == "linear" else lengths)
