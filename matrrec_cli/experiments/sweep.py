"""Figures 2 and 3: one training setting swept over values, per dataset (mean ± std over seeds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments.runner import RunResult, RunSpec, parse_values, summarise
from matrrec_cli.experiments.table2 import SPEED_KEYS
from matrrec_cli.io import atomic_path
from matrrec_cli.train import runs
from matrrec_cli.train.config import RunOptions, flat, is_given, toml_text

# sweep name -> (train option it sets, value type, figure it mirrors)
PARAMS: dict[str, tuple[str, type, str]] = {
    "dropout": ("dropout", float, "fig2"),
    "max-len": ("max_len", int, "fig3"),
}
METRICS = ("recall@10", "ndcg@10")


def canonical(param: str) -> str:
    """The sweep's name: `max_len` (the setting's key) is accepted for `max-len`."""
    return param.replace("_", "-")


def parse(param: str, values: str) -> tuple[str, list[Any]]:
    param = canonical(param)
    if param not in PARAMS:
        raise UsageError(f"cannot sweep {param!r}; choose one of {', '.join(PARAMS)}")
    key, kind, _ = PARAMS[param]
    return key, parse_values(values, kind)


def specs(param: str, values: list[Any], datasets: list[str], base: RunOptions
          ) -> list[RunSpec]:
    """One spec per (dataset, value) of `param`, on top of `base` (the command's options)."""
    key = PARAMS[param][0]
    if getattr(base, key) is not None:
        raise UsageError(f"--{param} is what this sweep varies; do not also give it")
    return [RunSpec(dataclasses.replace(base, dataset=ds).given_by(f"sweep {param}", **{key: v}),
                    label=str(v)) for ds in datasets for v in values]


def file_stem(param: str, datasets: list[str], model: str, sets: list[str]) -> str:
    """What a sweep's files are about: `<param>_<datasets>_<model>[_<tag>]`, so sweeps of other
    datasets, models or recipes never overwrite each other's CSV and figure."""
    tag = next((v.partition("=")[2] for v in reversed(sets) if v.startswith("tag=")), "")
    return "_".join([param.replace("-", "_"), "+".join(datasets), model, *([tag] if tag else [])])


def frame(param: str, results: list[RunResult]) -> pd.DataFrame:
    df = pd.DataFrame(summarise(results, METRICS))
    df.insert(2, param, [PARAMS[param][1](x) for x in df.pop("label")])
    return df


def setting_note(param: str, results: list[RunResult]) -> str:
    """How the swept runs were trained, for the figure: objective, preset, and every other value
    someone chose (speed options named apart, as they cannot change what is measured)."""
    if not results:
        return ""
    cfg = runs.read_json(results[0].run_dir / runs.CONFIG)
    values, sources = flat(cfg), cfg.get("sources") or {}
    chosen = {k.removeprefix("model."): values.get(k) for k, src in sorted(sources.items())
              if is_given(src) and not src.startswith("sweep") and k not in (
                  "dataset", "model", "device", "data_dir", "results_dir", "seed", PARAMS[param][0],
                  "objective", "preset")}
    speed = [f"{k}={toml_text(v)}" for k, v in chosen.items() if k in SPEED_KEYS]
    other = [f"{k}={toml_text(v)}" for k, v in chosen.items() if k not in SPEED_KEYS]
    return "; ".join([f"{cfg.get('objective')} objective, {cfg.get('preset')} preset",
                      *([f"set {', '.join(other)}"] if other else []),
                      *([f"speed options {', '.join(speed)}"] if speed else [])])


def plot(param: str, df: pd.DataFrame, path: Path, *, default: Any = None, note: str = ""
         ) -> None:
    """Recall@10 and NDCG@10 against the swept value, one line per dataset and model, mean ± std
    over seeds as error bars (PNG, no display); the title names datasets, models, seeds per point
    and `note` (how the runs were trained), and a dotted line marks the `default` value."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    for ax, metric in zip(axes, METRICS, strict=True):
        for (ds, model), sub in df.groupby(["dataset", "model"], sort=False):
            sub = sub.sort_values(param)
            std = sub[f"{metric}_std"].astype(float).fillna(0.0)
            ax.errorbar(sub[param], sub[metric], yerr=std, marker="o", capsize=3,
                        label=ds if df["model"].nunique() == 1 else f"{ds} / {model}")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        if default is not None:
            ax.axvline(default, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{metric} vs {param}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    lo, hi = int(df["n_seeds"].min()), int(df["n_seeds"].max())
    seeds = f"{lo}" if lo == hi else f"{lo}-{hi}"
    models, datasets = (", ".join(dict.fromkeys(df[c])) for c in ("model", "dataset"))
    fig.suptitle(f"{models} on {datasets} ({seeds} seed{'s' if hi > 1 else ''} per point"
                 + (f"; default {default} dotted" if default is not None else "") + ")"
                 + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
