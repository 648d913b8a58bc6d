"""Sequential rules (SR): score next items by the weighted rules a -> b mined from item pairs.

Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", UMUAI 28 (2018),
as implemented in session-rec's `SequentialRules` (algorithms/baselines/sr.py).

Definition. In every user's known part (see pop.py: the training part for validation, plus the
valid item for the test) each pair (a at position i, b at position j > i) with distance
d = j - i <= `window` adds w(d) to the rule a -> b. The score of a candidate b after a history is
the weight of the rule (last item -> b): like session-rec, SR looks at the last item only, so
`window` = 1 is the first-order Markov chain of markov.py (same ranks, tested). Pairs a == b
count too, as in session-rec (and markov). Weightings, session-rec's names and formulas:
  div 1/d (session-rec's default, ours too), same 1, linear 1 - 0.1 d (clipped at 0: session-rec's
  goes negative past d = 10), quadratic 1/d^2, log 1/log10(d + 1.7).
session-rec's default `pruning` (keep each item's 20 best rules) is not applied: every rule stays
(ranks past 20 only matter for the @20 metrics anyway).

The rule table is stored sparsely as CSR buffers (row pointers, columns, weights): at most
window x (number of known positions) rules, 17M for Electronics at window 10 (~270 MB).

This module also holds what the count models beyond pop/markov share (SR, item-kNN, SKNN,
V-SKNN, EASE): `CountScorer`, a Pop whose `seq_repr` is the model's own score and whose
`full_sort_scores` breaks exact ties by popularity, and the vectorised CSR row gather.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import torch

from matrrec_cli.data.split import known_positions
from matrrec_cli.errors import MatrrecError
from matrrec_cli.models.base import gather_last
from matrrec_cli.models.pop import Pop, PopConfig, held_out

# Two scores closer than this times the row's largest |score| are one tie: float sums of the same
# weights taken in another order differ in their last bits (and EASE's exact zeros come out of an
# inverse as ~1e-17), and such a tie must go to popularity, not to rounding.
TIE_RTOL = 1e-9


# --- what the count scorers share -----------------------------------------------------------
@dataclasses.dataclass
class ScorerConfig(PopConfig):
    popularity_tie_break: bool = True  # False: ties between equal scores stay ties


def popularity_tie_break(scores: torch.Tensor, popularity: torch.Tensor) -> torch.Tensor:
    """Scores (B, n) -> float32 scores that rank by score, then by popularity (lexicographic).

    markov.py adds popularity / (max pop + 1) < 1 to integer counts; these scores are not
    integers (rule weights, cosines), so each score is first replaced by its dense rank in the row
    (0 = lowest; equal scores share a level), then the fraction is added. Exact while a row's
    number of distinct scores times the largest popularity stays below 2^23 (float32).
    """
    s = scores.double()
    lo, hi = s.amin(dim=1, keepdim=True), s.amax(dim=1, keepdim=True)  # (B, 1)
    tol = TIE_RTOL * torch.maximum(hi, -lo)  # (B, 1) relative to the row's scale
    out = (popularity / (popularity.max() + 1)).float().expand_as(s).clone()  # (B, n) fraction
    row, col = torch.nonzero(s > tol, as_tuple=True) if (lo >= 0).all() else (None, None)
    if row is None or 4 * len(row) > s.numel():  # EASE's any sign, or dense rows:
        ordered, order = s.sort(dim=1)  # (B, n) ascending; dense ranks by sorting every row
        steps = torch.zeros_like(s)
        steps[:, 1:] = (ordered[:, 1:] - ordered[:, :-1] > tol).double()
        return out + torch.empty_like(s).scatter_(1, order, steps.cumsum(1)).float()
    # scores >= 0, mostly 0 (rules, neighbours): zeros are level 0 and only the others are
    # sorted, by row then value, with one sort of the key row + value / (2 row max) (its float64
    # rounding, B 2^-52, stays below TIE_RTOL / 2 for B < 2^20 rows): O(nnz log nnz) rather
    # than sorting rows of 60k items
    value = s[row, col]  # (nnz,) row-major
    order = torch.argsort(row + value / (2 * hi[row, 0]))
    row, col, value = row[order], col[order], value[order]  # (nnz,) by row, then value
    first = torch.searchsorted(row, row)  # (nnz,) where each entry's row starts
    step = torch.ones_like(value)
    step[1:] = (value[1:] - value[:-1] > tol[row[1:], 0]).double()
    step[first == torch.arange(len(row), device=row.device)] = 1  # a row's lowest: level 1
    level = step.cumsum(0)
    out[row, col] += (level - level[first] + 1).float()  # (nnz,) dense rank in the row
    return out


def gather_rows(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor | None,
                rows: torch.Tensor, n_cols: int, *, out_rows: torch.Tensor | None = None,
                weight: torch.Tensor | None = None, n_out: int | None = None) -> torch.Tensor:
    """Weighted sums of CSR rows as a dense (n_out, n_cols) float64 array:
    out[out_rows[i]] += weight[i] * M[rows[i]] for M = (indptr, indices, values) (values None:
    all ones). By default out_rows = 0..len(rows)-1, i.e. the rows themselves."""
    if out_rows is None:
        out_rows, n_out = torch.arange(len(rows), device=rows.device), len(rows)
    start = indptr[rows]
    n = indptr[rows + 1] - start  # (R,) entries of each requested row
    shift = torch.repeat_interleave(torch.stack([start - (torch.cumsum(n, 0) - n), out_rows]),
                                    n, dim=1)  # (2, nnz): one repeat for both
    pos = torch.arange(shift.size(1), device=rows.device) + shift[0]  # into indices/values
    val = torch.ones(len(pos), dtype=torch.float64, device=rows.device) if values is None \
        else values[pos].double()
    if weight is not None:
        val = val * torch.repeat_interleave(weight.double(), n)
    out = torch.zeros(int(n_out or 0) * n_cols, dtype=torch.float64, device=rows.device)
    out.index_add_(0, shift[1] * n_cols + indices[pos], val)  # flat (row, col)
    return out.view(-1, n_cols)


def row_pointers(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR row pointers (n_rows+1,) of sorted row ids."""
    return np.searchsorted(rows, np.arange(n_rows + 1)).astype(np.int64)


def known_user_items(items: np.ndarray, offsets: np.ndarray, known: np.ndarray, n_items: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user row, item) pairs of the known positions, sorted by user then item: the
    binary user x item matrix X of the known parts, as COO."""
    user = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # (N,) CSR row of each item
    keys = np.unique(user[known] * n_items + items[known])
    return keys // n_items, keys % n_items


class CountScorer(Pop):
    """A count model whose `seq_repr` is its own score (B, n_items) float64; `full_sort_scores`
    ranks by it, ties broken by popularity (pop.py) unless `popularity_tie_break` is off.
    Buffers named in `data_buffers` take their size from the data: a state_dict restores them at
    the stored size. `grid` is a small hyper-parameter grid, searched on validation by
    `matrrec tune --model NAME`."""

    Config = ScorerConfig
    data_buffers: ClassVar[tuple[str, ...]] = ()
    grid: ClassVar[dict[str, list[Any]]] = {}

    def _set(self, **arrays: np.ndarray) -> None:
        for name, a in arrays.items():
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(a)))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the tables' sizes depend on the data: take the stored shapes before copying
        for name in self.data_buffers:
            if prefix + name in state_dict:
                here = getattr(self, name)
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=here.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def full_sort_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores = self.seq_repr(item_seq, lengths)  # (B, n_items)
        if self.config.popularity_tie_break:
            return popularity_tie_break(scores, self.popularity)
        return scores.float()


# --- sequential rules -----------------------------------------------------------------------
WEIGHTINGS = {
    "div": lambda d: 1.0 / d,
    "same": lambda d: 1.0,
    "linear": lambda d: max(1.0 - 0.1 * d, 0.0),
    "quadratic": lambda d: 1.0 / (d * d),
    "log": lambda d: 1.0 / math.log10(d + 1.7),
}


@dataclasses.dataclass
class SRConfig(ScorerConfig):
    window: int = 10  # largest distance j - i of a rule (session-rec's `steps`)
    weighting: str = "div"  # w(d): div, same, linear, quadratic, log (session-rec's names)


class SR(CountScorer):
    Config = SRConfig
    data_buffers = ("rule_cols", "rule_weights")
    grid: ClassVar[dict[str, list[Any]]] = {"window": [1, 2, 3, 5, 10]}

    def __init__(self, *, n_items: int, max_len: int, config: SRConfig) -> None:
        super().__init__(n_items=n_items, max_len=max_len, config=config)
        if config.weighting not in WEIGHTINGS:
            raise MatrrecError(f"sr: weighting must be one of {', '.join(WEIGHTINGS)}, "
                               f"not {config.weighting!r}")
        self.register_buffer("rule_rows", torch.zeros(n_items + 1, dtype=torch.int64))  # CSR
        self.register_buffer("rule_cols", torch.zeros(0, dtype=torch.int64))  # (nnz,)
        self.register_buffer("rule_weights", torch.zeros(0, dtype=torch.float64))  # (nnz,)

    def fit_data(self, items: np.ndarray, offsets: np.ndarray, *, split: str) -> None:
        super().fit_data(items, offsets, split=split)
        known = known_positions(offsets, held_out(self.config, split))
        user = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # (N,)
        weight = WEIGHTINGS[self.config.weighting]
        keys, weights = [], []
        for d in range(1, min(self.config.window, len(items) - 1) + 1):  # loop over distances
            # both ends known and in one user: the 1 or 2 held-out items between two users'
            # known parts do not separate them at larger distances
            i = np.flatnonzero(known[:-d] & known[d:] & (user[:-d] == user[d:]))
            keys.append(items[i] * self.n_items + items[i + d])
            weights.append(np.full(len(i), weight(d)))
        keys_all = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        rules, inverse = np.unique(keys_all, return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(weights) if weights else None,
                            minlength=len(rules))
        keep = total > 0  # "linear" gives distance >= 10 no weight
        rules, total = rules[keep], total[keep]
        src, dst = rules // self.n_items, rules % self.n_items  # sorted by (src, dst)
        self._set(rule_rows=row_pointers(src, self.n_items), rule_cols=dst.astype(np.int64),
                  rule_weights=total.astype(np.float64))

    def seq_repr(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = gather_last(item_seq.unsqueeze(-1), lengths).squeeze(-1)  # (B,) last item
        return gather_rows(self.rule_rows, self.rule_cols, self.rule_weights, last,
                           self.n_items)  # (B, n_items) weight of rule last -> b
