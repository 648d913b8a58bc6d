"""The shuffle test (Klenitskiy et al., RecSys 2024, "Does it look sequential?"): how much of a
model's score comes from the order of the users' histories.

A model trained and evaluated with `--set shuffle_history=true` sees every history in a random
order drawn from its seed (data/split.py: shuffle_histories; the targets stay where they are).
For each dataset and model this compares those runs with the same configuration on ordered
data: test NDCG@10 mean ± std over seeds, the relative change, Welch's t-test over the per-seed
values (as ablate does) and a paired Wilcoxon test on per-user NDCG@10 averaged over seeds. A
change near zero says the score does not come from order: on such data no story about which
architecture models order better (claim 2's "Mamba for long order, attention for short") can be
told from the scores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments.ablation import welch_p
from matrrec_cli.experiments.claims import Vary, families
from matrrec_cli.experiments.runner import mean_std
from matrrec_cli.experiments.significance import ndcg10, test_ranks, wilcoxon_users
from matrrec_cli.experiments.table2 import Selection
from matrrec_cli.paths import stores_text
from matrrec_cli.train.config import OWN_FLAGS
from matrrec_cli.train.runs import finished_runs

KEY = "shuffle_history"
MODELS = ("matrrec", "sasrec", "gru4rec", "markov")  # the four: attention, RNN, counts
SEEDS = 3  # what the printed commands ask for: the permutation differs per seed
ALPHA = 0.05
_VARY = Vary(KEY, (KEY,), (), lambda c: bool(c.get(KEY, False)))


def _per_user(runs: list[Path]) -> pd.Series:
    """user -> test NDCG@10 averaged over the runs (seeds)."""
    ranks = pd.concat([test_ranks(r) for r in runs], axis=1)
    return pd.Series(ndcg10(ranks.to_numpy(dtype=float)).mean(axis=1), index=ranks.index)


def command(dataset: str, model: str, *, shuffled: bool, departures: list[str] = ()) -> str:
    """The train command of one side of a family, with the family's own departures, so the
    run it makes pairs with the runs already there."""
    flags = []
    for d in departures:
        key, _, value = d.partition("=") if "=" in d else d.partition(" ")
        flags.append(f"--{key.replace('_', '-')} {value}" if key in OWN_FLAGS
                     else f"--set {key}={value}")
    return " ".join([f"matrrec train --dataset {dataset} --model {model} --seeds {SEEDS}",
                     *flags, *([f"--set {KEY}=true"] if shuffled else [])])


def shuffle_table(results_dir: str | Path, datasets: list[str] | None = None,
                  models: list[str] | None = None, *, selection: Selection | None = None
                  ) -> tuple[pd.DataFrame, list[str]]:
    """One row per (dataset, model): ordered and shuffled test NDCG@10 over seeds, the change
    and its tests, from the family of otherwise-equal runs closest to the protocol that has
    both; and the commands that make the missing runs."""
    selection = selection or Selection()
    runs = [(r, c, m) for r, c, m in finished_runs(results_dir)
            if "ndcg@10" in m.get("test", {}) and selection.admits(c, m) is None
            and not c.get("tag")]
    datasets = list(dict.fromkeys(datasets or sorted({c["dataset"] for _, c, _ in runs})))
    if not datasets:
        raise MatrrecError(f"no finished runs under {stores_text(results_dir)}; give "
                           "--dataset NAME to see the commands that make them")
    rows, todo = [], []
    for ds in datasets:
        for model in models or MODELS:
            mine = [x for x in runs if x[1]["dataset"] == ds and x[1]["model"] == model]
            fams = families(mine, _VARY)
            both = [f for f in fams if True in f.points and False in f.points]
            if not both:  # the other side of the family closest to the protocol, or both
                have, departures = (fams[0].points, fams[0].departures) if fams else ({}, [])
                todo += [command(ds, model, shuffled=s, departures=departures)
                         for s in (False, True) if s not in have]
                continue
            fam = both[0]
            ordered, shuffled = fam.points[False], fam.points[True]
            (mo, so), (ms, ss) = mean_std(ordered), mean_std(shuffled)
            try:
                p_user = wilcoxon_users(_per_user(fam.runs[True]), _per_user(fam.runs[False]))
            except MatrrecError:  # a run without ranks: the seed-level test still stands
                p_user = None
            p_seed = welch_p(shuffled, ordered)
            rows.append({
                "dataset": ds, "model": model,
                "ordered": mo, "ordered_std": so, "ordered_seeds": len(ordered),
                "shuffled": ms, "shuffled_std": ss, "shuffled_seeds": len(shuffled),
                "change_pct": 100 * (ms - mo) / mo if mo else None,
                "welch_p": p_seed, "wilcoxon_p": p_user,
                "order_matters": p_user is not None and p_user < ALPHA and ms < mo,
                "departures": ", ".join(fam.departures)})
    return pd.DataFrame(rows), list(dict.fromkeys(todo))

