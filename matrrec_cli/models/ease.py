"""EASE: a closed-form linear item-item model (Embarrassingly Shallow AutoEncoder).

Steck, "Embarrassingly shallow autoencoders for sparse data", WWW 2019.

Definition. X is the binary user x item matrix of every user's known part (see pop.py: the
training part for validation, plus the valid item for the test). With P = (X^T X + l2 I)^-1,
    B = I - P diagMat(1 / diag(P)),  i.e. B_ij = -P_ij / P_jj off the diagonal, B_jj = 0,
the minimiser of ||X - XB||^2 + l2 ||B||^2 subject to diag(B) = 0. The score of the items after a
history is x B, x the binary vector of the items in the scored history (the last max_len). It is
not sequential: the order inside the history does not matter.

B is dense n_items x n_items, so EASE refuses catalogues above MAX_ITEMS (20,000): fitting holds
X^T X and its inverse in float64 (2 x 3.2 GB at 20k items) and the float32 buffer B in best.pt
takes 1.6 GB; Health (18.5k items) fits, Electronics (63k: 32 GB per float64 matrix) does not.
The inversion is O(n_items^3): about a second at ml-100k's 1.35k items, minutes at 20k on a CPU.
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
from matrrec_cli.models.sr import CountScorer, ScorerConfig, known_user_items

MAX_ITEMS = 20_000  # dense n x n: see the module docstring for the memory this takes


@dataclasses.dataclass
class EASEConfig(ScorerConfig):
    l2: float = 500.0  # lambda, the L2 penalty on B (Steck's ML-20M value is 500)


class EASE(CountScorer):
    Config = EASEConfig
    data_buffers = ("weights",)
    grid: ClassVar[dict[str, list[Any]]] = {"l2": [10.0, 50.0, 100.0, 500.0, 1000.0]}

    def __init__(self, *, n_items: int, max_len: int, config: EASEConfig) -> None:
        if n_items - 1 > MAX_ITEMS:
            raise MatrrecError(
                f"ease keeps a dense item x item matrix and allows at most {MAX_ITEMS} items "
                f"(~{MAX_ITEMS ** 2 * 8 / 1e9:.1f} GB per float64 copy); this catalogue has "
                f"{n_items - 1} ({(n_items - 1) ** 2 * 8 / 1e9:.0f} GB). Use itemknn or sknn.")
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        # (0, 0) until fitted: the n x n table is only allocated by fit_data / a state_dict
        self.register_buffer("weights", torch.zeros(0, 0))  # (n_items, n_items) B

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        super().fit_data(items, offsets, split=split)
        n = self.n_items
        known = known_positions(offsets, held_out(self.config, split))
        user, item = known_user_items(items, offsets, known, n)
        x = sp.csr_matrix((np.ones(len(user)), (user, item)), shape=(len(offsets) - 1, n))
        gram = (x.T @ x).toarray()  # (n, n) float64 X^T X, exact counts
        gram[np.diag_indices(n)] += self.config.l2
        try:
            p = np.linalg.inv(gram)  # (n, n) P
        except np.linalg.LinAlgError:
            raise MatrrecError(f"ease: X^T X + l2 I is singular at l2={self.config.l2}; "
                               "use l2 > 0") from None
        del gram  # at most two n x n float64 arrays at a time
        p /= -np.diag(p).copy()[None, :]  # in place: B_ij = -P_ij / P_jj
        p[np.diag_indices(n)] = 0.0
        self._set(weights=p.astype(np.float32))

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(item_seq.size(1), device=item_seq.device) < lengths[:, None]
        x = torch.zeros(item_seq.size(0), self.n_items, device=item_seq.device)
        x.scatter_(1, item_seq * mask, 1.0)  # (B, n_items) binary history
        x[:, 0] = 0  # padding
        if self.weights.numel() == 0:
            return torch.zeros_like(x, dtype=torch.float64)  # not fitted: no scores
        return (x @ self.weights).double()  # (B, n_items) x B
