"""The leave-one-out protocol: users' chronological items, and the samples of each split.

Every user's chronological items sit in one flat array with CSR offsets. A sample is a pair of
indices (a, b) into that array: the history is items[a:b] (at most L items, the most recent ones)
and, for the "prefix" objective, the target is items[b]. Samples are numpy index arrays built
without any per-sample Python object (numpy only; batching into tensors is train/samples.py).

Leave-one-out split of a user with items s_1..s_n:
  train targets s_2..s_{n-2}, valid (s_1..s_{n-2} -> s_{n-1}), test (s_1..s_{n-1} -> s_n),
so the test history contains the valid item. Users with fewer than MIN_ITEMS (3) items cannot be
split and are left out (never the case on 5-core data).

Shuffle test (`shuffle_history`, Klenitskiy et al., RecSys 2024): every user's items before the
valid target are put in a seeded random order for training and validation, and the test history is
that order with the valid item inserted at a random place; the two targets stay where they are. A
model that scores as well on shuffled histories does not use their order.

Objective "all" (one row per window instead of one per target): a row is inputs items[a:b] and
targets items[a+1:b+1], i.e. the next item at every position. A user whose train targets do not
fit in one row of L positions gets several rows: windows of L targets tiled backwards from the most
recent train target, so every train target is trained on exactly once; inside a window the history
starts at the window's first item (the oldest window starts at s_1, like "prefix"). Targets in a
later window therefore see up to L-1 fewer items of context than under "prefix".
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from matrrec_cli.errors import MatrrecError

MIN_ITEMS = 3  # a train target, the valid item and the test item: the fewest a split needs


@dataclasses.dataclass(frozen=True)
class Sequences:
    """All users' chronological items in CSR form."""

    items: np.ndarray  # (N,) int64, item ids 1..n_items-1
    offsets: np.ndarray  # (U+1,) int64, user u's items are items[offsets[u]:offsets[u+1]]
    users: np.ndarray  # (U,) int64, the user id of each CSR row
    n_items: int  # real items + 1 (padding id 0), what models take

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def build_sequences(df: pd.DataFrame, *, n_items: int | None = None) -> Sequences:
    """CSR sequences from a (user, item, timestamp) frame whose rows are chronological per user.

    The stable sort by user keeps each user's rows in the order given (the prepared data already
    holds the (user, float32 time, file row) order of protocol §2.5).
    """
    missing = {"user", "item"} - set(df.columns)
    if missing:
        raise MatrrecError(f"interactions lack column(s) {', '.join(sorted(missing))}")
    user = df["user"].to_numpy(dtype=np.int64)
    item = df["item"].to_numpy(dtype=np.int64)
    if len(item) == 0:
        raise MatrrecError("the interaction table is empty")
    if item.min() < 1:
        raise MatrrecError("item ids must be 1..n (0 is the padding id)")
    order = np.argsort(user, kind="stable")
    user, item = user[order], item[order]
    users, counts = np.unique(user, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(item.max()) + 1 if n_items is None else n_items
    if item.max() >= n:
        raise MatrrecError(f"item id {int(item.max())} does not fit n_items={n}")
    return Sequences(items=item, offsets=offsets, users=users, n_items=n)


@dataclasses.dataclass(frozen=True)
class Samples:
    """Index pairs: history items[a:b]; target items[b] ("prefix") or items[a+1:b+1] ("all")."""

    a: np.ndarray  # (S,) int64
    b: np.ndarray  # (S,) int64
    user: np.ndarray  # (S,) int64 user id of each sample
    start: np.ndarray  # (S,) int64 offset of the user's first item (for history masking)

    def __len__(self) -> int:
        return len(self.b)

    @property
    def lengths(self) -> np.ndarray:
        """(S,) history length of each sample."""
        return self.b - self.a

    def take(self, idx: np.ndarray) -> Samples:
        return Samples(a=self.a[idx], b=self.b[idx], user=self.user[idx], start=self.start[idx])


@dataclasses.dataclass(frozen=True)
class SplitData:
    """The leave-one-out split of protocol §2.7 for one max_len and objective."""

    seqs: Sequences
    train: Samples
    valid: Samples
    test: Samples
    max_len: int
    objective: str
    dropped_users: int  # users with < 3 items, left out
    test_seqs: Sequences | None = None  # shuffle test: the test histories' own order

    def sequences(self, split: str) -> Sequences:
        """The items the samples of `split` (train, valid or test) index."""
        return self.test_seqs if split == "test" and self.test_seqs is not None else self.seqs


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated aranges [starts[i], stops[i]) and the row i of each element, vectorised."""
    counts = np.maximum(stops - starts, 0)
    row = np.repeat(np.arange(len(starts)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(counts.sum()) - np.repeat(first, counts) + np.repeat(starts, counts)
    return pos.astype(np.int64), row


def shuffle_histories(seqs: Sequences, *, seed: int) -> tuple[Sequences, Sequences]:
    """The shuffle test's two orders of every user's items, drawn from `seed`: (train and valid,
    test). The first puts s_1..s_{n-2} in random order before s_{n-1}, s_n; the second inserts
    s_{n-1} at a uniformly random place among those, so each is a uniform permutation of the
    history its split sees, and the test history extends the one the model was trained on.
    Users too short to split keep their order."""
    lo, hi = seqs.offsets[:-1], seqs.offsets[1:]
    n_user = hi - lo
    row = np.repeat(np.arange(len(lo)), n_user)
    pos = np.arange(len(seqs.items)) - lo[row]  # position within the user
    n = n_user[row]
    ok = n >= MIN_ITEMS
    rng = np.random.default_rng(seed)
    # keys in [0, 1) shuffle the history; the two targets (keys >= 1) stay last, in order
    key = np.where(ok & (pos < n - 2), rng.random(len(pos)), pos + 1.0)
    train = seqs.items[np.lexsort((key, row))]
    # the valid item goes before the r-th shuffled item, r uniform in 0..n-2 (n-2: stays last)
    r = np.floor(rng.random(len(lo)) * np.maximum(n_user - 1, 1))[row]
    tkey = np.where(ok & (pos == n - 2), r - 0.5, pos.astype(np.float64))
    test = train[np.lexsort((tkey, row))]
    return (dataclasses.replace(seqs, items=train), dataclasses.replace(seqs, items=test))


def split(seqs: Sequences, *, max_len: int, objective: str = "prefix",
          test_seqs: Sequences | None = None) -> SplitData:
    """Leave-one-out samples with most-recent-`max_len` histories (protocol §2.6–2.7); the test
    samples index `test_seqs` where given (the shuffle test), else `seqs`."""
    if max_len < 1:
        raise MatrrecError(f"max_len must be at least 1, not {max_len}")
    if objective not in ("prefix", "all"):
        raise MatrrecError(f"objective must be prefix or all, not {objective!r}")
    lo, hi = seqs.offsets[:-1], seqs.offsets[1:]
    ok = (hi - lo) >= MIN_ITEMS
    lo, hi, users = lo[ok], hi[ok], seqs.users[ok]
    if len(users) == 0:
        raise MatrrecError(f"no user has the {MIN_ITEMS} interactions a leave-one-out split needs")

    def eval_samples(b: np.ndarray) -> Samples:
        return Samples(a=np.maximum(lo, b - max_len), b=b, user=users, start=lo)

    valid, test = eval_samples(hi - 2), eval_samples(hi - 1)
    train = _train_samples(lo, hi - 3, users, max_len=max_len, objective=objective)
    return SplitData(seqs=seqs, train=train, valid=valid, test=test, max_len=max_len,
                     objective=objective, dropped_users=int((~ok).sum()), test_seqs=test_seqs)


def _train_samples(lo: np.ndarray, last: np.ndarray, users: np.ndarray, *, max_len: int,
                   objective: str) -> Samples:
    """Training samples of the targets lo+1..last of each user (`last` inclusive)."""
    if objective == "prefix":
        # one sample per target b in [lo+1, last]; history is the most recent L items
        b, row = _ranges(lo + 1, last + 1)
        a = np.maximum(lo[row], b - max_len)
    else:
        # windows of max_len targets tiled back from the last target (see module doc)
        n_targets = np.maximum(last - lo, 0)
        n_windows = -(-n_targets // max_len)  # ceil
        w, row = _ranges(np.zeros_like(n_windows), n_windows)  # window index within the user
        b = last[row] - w * max_len  # index of the window's last target
        a = np.maximum(lo[row], b - max_len)
        b = b.astype(np.int64)
    return Samples(a=a, b=b, user=users[row], start=lo[row])


def refit_samples(data: SplitData) -> Samples:
    """The training samples of `data` with each user's valid target added (the refit option:
    train again on everything known before the test target)."""
    return _train_samples(data.valid.start, data.valid.b, data.valid.user,
                          max_len=data.max_len, objective=data.objective)


def known_positions(offsets: np.ndarray, held_out: int) -> np.ndarray:
    """Boolean mask over the flat item array: True except for the last `held_out` items of each
    user (2 before validation, 1 before the test); users with fewer than 3 items are left out
    of the split and contribute nothing."""
    n = int(offsets[-1])
    lo, hi = offsets[:-1], offsets[1:]
    ok = (hi - lo) >= MIN_ITEMS
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, lo[ok], 1)
    np.add.at(diff, hi[ok] - held_out, -1)
    return np.cumsum(diff[:-1]) > 0


def history_mask_indices(data: SplitData, samples: Samples, *, split: str
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of every item each sample's user saw before its target (full history,
    not only the last L), excluding the target item itself so a repeat stays rankable."""
    items = data.sequences(split).items
    pos, row = _ranges(samples.start, samples.b)
    item = items[pos]
    keep = item != items[samples.b][row]
    return row[keep], item[keep]
