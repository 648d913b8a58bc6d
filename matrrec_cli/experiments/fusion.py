"""Late fusion: a trained network's next-item distribution combined with a count model's.

Count models (markov, sr, itemknn, ...) beat every neural model of the paper on Musical; they
see the last item's transitions directly, the networks see whole histories. Fusion asks whether
the two are complementary (FPMC and Fossil put both in one model; here they are combined after
training, so no network is retrained):

    score(i) = log p_net(i | history) + beta * log q(i | history)

p_net is the softmax of the network's full-sort scores, of one seed ("seed" mode: mean ± std
over seeds) or averaged over the seeds ("ensemble" mode: one number). q is the count model's
score row normalised to a distribution and mixed with the popularity shares (POP_SHARE), so that
an item without a rule from the last item keeps a finite score and falls back to popularity. The
count model counts only what is known before the scored target (its own contract), so the
fused score uses nothing the network could not have used.

Everything is chosen on validation: the count model's setting (its `grid`) and beta (BETAS;
beta 0 is the network alone, so the choice is never worse on validation than no fusion). Test
numbers of every candidate are reported beside their validation numbers, the chosen one marked,
with the paired per-user Wilcoxon test of the chosen fusion against the count model alone.

A fusion is kept as a record, like a run: results/fusions/<dataset>/<model>[_<tag>]_<count>/
(fusion.json: the member runs, seeds, choices and reference numbers; candidates.parquet: every
candidate's numbers; per_user.parquet: the chosen candidates' and the references' test NDCG@10
per user). `matrrec report fuse` renders it without the data or the checkpoints, on any CPU
(nothing is scored again), and `matrrec publish` copies it into the published evidence.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments.runner import mean_std
from matrrec_cli.experiments.significance import ndcg10, test_ranks, wilcoxon_users
from matrrec_cli.experiments.table2 import Selection, chosen_runs
from matrrec_cli.models import build_model, get_model_class, model_names
from matrrec_cli.paths import published_dir
from matrrec_cli.train import pipeline, runs
from matrrec_cli.train.checkpoint import load_checkpoint, restore
from matrrec_cli.train.evaluate import fit_known
from matrrec_cli.train.metrics import ranks_from_scores
from matrrec_cli.train.samples import make_batch

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
POP_SHARE = 0.02  # of q: the popularity distribution, so every item keeps a finite log q
MODES = ("seed", "ensemble")
SPLITS = ("valid", "test")
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Candidate:
    mode: str  # "seed" or "ensemble"
    setting: tuple[tuple[str, Any], ...]  # the count model's grid values
    beta: float

    @property
    def label(self) -> str:
        setting = ", ".join(f"{k}={v}" for k, v in self.setting) or "defaults"
        return f"{self.mode}, {setting}, beta {self.beta:g}"


@dataclasses.dataclass
class Fusion:
    dataset: str
    model: str
    count: str
    seeds: list[int]
    table: pd.DataFrame  # one row per candidate: valid/test NDCG@10 mean, std; chosen
    chosen: dict[str, Candidate]  # mode -> the candidate validation chose
    per_user: dict[str, pd.Series]  # "<mode>", "count", "best" -> test NDCG@10 per user
    count_test: float  # the count model alone, its default setting, test NDCG@10
    best: str | None = None  # the best simple model's Table 2 column on this dataset (by test)
    best_test: float | None = None
    runs: list[str] = dataclasses.field(default_factory=list)  # the member runs' ids
    tag: str | None = None


def best_simple(results_dir: str | Path, dataset: str, selection: Selection | None = None
                ) -> tuple[str, float, pd.Series] | None:
    """The count model with the highest test NDCG@10 among Table 2's cells of `dataset` (the
    issue's yardstick: "the best simple model"), its mean and its per-user NDCG@10."""
    counts = [m for m in model_names() if not get_model_class(m).trainable]
    cells = chosen_runs(results_dir, [dataset], counts, selection)
    if not cells:
        return None
    (_, name), members = max(cells.items(), key=lambda kv: statistics.fmean(
        m["test"]["ndcg@10"] for _, _, m in kv[1]))
    ranks = pd.concat([test_ranks(r) for r, _, _ in members], axis=1)  # users x seeds
    per_user = pd.DataFrame(ndcg10(ranks.to_numpy(dtype=float)), index=ranks.index)
    return (name, statistics.fmean(m["test"]["ndcg@10"] for _, _, m in members),
            per_user.mean(axis=1))


def settings(count: str) -> list[tuple[tuple[str, Any], ...]]:
    """Every point of the count model's grid (its defaults when it has none)."""
    grid = getattr(get_model_class(count), "grid", {}) or {}
    keys = sorted(grid)
    return [tuple(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))]


def _count_model(count: str, data: Any, split: str, setting: tuple, *, tie_break: bool):
    overrides = dict(setting)
    if "popularity_tie_break" in {f.name for f in dataclasses.fields(
            get_model_class(count).Config)}:
        overrides["popularity_tie_break"] = tie_break
    m = build_model(count, n_items=data.seqs.n_items, max_len=data.max_len, overrides=overrides)
    if m.trainable:
        raise MatrrecError(f"--with {count}: not a count model (markov, sr, itemknn, sknn, "
                           "vsknn, ease or pop)")
    fit_known(m, data, split)
    return m


def _log_q(m: Any, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N) log of the count model's scores as a distribution, with POP_SHARE popularity."""
    raw = m.seq_repr(seq, lengths).double().clamp_min(0)  # EASE's weights can be negative
    total = raw.sum(dim=1, keepdim=True)
    pop = m.popularity.double()
    pop = pop / pop.sum()
    q = torch.where(total > 0, raw / total.clamp_min(1e-300), pop)  # no rule: popularity
    return torch.log((1 - POP_SHARE) * q + POP_SHARE * pop).clamp_min(-1e4)


def _ranks(scores: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Ranks of `scores` (a fresh tensor: its padding column is overwritten in place)."""
    scores[:, 0] = -torch.inf  # padding is never a candidate, as in evaluation
    return ranks_from_scores(scores, target).numpy()


def fuse(results_dir: str | Path, dataset: str, *, model: str = "matrrec", count: str = "sr",
         tag: str | None = None, data_dir: str | Path | None = None,
         selection: Selection | None = None, batch_size: int = 1024) -> Fusion:
    """Every candidate's validation and test NDCG@10 over the runs Table 2 uses for `model` on
    `dataset` (the column "model (tag)" with a `tag`), each split scored by the weights that
    scored it in training (best.pt; refit.pt for the test of a refit run), the candidates
    validation chooses, and per-user test NDCG@10."""
    column = model + (f" ({tag})" if tag else "")
    selection = selection or Selection()
    mine = dataclasses.replace(selection, tags=(tag,)) if tag else selection
    members = chosen_runs(results_dir, [dataset], [model], mine).get((dataset, column))
    if not members:
        raise MatrrecError(f"no finished {column} runs on {dataset}; run matrrec train --dataset "
                           f"{dataset} --model {model} --seeds 5"
                           + (f" --set tag={tag}" if tag else "") + " first")
    cfgs = [runs.load_run(r)[0] for r, _, _ in members]
    cfgs = [replace(c, data_dir=str(data_dir or c.data_dir)) for c in cfgs]
    missing = [str(r / runs.weights(c, s)) for (r, _, _), c in zip(members, cfgs, strict=True)
               for s in SPLITS if not (r / runs.weights(c, s)).exists()]
    if missing:
        raise MatrrecError(f"{missing[0]} is missing (a Ray run without --keep-checkpoints?); "
                           "fusion needs each seed's weights")
    data = pipeline.load_split(cfgs[0])  # the split is the same for every seed
    loaded: dict[Path, Any] = {}  # a checkpoint scoring both splits (best.pt) is loaded once
    nets: dict[str, list[Any]] = {split: [] for split in SPLITS}  # one network per seed
    for split in SPLITS:
        for (run, _, _), cfg in zip(members, cfgs, strict=True):
            path = run / runs.weights(cfg, split)
            if path not in loaded:
                loaded[path] = pipeline.model_builder(cfg, data.seqs.n_items)()
                restore(loaded[path], load_checkpoint(path)["model"], path)
                loaded[path].eval()
            nets[split].append(loaded[path])
    grid = settings(count)
    cands = [Candidate(mode, s, b) for mode in MODES for s in grid for b in BETAS]
    n_dists = {"seed": len(members), "ensemble": 1}  # the distributions each mode fuses
    ndcg: dict[tuple[Candidate, str], list[np.ndarray]] = {}  # per user, one per distribution
    users: dict[str, np.ndarray] = {}
    count_ndcg: dict[str, np.ndarray] = {}
    for split in SPLITS:
        samples = getattr(data, split)
        users[split] = samples.user
        models = {s: _count_model(count, data, split, s, tie_break=False) for s in grid}
        alone = _count_model(count, data, split, (), tie_break=True)  # as Table 2 scores it
        parts: dict[tuple[Candidate, int], list[np.ndarray]] = {}
        alone_parts = []
        for lo in range(0, len(samples), batch_size):
            batch = make_batch(data, samples.take(np.arange(lo, min(lo + batch_size,
                                                                     len(samples)))),
                               split=split)
            with torch.no_grad():
                logp = [torch.log_softmax(n.full_sort_scores(batch.item_seq, batch.lengths)
                                          .double(), dim=1) for n in nets[split]]  # S x (B, N)
                dists = {"seed": logp,
                         "ensemble": [torch.log(torch.stack([lp.exp() for lp in logp])
                                                .mean(dim=0))]}
                alone_parts.append(_ranks(alone.full_sort_scores(batch.item_seq,
                                                                 batch.lengths).double(),
                                          batch.target))
                # beta 0 is the network alone, whatever the count setting: ranked once
                net_alone = {(mode, i): _ranks(lp.clone(), batch.target)
                             for mode, lps in dists.items() for i, lp in enumerate(lps)}
                for s, m in models.items():
                    lq = _log_q(m, batch.item_seq, batch.lengths)
                    for c in (c for c in cands if c.setting == s):
                        for i, lp in enumerate(dists[c.mode]):
                            parts.setdefault((c, i), []).append(
                                net_alone[(c.mode, i)] if c.beta == 0
                                else _ranks(lp + c.beta * lq, batch.target))
        for c in cands:
            ndcg[(c, split)] = [ndcg10(np.concatenate(parts[(c, i)]).astype(float))
                                for i in range(n_dists[c.mode])]
        count_ndcg[split] = ndcg10(np.concatenate(alone_parts).astype(float))
    rows = []
    for c in cands:
        row: dict[str, Any] = {"dataset": dataset, "mode": c.mode, "setting": ", ".join(
            f"{k}={v}" for k, v in c.setting) or "defaults", "beta": c.beta}
        for split in SPLITS:
            row[f"{split}_ndcg@10"], row[f"{split}_std"] = mean_std(
                [float(x.mean()) for x in ndcg[(c, split)]])
        rows.append(row)
    table = pd.DataFrame(rows)
    # per mode the highest mean validation NDCG@10; idxmax keeps the first of equals (the
    # smaller beta, the earlier grid point)
    chosen = {mode: cands[table[table["mode"] == mode]["valid_ndcg@10"].idxmax()]
              for mode in MODES}
    table["chosen"] = [c in chosen.values() for c in cands]
    per_user = {mode: pd.Series(np.mean(ndcg[(c, "test")], axis=0), index=users["test"])
                for mode, c in chosen.items()}
    per_user["count"] = pd.Series(count_ndcg["test"], index=users["test"])
    best = best_simple(results_dir, dataset, selection)
    if best is not None:
        per_user["best"] = best[2]
    return Fusion(dataset=dataset, model=column, count=count,
                  seeds=[c.seed for c in cfgs], table=table, chosen=chosen, per_user=per_user,
                  count_test=float(count_ndcg["test"].mean()),
                  best=None if best is None else best[0],
                  best_test=None if best is None else best[1],
                  runs=[r.name for r, _, _ in members], tag=tag)


GOAL = 1.10  # the bar: 10 % above the best simple model


def summary(f: Fusion) -> pd.DataFrame:
    """Per mode: the chosen candidate's test NDCG@10 against the count model alone and against
    the best simple model of Table 2 (ratio, Wilcoxon over users), and whether it reaches
    GOAL x the best simple model with a significant Wilcoxon."""
    rows = []
    for mode, c in f.chosen.items():
        row = f.table[(f.table["mode"] == mode) & f.table["chosen"]].iloc[0]
        test = row["test_ndcg@10"]
        p_count = wilcoxon_users(f.per_user[mode], f.per_user["count"])
        p_best = wilcoxon_users(f.per_user[mode], f.per_user["best"]) if f.best else None
        rows.append({"dataset": f.dataset, "model": f.model, "count": f.count, "mode": mode,
                     "seeds": len(f.seeds), "chosen": c.label,
                     "valid_ndcg@10": row["valid_ndcg@10"], "test_ndcg@10": test,
                     "test_std": row["test_std"], "count_test_ndcg@10": f.count_test,
                     "ratio_count": test / f.count_test if f.count_test else None,
                     "wilcoxon_p_count": p_count, "best_simple": f.best,
                     "best_simple_test_ndcg@10": f.best_test,
                     "ratio_best": test / f.best_test if f.best_test else None,
                     "wilcoxon_p_best": p_best,
                     "goal_reached": bool(f.best_test and test >= GOAL * f.best_test
                                          and p_best is not None and p_best < ALPHA)})
    return pd.DataFrame(rows)


RECORD, CANDIDATES, PER_USER = "fusion.json", "candidates.parquet", "per_user.parquet"
FUSIONS = "fusions"  # beside runs/ in a results directory and in the published evidence


def record_dir(root: str | Path, dataset: str, model: str, count: str,
               tag: str | None = None) -> Path:
    """Where a fusion's record lives under `root` (a results directory or the published one)."""
    return Path(root) / FUSIONS / dataset / "_".join(x for x in (model, tag, count) if x)


def record_files(f: Fusion) -> dict[str, bytes]:
    """A fusion's record, file name -> bytes."""
    head = {"dataset": f.dataset, "model": f.model, "count": f.count, "tag": f.tag,
            "seeds": f.seeds, "runs": f.runs, "count_test": f.count_test, "best": f.best,
            "best_test": f.best_test,
            "chosen": {m: {"setting": [list(kv) for kv in c.setting], "beta": c.beta}
                       for m, c in f.chosen.items()}}
    per_user = pd.DataFrame(f.per_user).rename_axis("user").reset_index()
    out = {RECORD: runs.record_bytes(head)}
    for name, df in ((CANDIDATES, f.table), (PER_USER, per_user)):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        out[name] = buf.getvalue()
    return out


def place_record(files: dict[str, bytes], final: Path) -> Path:
    """Write a record whole beside `final` and swap it in; an older record of the same fusion
    is replaced only once the new one is complete (a reader sees one or the other)."""
    staging = final.parents[1] / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix="replaced-", dir=staging))
        os.rename(final, old / "record")
    try:
        runs.place_run(files, final, staging)
    except BaseException:
        if old is not None:
            os.rename(old / "record", final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save(f: Fusion, results_dir: str | Path) -> Path:
    """Keep `f` as this machine's record (results/fusions/...), replacing an earlier one."""
    model = f.model.removesuffix(f" ({f.tag})")  # the column "model (tag)" of a recipe
    return place_record(record_files(f), record_dir(results_dir, f.dataset, model, f.count,
                                                    f.tag))


def load(record: Path) -> Fusion:
    """A fusion from its record directory."""
    head = runs.read_json(record / RECORD)
    try:
        table = pd.read_parquet(record / CANDIDATES)
        per_user = pd.read_parquet(record / PER_USER).set_index("user")
    except (OSError, ValueError) as exc:
        raise MatrrecError(f"{record}: unreadable fusion record ({exc}); run matrrec fuse "
                           "again") from None
    chosen = {m: Candidate(m, tuple((k, v) for k, v in head["chosen"][m]["setting"]),
                           float(head["chosen"][m]["beta"]))
              for m in MODES if m in head["chosen"]}  # in MODES' order (JSON sorts keys)
    return Fusion(dataset=head["dataset"], model=head["model"], count=head["count"],
                  seeds=list(head["seeds"]), table=table, chosen=chosen,
                  per_user={c: per_user[c].dropna() for c in per_user.columns},
                  count_test=float(head["count_test"]), best=head["best"],
                  best_test=head["best_test"], runs=list(head["runs"]), tag=head["tag"])


def find_record(results_dir: str | Path, dataset: str, model: str, count: str,
                tag: str | None = None) -> Path | None:
    """The fusion's record, published first (as Table 2 prefers published runs), else this
    machine's; None when neither has one."""
    for root in (published_dir(results_dir), Path(results_dir)):
        d = record_dir(root, dataset, model, count, tag)
        if (d / RECORD).is_file():
            return d
    return None
