"""Leave-one-out split, truncation, padding and the two objectives, against a brute-force
per-user reference (protocol §2.6–2.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import synthetic_interactions

from matrrec_cli.data.split import build_sequences, history_mask_indices, split
from matrrec_cli.errors import MatrrecError
from matrrec_cli.train.samples import make_batch


def _by_user(df: pd.DataFrame) -> dict[int, list[int]]:
    return {int(u): g["item"].tolist() for u, g in df.groupby("user", sort=True)}


def _reference_prefix(seqs: dict[int, list[int]], L: int):
    train, valid, test = [], [], []
    for u, s in seqs.items():
        n = len(s)
        for j in range(1, n - 2):  # 0-based targets s[1]..s[n-3]
            train.append((u, s[max(0, j - L):j], s[j]))
        valid.append((u, s[max(0, n - 2 - L):n - 2], s[n - 2]))
        test.append((u, s[max(0, n - 1 - L):n - 1], s[n - 1]))
    return train, valid, test


def _rows(data, samples, objective="prefix"):
    b = make_batch(data, samples, split="train", objective=objective)
    seq, lengths = b.item_seq.numpy(), b.lengths.numpy()
    out = []
    for i in range(len(samples)):
        assert (seq[i, lengths[i]:] == 0).all()  # right padding
        assert seq.shape[1] == data.max_len  # always padded to L
        hist = seq[i, :lengths[i]].tolist()
        tgt = b.target[i].item() if objective == "prefix" else b.targets[i].numpy()
        out.append((int(samples.user[i]), hist, tgt))
    return out


@pytest.mark.parametrize("L", [1, 3, 8, 50])
def test_prefix_samples_match_brute_force(L: int) -> None:
    df = synthetic_interactions(n_users=30, min_len=3, max_len=20)
    data = split(build_sequences(df), max_len=L, objective="prefix")
    train, valid, test = _reference_prefix(_by_user(df), L)
    assert sorted(_rows(data, data.train)) == sorted(train)
    assert _rows(data, data.valid) == valid
    assert _rows(data, data.test) == test


def test_split_sizes_and_test_history_contains_valid_item() -> None:
    df = synthetic_interactions(n_users=25, min_len=5)
    data = split(build_sequences(df), max_len=50)
    assert len(data.train) == len(df) - 3 * 25  # protocol §2.7: inter - 3 users
    v, t = make_batch(data, data.valid, split="valid"), make_batch(data, data.test, split="test")
    last = t.item_seq[np.arange(25), t.lengths - 1]
    assert (last == v.target).all()


@pytest.mark.parametrize("L", [1, 2, 4, 7, 100])
def test_all_objective_covers_each_train_pair_once(L: int) -> None:
    """Every (user, target position) of prefix appears exactly once in the "all" windows, with
    the target equal to the next item after the window's history at that position."""
    df = synthetic_interactions(n_users=20, min_len=3, max_len=25)
    seqs = build_sequences(df)
    data = split(seqs, max_len=L, objective="all")
    prefix = split(seqs, max_len=L, objective="prefix")
    b = make_batch(data, data.train, split="train", objective="all")
    seen = []
    for i in range(len(data.train)):
        n = int(b.lengths[i])
        assert (b.targets[i, n:] == 0).all()
        assert (b.targets[i, :n] > 0).all()
        for t in range(n):
            pos = int(data.train.a[i]) + t + 1  # flat index of the target
            assert b.targets[i, t] == seqs.items[pos]
            assert b.item_seq[i, t] == seqs.items[pos - 1]
            seen.append(pos)
    assert sorted(seen) == sorted(prefix.train.b.tolist())
    assert len(data.train) <= len(prefix.train)
    # short users: one row per user, identical histories to prefix at every position
    if L == 100:
        assert len(data.train) == len(_by_user(df)) - (df.groupby("user").size() < 4).sum()


def test_order_within_user_is_kept_and_users_grouped() -> None:
    df = pd.DataFrame({"user": [2, 1, 2, 1, 1, 2], "item": [5, 1, 6, 2, 3, 7],
                       "timestamp": [0] * 6})
    seqs = build_sequences(df)
    assert seqs.users.tolist() == [1, 2]
    assert seqs.items.tolist() == [1, 2, 3, 5, 6, 7]


def test_short_users_are_dropped_and_empty_is_an_error() -> None:
    df = pd.DataFrame({"user": [1, 1, 2, 2, 2], "item": [1, 2, 3, 4, 5], "timestamp": 0})
    data = split(build_sequences(df), max_len=5)
    assert data.dropped_users == 1
    assert data.valid.user.tolist() == [2]
    with pytest.raises(MatrrecError):
        split(build_sequences(df[df.user == 1]), max_len=5)


def test_history_mask_covers_full_history_but_not_the_target() -> None:
    df = pd.DataFrame({"user": 1, "item": [4, 5, 4, 6, 7, 8], "timestamp": range(6)})
    data = split(build_sequences(df), max_len=2)
    row, item = history_mask_indices(data, data.test, split="test")  # target 8, history 4 5 4 6 7
    assert sorted(set(item.tolist())) == [4, 5, 6, 7]
    assert (row == 0).all()
    df2 = pd.DataFrame({"user": 1, "item": [4, 5, 6, 4], "timestamp": range(4)})
    d2 = split(build_sequences(df2), max_len=2)
    # the target 4 was seen: it stays rankable
    _, item2 = history_mask_indices(d2, d2.test, split="test")
    assert 4 not in item2.tolist()
