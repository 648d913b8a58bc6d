"""Random sequences with a dataset's Table 1 statistics, for profiling without the real data.

Users, items and interactions come from the paper's Table 1 row in datasets.toml (padding
removed where RecBole's printed counts include it), or from the prepared dataset's metadata.
Per-user lengths are 5 + a geometric draw whose mean makes the total match the interaction
count (every user has at least the 5-core minimum; real length distributions are more skewed,
which changes how many prefix samples are short but not their count). Items are drawn from a
Zipf-like popularity (p ~ 1/rank^0.8) so embedding gradients touch a realistic mix of rows.
Time cost depends on these counts and L, not on which items are drawn, so a profile of the
synthetic data stands in for the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matrrec_cli.data.prepared import load_meta
from matrrec_cli.data.registry import dataset_names, get_dataset
from matrrec_cli.data.split import Sequences
from matrrec_cli.errors import MatrrecError

MIN_LEN = 5  # the 5-core lower bound on user history


def table1_counts(name: str, data_dir: str | Path | None = None) -> tuple[int, int, int]:
    """(users, items, interactions) of `name`: paper Table 1 row, else prepared metadata."""

    if name in dataset_names() and get_dataset(name).paper is not None:
        p = get_dataset(name).paper
        pad = 1 if p.padding_included else 0
        return p.users - pad, p.items - pad, p.inter
    if data_dir is not None and (Path(data_dir) / name / "meta.json").exists():

        m = load_meta(name, Path(data_dir))
        return int(m["n_users"]), int(m["n_items"]), int(m["n_interactions"])
    raise MatrrecError(f"--synthetic-like {name}: no Table 1 row in datasets.toml and no "
                       f"prepared data; run matrrec download {name} or pick a paper dataset")


def synthetic_sequences(users: int, items: int, interactions: int, *, seed: int = 0,
                        item_floor: int = 0) -> Sequences:
    """CSR sequences of `users` users over `items` items with about `interactions` items.

    `item_floor` > 0 draws every item at least that many times (the rest by popularity, then
    shuffled), so a k-core filter with k <= item_floor keeps the whole catalog: the shape
    survives `matrrec import` (bench/scale.py). 0 keeps the profile's draws as they were."""
    rng = np.random.default_rng(seed)
    mean_extra = max(interactions / users - MIN_LEN, 1e-9)
    lengths = MIN_LEN - 1 + rng.geometric(1.0 / (mean_extra + 1.0), size=users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    if item_floor * items > total:
        raise MatrrecError(f"{items} items drawn {item_floor} times each need {item_floor * items}"
                           f" interactions; these {users} users have {total}")
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    ids = rng.permutation(items) + 1  # popularity rank -> item id 1..items
    ranks = rng.choice(items, size=total - item_floor * items, p=pop / pop.sum())
    if item_floor:
        ranks = rng.permutation(np.concatenate([np.repeat(np.arange(items), item_floor), ranks]))
    seq = ids[ranks]
    return Sequences(items=seq.astype(np.int64), offsets=offsets,
                     users=np.arange(users, dtype=np.int64), n_items=items + 1)
