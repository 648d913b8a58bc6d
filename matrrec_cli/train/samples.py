"""Batches from the leave-one-out samples (data/split.py): right-padded histories as tensors, and
each epoch's batch order (RecBole's loader, or length-bucketed)."""


from __future__ import annotations

import numpy as np
import torch

from matrrec_cli.data.split import Samples, SplitData
from matrrec_cli.models.base import SeqBatch


def _gather(
    items: np.ndarray, a: np.ndarray, b: np.ndarray, width: int, shift: int = 0
) -> np.ndarray:
    """(S, width) matrix of items[a+shift+j] for j < b-a, right-padded with 0."""
    j = np.arange(width)[None, :]  # (1, W)
    idx = a[:, None] + shift + j  # (S, W)
    valid = j < (b - a)[:, None]
    return np.where(valid, items[np.minimum(idx, len(items) - 1)], 0)


def make_batch(data: SplitData, samples: Samples, *, split: str, objective: str = "prefix",
               trim: bool = False, width: int | None = None) -> SeqBatch:
    """The SeqBatch for `samples`: right-padded (B, W) histories, W = L by default (§2.6).

    objective "prefix" (and evaluation) sets `target` = items[b]; "all" sets `targets`, the next
    item at every position of the row (0 past the row's length). `trim` drops the trailing
    padding columns past trimmed_width, for models that ignore them (bucket_by_length). `split`
    names the samples' split (their items differ under the shuffle test). `width` sets W (a
    rank's rows of a trimmed global batch keep the global batch's width).
    """
    items = data.sequences(split).items
    L = width or (trimmed_width(samples, data.max_len) if trim else data.max_len)
    seq = _gather(items, samples.a, samples.b, L)  # (B, W)
    batch = SeqBatch(item_seq=torch.from_numpy(seq),
                     lengths=torch.from_numpy(samples.lengths))
    if objective == "all":
        batch.targets = torch.from_numpy(_gather(items, samples.a, samples.b, L, shift=1))
    else:
        batch.target = torch.from_numpy(items[samples.b])
    return batch


def trimmed_width(samples: Samples, max_len: int) -> int:
    """The longest history of `samples` plus one padding column, at most L.

    The spare column keeps every row shorter than the array unless it really holds L items, so a
    model that tests "history fills the array" (BERT4Rec's evaluation input) sees what it would
    see at full width.
    """
    return min(max_len, int(samples.lengths.max(initial=0)) + 1)


# Batches per pool sorted by length under bucket_by_length: enough to find similar lengths, few
# enough that every region of the shuffled epoch still mixes into each pool's batches.
POOL_BATCHES = 16


def epoch_batches(n: int, batch_size: int, gen: torch.Generator, *,
                  lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Sample indices of one epoch's batches, drawn from `gen`.

    Default (RecBole's loader): consecutive slices of one permutation, last batch partial.
    With `lengths` (bucket_by_length): the permutation is cut into pools of POOL_BATCHES
    batches, each pool is sorted by history length and sliced, and the order of all batches is
    shuffled; a batch then holds similar lengths and can be trimmed to its longest. Every sample
    still appears exactly once, and only the last pool can leave a partial batch.
    """
    perm = torch.randperm(n, generator=gen).numpy()
    if lengths is None:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    batches = []
    pool = batch_size * POOL_BATCHES
    for lo in range(0, n, pool):
        part = perm[lo:lo + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=gen).numpy()
    return [batches[i] for i in order]


