"""The Python API over a finished run: top-k recommendations and scores in original ids.

    import matrrec
    run = matrrec.load_run("results/runs/ml-100k/matrrec/20260101-120000-abcdef123456")
    run.metrics["test"]["ndcg@10"]
    run.recommend(["196", "186"], k=10)   # DataFrame: user, rank, item, score
    run.score([["242", "302"]])            # (1, n_items) scores, columns = run.item_ids

Everything the user sees is in the ids of the imported file (the tokens of user_map.parquet and
item_map.parquet); the internal ids 1..n (0 = padding) never leave this module.

Which history is scored:
* `split=None` (default): the user's whole known sequence (train, valid and test items), its
  last max_len items as the model's input -- a real recommendation of the next item.
* `split="test"` / `"valid"`: the history evaluation scored for that split (all but the last
  one / two items), built by the same code, so the held-out item's position in the full list is
  the rank recorded in ranks.parquet (the evaluator's tie rule included: the held-out item comes
  first among items with its exact score).

Which items are listed: padding never; with `include_history=False` (default) no item of the
history (the whole of it, not only the last max_len); with `include_history=True` the history
items are ranked as the run's evaluation ranked them: rankable, or masked when the run was
trained with mask_history=True (except the split's held-out item, as evaluation keeps it).

Count models (pop, markov, ...) count what is known before the scored items: everything for
`split=None` and `score`, the split's known part otherwise (as `matrrec evaluate` refits them).
This layer sits above train/; nothing below imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from matrrec_cli.data.prepared import prepare_command, require_prepared
from matrrec_cli.data.split import SplitData, history_mask_indices
from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.models.pop import held_out
from matrrec_cli.train import runs
from matrrec_cli.train.checkpoint import load_checkpoint, restore
from matrrec_cli.train.config import TrainConfig
from matrrec_cli.train.device import resolve_device
from matrrec_cli.train.evaluate import fit_known
from matrrec_cli.train.pipeline import load_split, model_builder
from matrrec_cli.train.samples import make_batch

Split = Literal["valid", "test"]
USER_MAP, ITEM_MAP = "user_map.parquet", "item_map.parquet"
# Users scored at once: a (B, n_items) score matrix and its stable sort stay a few hundred MB
# even with 60k items.
BATCH = 256


def _read_map(path: Path, dataset: str, data_dir: str, n: int) -> np.ndarray:
    """Tokens (original ids, as strings) by internal id - 1, checked against the data's size."""
    try:
        df = pd.read_parquet(path, columns=["id", "token"])
    except FileNotFoundError:
        raise MatrrecError(f"{path} is missing (the dataset was prepared without id maps); run "
                           f"`{prepare_command(dataset, data_dir)}` to rebuild it") from None
    except Exception as exc:  # truncated, not Parquet, columns missing
        raise MatrrecError(f"{path} is corrupt ({type(exc).__name__}); run "
                           f"`{prepare_command(dataset, data_dir)}` to rebuild it") from None
    if len(df) != n or not np.array_equal(df["id"].to_numpy(), np.arange(1, n + 1)):
        raise MatrrecError(f"{path} does not match the prepared interactions ({len(df)} ids, "
                           f"{n} expected); run `{prepare_command(dataset, data_dir)}`")
    return df["token"].astype(str).to_numpy()


def _padded(rows: Sequence[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, width) right-padded item ids and (B,) lengths: the models' input convention."""
    seq = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        seq[i, :len(r)] = r
    return torch.from_numpy(seq), torch.tensor([len(r) for r in rows], dtype=torch.int64)


def _with_room(items: np.ndarray, offsets: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Every user's items followed by `pad` padding ids: the held-out slots a count model's
    fit_data(split="test") skips, so that it counts every known interaction."""
    users = len(offsets) - 1
    out = np.zeros(len(items) + pad * users, dtype=np.int64)
    out[np.arange(len(items)) + pad * np.repeat(np.arange(users), np.diff(offsets))] = items
    return out, offsets + pad * np.arange(users + 1)


class Run:
    """A trained run loaded for recommendation: `.config`, `.metrics`, `.recommend`, `.score`.
    Build it with `load_run`."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, metrics: dict[str, Any] | None,
                 model: torch.nn.Module, data: SplitData, user_tokens: np.ndarray,
                 item_tokens: np.ndarray, device: torch.device) -> None:
        self.run_dir = run_dir
        self.config = cfg
        self.metrics = metrics  # metrics.json; None while the run is unfinished
        self.model = model
        self.data = data
        self.device = device
        self.user_ids = user_tokens  # original user id of internal id i+1
        self.item_ids = item_tokens  # original item id of internal id i+1 (= score's columns)
        self._user = {t: i + 1 for i, t in enumerate(user_tokens)}
        self._item = {t: i + 1 for i, t in enumerate(item_tokens)}
        # which split's counts a count model holds; "?": best.pt's, refitted on first use
        self._fitted: str | None = "?"

    def __repr__(self) -> str:
        return (f"Run({str(self.run_dir)!r}: {self.config.model} on {self.config.dataset}, "
                f"{len(self.user_ids)} users, {len(self.item_ids)} items)")

    # --- ids ---------------------------------------------------------------------------------
    def _internal_users(self, user_ids: Iterable[Any]) -> np.ndarray:
        return self._internal(user_ids, self._user, "user", USER_MAP)

    def _internal_items(self, items: Iterable[Any]) -> np.ndarray:
        return self._internal(items, self._item, "item", ITEM_MAP)

    def _internal(self, ids: Iterable[Any], table: dict[str, int], what: str,
                  map_file: str) -> np.ndarray:
        """Internal ids of original `ids`; an unknown one is an error naming it and the map."""
        tokens = [str(i) for i in ids]
        bad = [i for i in tokens if i not in table]
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise MatrrecError(
                f"unknown {what} id {', '.join(map(repr, bad[:3]))}{more}: not in dataset "
                f"'{self.config.dataset}' (see the token column of "
                f"{Path(self.config.data_dir) / self.config.dataset / map_file})")
        return np.array([table[i] for i in tokens], dtype=np.int64)

    # --- scoring -----------------------------------------------------------------------------
    def _fit(self, split: Split | None) -> None:
        """Give a count model the counts known before the scored items (no-op when trained)."""
        if self.model.trainable or self._fitted == split:
            return
        if split is None:  # everything known: pad each user past the slots held out at test
            seqs = self.data.sequences("test")  # the order the run used (shuffle test)
            cfg = self.model.config
            pad = held_out(cfg, "test") if hasattr(cfg, "test_counts_valid_item") else 1
            items, offsets = _with_room(seqs.items, seqs.offsets, pad)
            self.model.fit_data(items, offsets, split="test")
        else:
            fit_known(self.model, self.data, split)
        self.model.to(self.device)
        self._fitted = split

    @torch.no_grad()
    def _scores(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, n_items) float scores on the device, padding column at -inf (never a candidate)."""
        self.model.eval()
        scores = self.model.full_sort_scores(seq.to(self.device), lengths.to(self.device))
        scores = scores[:, :self.data.seqs.n_items].float()
        scores[:, 0] = -torch.inf
        return scores

    def score(self, histories: Sequence[Sequence[Any]]) -> np.ndarray:
        """Scores (n, n_items) of the next item after each history: lists of original item ids,
        oldest first, only the last max_len used. Column j is item `item_ids[j]`; nothing is
        masked (a history's own items get their scores too)."""
        rows = [self._internal_items(h)[-self.config.max_len:] for h in histories]
        for i, r in enumerate(rows):
            if len(r) == 0:
                raise UsageError(f"history {i} is empty; a sequential model needs at least one "
                                 "item to score the next one")
        self._fit(None)
        out = []
        for lo in range(0, len(rows), BATCH):
            seq, lengths = _padded(rows[lo:lo + BATCH], self.config.max_len)
            out.append(self._scores(seq, lengths)[:, 1:].cpu().numpy())
        n = len(self.item_ids)
        return np.concatenate(out) if out else np.zeros((0, n), dtype=np.float32)

    def recommend(self, user_ids: Any, k: int | None = 10, *, include_history: bool = False,
                  split: Split | None = None) -> pd.DataFrame:
        """Top-k items for each user, best first: a DataFrame (user, rank, item, score) in
        original ids, k rows per user (fewer when fewer items are left; k=None: all of them).
        Equal scores keep the item order of item_ids (the held-out item first under `split`).
        See the module docstring for `split` and `include_history`."""
        user_ids = [user_ids] if isinstance(user_ids, (str, int, np.integer)) else list(user_ids)
        if split not in (None, "valid", "test"):
            raise UsageError(f"split must be None, 'valid' or 'test', not {split!r}")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise UsageError(f"k must be a whole number of at least 1, not {k!r}")
        users = self._internal_users(user_ids)
        seqs = self.data.sequences(split or "test")
        if split is None:
            row = np.searchsorted(seqs.users, users)  # every user in the map has a sequence
            lo, hi = seqs.offsets[row], seqs.offsets[row + 1]
            a, b = np.maximum(lo, hi - self.config.max_len), hi
            samples = None
        else:
            samples_all = getattr(self.data, split)
            pos = {int(u): i for i, u in enumerate(samples_all.user)}
            short = [str(t) for t, u in zip(user_ids, users, strict=True) if int(u) not in pos]
            if short:
                raise MatrrecError(
                    f"user id {short[0]!r} has fewer than 3 interactions, so it has no "
                    f"{split} split; use split=None (the command without --split)")
            samples = samples_all.take(np.array([pos[int(u)] for u in users], dtype=np.int64))
            lo, b = samples.start, samples.b
        self._fit(split)
        frames = []
        for s in range(0, len(users), BATCH):
            idx = np.arange(s, min(s + BATCH, len(users)))
            if samples is None:
                part = None
                scores = self._scores(*_padded(
                    [seqs.items[i:j] for i, j in zip(a[idx], b[idx], strict=True)],
                    self.config.max_len))
                target = None
            else:  # the batch evaluation builds, so the scores are evaluation's
                part = samples.take(idx)
                batch = make_batch(self.data, part, split=split)
                scores = self._scores(batch.item_seq, batch.lengths)
                target = batch.target.to(self.device)
            self._mask(scores, lo[idx], b[idx], part, include_history, split)
            frames.append(self._top(scores, users[idx], k, target))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {"user": [], "rank": [], "item": [], "score": []})
        return out.astype({"rank": "int64", "score": "float64"})

    def _mask(self, scores: torch.Tensor, lo: np.ndarray, b: np.ndarray, part: Any,
              include_history: bool, split: Split | None) -> None:
        """Set the scores of the items not to list to -inf, in place: each row's history
        items[lo:b] (the whole of it), or what the run's evaluation masked (see module doc)."""
        if include_history and not self.config.mask_history:
            return  # history items stay rankable, as in evaluation
        if include_history and part is not None:
            # evaluation masked the history but kept the held-out item: do the same
            r, item = history_mask_indices(self.data, part, split=split)
        else:
            r = np.repeat(np.arange(len(lo)), b - lo)
            pos = np.concatenate([np.arange(i, j) for i, j in zip(lo, b, strict=True)])
            item = self.data.sequences(split or "test").items[pos.astype(np.int64)]
        scores[torch.from_numpy(r).to(scores.device),
               torch.from_numpy(item.astype(np.int64)).to(scores.device)] = -torch.inf

    def _top(self, scores: torch.Tensor, users: np.ndarray, k: int | None,
             target: torch.Tensor | None) -> pd.DataFrame:
        """The listed items of each row, best first; -inf (padding, masked) never listed."""
        # a stable sort: equal scores keep ascending internal id, a reproducible order
        values, order = torch.sort(scores, dim=1, descending=True, stable=True)
        values, order = values.cpu().numpy(), order.cpu().numpy()
        if target is not None:
            # evaluation's tie rule (metrics.py): rank = 1 + #items scoring strictly higher,
            # i.e. the held-out item comes first among items with its score
            t = scores.gather(1, target.view(-1, 1))
            rank = (1 + (scores > t).sum(dim=1)).cpu().numpy()
            t, tgt = t.squeeze(1).cpu().numpy(), target.cpu().numpy()
        out = []
        for i in range(len(users)):
            n = int(np.isfinite(values[i]).sum())
            items, vals = order[i, :n], values[i, :n]
            if target is not None and np.isfinite(t[i]):
                j, p = int(np.flatnonzero(items == tgt[i])[0]), int(rank[i]) - 1
                # items p..j-1 tie with the target (scores are sorted): move it up to p
                items = np.concatenate([items[:p], items[j:j + 1], items[p:j], items[j + 1:]])
            m = n if k is None else min(k, n)
            out.append(pd.DataFrame({
                "user": self.user_ids[users[i] - 1], "rank": np.arange(1, m + 1),
                "item": self.item_ids[items[:m] - 1], "score": vals[:m].astype(np.float64)}))
        return pd.concat(out, ignore_index=True)


def load_run(path: str | Path, *, device: str = "auto", data_dir: str | None = None) -> Run:
    """Load a run directory's weights (best.pt; refit.pt for a refit run: the model that scored
    the test) with the data it was trained on, ready to recommend.
    `data_dir`: where the dataset is prepared when not where the run recorded it."""
    run_dir = Path(path)
    cfg, metrics = runs.load_run(run_dir)
    dev = resolve_device(device)  # a bad device fails before any data is read
    weights = runs.require_weights(run_dir, cfg, "test")
    cfg = replace(cfg, data_dir=runs.data_dir_of(run_dir, cfg, data_dir))
    data = load_split(cfg)
    where = require_prepared(cfg.dataset, cfg.data_dir)
    n_users = len(data.seqs.users)
    users = _read_map(where / USER_MAP, cfg.dataset, cfg.data_dir, int(data.seqs.users.max()))
    items = _read_map(where / ITEM_MAP, cfg.dataset, cfg.data_dir, data.seqs.n_items - 1)
    if len(users) != n_users:  # every mapped user has interactions after the k-core
        raise MatrrecError(f"{where / USER_MAP} names users without interactions; run "
                           f"`{prepare_command(cfg.dataset, cfg.data_dir)}`")
    model = model_builder(cfg, data.seqs.n_items)()
    restore(model, load_checkpoint(weights)["model"], weights)
    model.to(dev).eval()
    return Run(run_dir, cfg, metrics, model, data, users, items, dev)
