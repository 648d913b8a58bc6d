"""Table 2 of the paper rebuilt from the run records.

Rows are (dataset, metric) and columns models, as in the paper; each cell is the mean over seeds
of the test metric rounded to 4 decimals (± std when there are several seeds). The best value in
a row is bold, the second best underlined (ties share the mark). The improvement columns give
MaTrRec's relative gain over SASRec and over Mamba4Rec, as the paper's last two columns. Where the
paper has the dataset, its value sits beside each cell (`<model>_paper`), and `<model>_outside_2std`
says whether our mean lies more than two of our standard deviations from it.

Where a (dataset, model) has runs of several configurations, the one closest to the protocol (then
with the most seeds, then the newest) is used; the settings of every cell (preset, objective,
max_len, seeds) are listed too.
Runs with a `tag` (e.g. `--set tag=tuned`) form their own column, "matrrec (tuned)".
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from matrrec_cli.data.registry import training_defaults
from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments import paper
from matrrec_cli.train.config import comparable
from matrrec_cli.train.runs import ENV, HISTORY, finished_runs, read_json

MODEL_ORDER = ("gru4rec", "narm", "sasrec", "nextitnet", "bert4rec", "sine", "core",
               "mamba4rec", "matrrec")  # Table 2's columns (a)..(i)
DATASET_ORDER = ("ml-1m", "musical", "health", "electronics", "office")
METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@10")
OURS, VS = "matrrec", ("sasrec", "mamba4rec")
# model settings that change speed, not the model: a run using them still counts as plain
SPEED_KEYS = ("skip_padding", "readout_only", "attn_impl", "mamba_backend")


def _seedless_key(cfg: dict[str, Any]) -> str:
    keep = {k: v for k, v in comparable(cfg).items()
            if k not in ("seed", "sources", "config_hash", "device", "data_dir", "results_dir",
                         "eval_batch_size")}
    return repr(sorted(keep.items()))


Members = list[tuple[Path, dict, dict]]


def chosen_runs(results_dir: str | Path, datasets: list[str] | None = None,
                models: list[str] | None = None) -> dict[tuple[str, str], Members]:
    """(dataset, model) -> the (run dir, config, metrics) of each seed of the configuration that
    departs least from the protocol, then has the most seeds, then the newest run (_priority):
    what every report uses for that cell."""
    groups: dict[tuple[str, str, str], list[tuple[Path, dict, dict]]] = {}
    for run, cfg, metrics in finished_runs(results_dir):
        if datasets and cfg["dataset"] not in datasets:
            continue
        if models and cfg["model"] not in models:
            continue
        name = cfg["model"] + (f" ({cfg['tag']})" if cfg.get("tag") else "")  # tagged recipe
        groups.setdefault((cfg["dataset"], name, _seedless_key(cfg)), []).append(
            (run, cfg, metrics))
    chosen: dict[tuple[str, str], tuple[tuple[int, int, str], Members]] = {}
    for (ds, model, _), members in groups.items():
        by_seed = {cfg["seed"]: (run, cfg, m) for run, cfg, m in sorted(members)}  # newest wins
        cand = list(by_seed.values())
        rank = _priority(cand)
        if (ds, model) not in chosen or rank > chosen[(ds, model)][0]:
            chosen[(ds, model)] = rank, cand
    return {key: members for key, (_, members) in chosen.items()}


def _priority(members: list[tuple[Path, dict, dict]]) -> tuple[int, int, str]:
    """Prefer the model as the preset and the protocol define it, then more seeds, then the
    newest run. Each departure counts once: an ablation or trainer `--set` (lr,
    bucket_by_length, ...; the speed options of SPEED_KEYS, eval_batch_size and tag do not
    count), a max_len or dropout other than the dataset's (datasets.toml, or the imported
    dataset's meta.json), a non-prefix objective. Fewer departures win, so with only `all`
    runs at hand the one at the dataset's own max_len is used."""
    cfg = members[0][1]
    src = cfg.get("sources", {})
    departures = sum(v.endswith("--set") and k.removeprefix("model.") not in SPEED_KEYS
                     and k not in ("eval_batch_size", "tag") for k, v in src.items())
    own = training_defaults(cfg["dataset"], cfg.get("data_dir"))
    departures += src.get("max_len") == "command line" and cfg.get("max_len") != own.max_len
    departures += src.get("dropout") == "command line" and cfg.get("dropout") != own.dropout
    departures += cfg.get("objective", "prefix") != "prefix"
    return -departures, len(members), max(r.name for r, _, _ in members)


def collect(results_dir: str | Path, datasets: list[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, model, metric): mean, std, seeds and settings of the chosen config."""
    chosen = chosen_runs(results_dir, datasets)
    rows = []
    for (ds, model), members in chosen.items():
        cfg = members[0][1]
        for metric in METRICS:
            values = [m["test"][metric] for _, _, m in members]
            rows.append({
                "dataset": ds, "model": model, "metric": metric,
                "mean": round(statistics.fmean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
                "n_seeds": len(values),
                "seeds": " ".join(sorted(str(c["seed"]) for _, c, _ in members)),
                "preset": cfg["preset"], "objective": cfg["objective"],
                "max_len": cfg["max_len"], "epochs_cap": cfg["epochs"],
            })
    if not rows:
        raise MatrrecError(f"no finished runs under {Path(results_dir) / 'runs'}; "
                           "run matrrec train first")
    return pd.DataFrame(rows)


def _order(values: list[str], order: tuple[str, ...]) -> list[str]:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))


def model_order(names: list[str]) -> list[str]:
    """Table 2's columns: the paper's nine in its order, then recipes tagged on them
    ("matrrec (tuned)"), then the rest (pop, markov, ...)."""
    def key(name: str) -> tuple[int, int, str]:
        base, tagged = name.split(" (")[0], " (" in name
        if base not in MODEL_ORDER:
            return 2, 0, name
        return int(tagged), MODEL_ORDER.index(base), name
    return sorted(set(names), key=key)


def table2(long: pd.DataFrame,
           sig_marks: dict[tuple[str, str, str], bool] | None = None) -> pd.DataFrame:
    """Long records -> the paper's layout, with best/second marks and improvement columns;
    `sig_marks` ((dataset, baseline, metric) -> significant) adds the paper's p < 0.01 marks."""
    out = []
    for ds in _order(long["dataset"].tolist(), DATASET_ORDER):
        sub = long[long["dataset"] == ds]
        models = model_order(sub["model"].tolist())
        for metric in METRICS:
            cells = sub[sub["metric"] == metric].set_index("model")
            means = {m: float(cells.loc[m, "mean"]) for m in models if m in cells.index}
            ranked = sorted(set(means.values()), reverse=True)
            row: dict[str, Any] = {"dataset": ds, "metric": metric}
            for m, v in means.items():
                std = cells.loc[m, "std"]
                row[m] = v
                row[f"{m}_std"] = None if pd.isna(std) else float(std)
                row[f"{m}_paper"] = paper.table2_value(ds, m, metric)
                row[f"{m}_outside_2std"] = paper.outside(v, row[f"{m}_std"], row[f"{m}_paper"])
                row[f"{m}_mark"] = ("best" if v == ranked[0] else
                                    "second" if len(ranked) > 1 and v == ranked[1] else "")
            published = {m: paper.table2_value(ds, m, metric) for m in (OURS, *VS)}
            for base in VS:
                row[f"improvement_vs_{base}_pct"] = _gain(means.get(OURS), means.get(base))
                row[f"improvement_vs_{base}_pct_paper"] = _gain(published[OURS], published[base])
                if sig_marks is not None:
                    row[f"improvement_vs_{base}_significant"] = sig_marks.get((ds, base, metric))
            out.append(row)
    return pd.DataFrame(out)


def _gain(ours: float | None, base: float | None) -> float | None:
    """MaTrRec's relative gain in percent, as the paper's improvement columns."""
    return round(100 * (ours - base) / base, 2) if ours is not None and base else None


def write_csv(wide: pd.DataFrame, path: Path) -> None:
    from matrrec_cli.io import atomic_path

    with atomic_path(path) as tmp:
        wide.to_csv(tmp, index=False)


def _joined(values: list[Any]) -> str:
    return " ".join("?" if v is None else str(v) for v in values)  # "?" = not recorded


def _epoch_seconds(run: Path) -> list[float]:
    """Each epoch's training + validation seconds, from the run's history.jsonl."""
    path = run / HISTORY
    if not path.exists():
        return []
    return [json.loads(line)["seconds"] for line in path.read_text().splitlines() if line]


def runs(results_dir: str | Path, datasets: list[str] | None = None) -> pd.DataFrame:
    """The runs behind each Table 2 cell, one row per (dataset, model): settings, seeds, epochs
    (best), training wall and where it ran (threads, device, git revision) next to the test
    metrics, so a cell's cost and provenance are one command away. `epoch_s_median` (training +
    validation, median over every epoch of every seed) is robust to a stretch shared with
    another job; wall / epochs is not."""
    rows = []
    for (ds, model), members in chosen_runs(results_dir, datasets).items():
        members = sorted(members, key=lambda member: member[1]["seed"])
        cfg = members[0][1]
        metrics = [m for _, _, m in members]
        envs = [read_json(run / ENV) if (run / ENV).exists() else {} for run, _, _ in members]
        known = [(m["wall_seconds"], m["epochs"]) for m in metrics
                 if m.get("wall_seconds") and m.get("epochs")]
        seconds = [s for run, _, _ in members for s in _epoch_seconds(run)]
        rows.append({
            "dataset": ds, "model": model, "preset": cfg["preset"],
            "objective": cfg["objective"], "max_len": cfg["max_len"],
            "seeds": _joined([c["seed"] for _, c, _ in members]),
            "epochs": _joined([m.get("epochs") for m in metrics]),
            "best_epoch": _joined([m.get("best_epoch") for m in metrics]),
            "wall_s_mean": round(statistics.fmean(w for w, _ in known), 1) if known else None,
            "epoch_s_median": round(statistics.median(seconds), 2) if seconds else None,
            **{key: _joined(list(dict.fromkeys(e.get(field) for e in envs)))
               for key, field in (("threads", "torch_threads"), ("device", "device"),
                                  ("git", "git_revision"))},
            **{f"test_{k}": round(statistics.fmean(m["test"][k] for m in metrics), 4)
               for k in ("recall@10", "ndcg@10")},
        })
    if not rows:
        raise MatrrecError(f"no finished runs under {Path(results_dir) / 'runs'}; "
                           "run matrrec train first")
    order = {m: i for i, m in enumerate(model_order([r["model"] for r in rows]))}
    return pd.DataFrame(rows).sort_values(
        ["dataset", "model"], key=lambda s: s.map(order) if s.name == "model" else s,
        ignore_index=True)
