"""Table 3: MaTrRec ablations as configuration switches (models/matrrec.py) on the trainer.

Rows as the paper: the default (1 layer, 1 head), then each variant. A cell is better than the
default (bold) when its mean is higher, and marked ↓ when it is more than 10 % below it. The
paper's value for the same dataset and row, where it has one, goes beside each cell.

Whether a variant differs from the default at all is a question about seeds, not users: the
seed-to-seed spread of one configuration (±0.001-0.004 NDCG@10 on Musical) is as large as most
ablation effects. So each variant gets Welch's t-test of its per-seed test values against the
default's (scipy.stats.ttest_ind, unequal variances); `*` marks p < 0.05.
"""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments import paper
from matrrec_cli.experiments.runner import RunResult, RunSpec, summarise
from matrrec_cli.train.config import RunOptions

DEFAULT_LABEL = "L=1,H=1"
REMOVABLE = {  # --remove NAME -> the MaTrRec setting that removes it
    "ffn": ("Remove FFN", "use_ffn=false"),
    "rc": ("Remove RC", "use_residual=false"),
    "dropout": ("Remove Dropout", "use_dropout=false"),
}
ADDABLE = {"pe": ("Add PE", "use_position_embedding=true")}
METRICS = ("recall@10", "ndcg@10")
WORSE = 0.10  # the paper's ↓ threshold: more than 10 % below the default
ALPHA = 0.05  # `*`: differs from the default (Welch's t-test over seeds)


def variants(*, remove: list[str], add: list[str], heads: list[int], layers: list[int],
             all_: bool, custom: list[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """(label, --set pairs) for the default and each requested variant, in Table 3's order;
    `custom` variants (`KEY=VALUE[,KEY=VALUE]`, any --set settings, e.g. `loss=sampled`) come
    last, labelled by their own text, so any switch gets the default beside it and Welch's test."""
    for name in remove:
        if name not in REMOVABLE:
            raise UsageError(f"--remove {name}: expected one of {', '.join(REMOVABLE)}")
    for name in add:
        if name not in ADDABLE:
            raise UsageError(f"--add {name}: expected one of {', '.join(ADDABLE)}")
    for n in (*heads, *layers):
        if n < 1:
            raise UsageError(f"--heads/--layers must be at least 1, not {n}")
    if all_:  # the paper's six rows
        add, remove = ["pe", *add], ["ffn", "rc", "dropout", *remove]
        heads, layers = [2, *heads], [2, *layers]
    out: list[tuple[str, tuple[str, ...]]] = [(DEFAULT_LABEL, ())]
    out += [(ADDABLE[n][0], (ADDABLE[n][1],)) for n in dict.fromkeys(add)]
    out += [(REMOVABLE[n][0], (REMOVABLE[n][1],)) for n in dict.fromkeys(remove)]
    out += [(f"{n}heads(H={n})", (f"n_heads={n}",)) for n in dict.fromkeys(heads) if n != 1]
    out += [(f"{n}layers(L={n})", (f"n_layers={n}",)) for n in dict.fromkeys(layers) if n != 1]
    for text in dict.fromkeys(custom):
        pairs = tuple(p.strip() for p in text.split(",") if p.strip())
        if not pairs or any("=" not in p or not p.partition("=")[0].strip() for p in pairs):
            raise UsageError(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE], for example "
                             "loss=sampled,negatives=64")
        out.append((",".join(pairs), pairs))
    if len(out) == 1:
        raise UsageError("no variant asked for; use --remove, --add, --heads, --layers, "
                         "--variant or --all")
    return out


def specs(datasets: list[str], variant_list: list[tuple[str, tuple[str, ...]]],
          base: RunOptions) -> list[RunSpec]:
    """One spec per (dataset, variant): `base` (the command's options) on each dataset, with the
    variant's settings recorded as coming from the ablation."""
    base = base.given_by("ablate (Table 3 ablates MaTrRec)", model="matrrec")
    return [RunSpec(dataclasses.replace(base, dataset=ds)
                    .given_by(f"ablate {label}", sets=variant_sets), label=label)
            for ds in datasets for label, variant_sets in variant_list]


def table3(results: list[RunResult]) -> pd.DataFrame:
    """Rows per (dataset, variant): mean/std per metric, `better` and `worse` marks vs default."""
    rows = summarise(results, METRICS)
    default = {r["dataset"]: r for r in rows if r["label"] == DEFAULT_LABEL}
    per_seed: dict[tuple[str, str, str], list[float]] = {}
    for res in results:
        for m in METRICS:
            per_seed.setdefault((res.spec.dataset, res.spec.label, m), []).append(
                res.metrics["test"][m])
    for r in rows:
        base = default.get(r["dataset"])
        for m in METRICS:
            r[f"{m}_p"] = None if r["label"] == DEFAULT_LABEL else welch_p(
                per_seed[(r["dataset"], r["label"], m)],
                per_seed.get((r["dataset"], DEFAULT_LABEL, m), []))
            ref = base[m] if base else None
            r[f"{m}_better"] = bool(ref is not None and r["label"] != DEFAULT_LABEL
                                    and r[m] > ref)
            r[f"{m}_worse10"] = bool(ref and r[m] < (1 - WORSE) * ref)
            r[f"{m}_vs_default_pct"] = round(100 * (r[m] - ref) / ref, 2) if ref else None
            r[f"{m}_paper"] = paper.table3_value(r["dataset"], r["label"], m)
    return pd.DataFrame(rows)


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test, None where it is undefined (under 2 seeds on a side, or
    no spread at all)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return None
    with warnings.catch_warnings():
        # one side with every seed equal (e.g. the same Recall@10 of 1,429 users) still gives
        # a test from the other side's spread, but scipy warns of "precision loss" for it
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
