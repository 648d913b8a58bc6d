"""Table 2 of the paper rebuilt from the run records.

Rows are (dataset, metric) and columns models, as in the paper; each cell is the mean over seeds
of the test metric rounded to 4 decimals (± std when there are several seeds). The best value in
a row is bold, the second best underlined (ties share the mark). The improvement columns give
MaTrRec's relative gain over SASRec and over Mamba4Rec, as the paper's last two columns. Where the
paper has the dataset, its value sits beside each cell (`<model>_paper`), and `<model>_outside_2std`
says whether our mean lies more than two of our standard deviations from it.

Which runs fill a cell (`Selection`, `candidates`): only runs that ended by their stopping rule,
never one cut short by an `--epochs` cap unless asked for (`--include-capped`, or by its tag);
among the configurations left, the one closest to the protocol, then with the most seeds, then
the one made first, so a later run of an equal configuration never moves a cell. `report runs`
lists every candidate with whether it was chosen and why not. Runs with a `tag` (e.g.
`--set tag=tuned`) form their own column, "matrrec (tuned)".
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from matrrec_cli.data.registry import training_defaults
from matrrec_cli.errors import MatrrecError, warn
from matrrec_cli.experiments import paper
from matrrec_cli.models import model_names
from matrrec_cli.paths import stores_text
from matrrec_cli.train.config import (
    NEUTRAL,
    NON_SEMANTIC,
    SETTABLE,
    comparable,
    given_differs,
    is_given,
    toml_text,
)
from matrrec_cli.train.runs import (
    CAPPED,
    ENV,
    HISTORY,
    finished_runs,
    is_published,
    read_json,
    stop_reason,
    unrounded,
)

MODEL_ORDER = ("gru4rec", "narm", "sasrec", "nextitnet", "bert4rec", "sine", "core",
               "mamba4rec", "matrrec")  # Table 2's columns (a)..(i)
DATASET_ORDER = ("ml-1m", "musical", "health", "electronics", "office")
METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@10")
OURS, VS = "matrrec", ("sasrec", "mamba4rec")
# model settings that change speed, not the model: a run using them still counts as plain
SPEED_KEYS = ("skip_padding", "readout_only", "attn_impl", "mamba_backend", "scan_impl")


def _seedless_key(cfg: dict[str, Any]) -> str:
    keep = {k: v for k, v in comparable(cfg).items()
            if k not in ("seed", "sources", "config_hash", *NON_SEMANTIC)}
    return repr(sorted(keep.items()))


Members = list[tuple[Path, dict, dict]]


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which finished runs a table may use.

    By default only runs that ended by their stopping rule (early stopping, or the whole epoch
    budget of the protocol): a run cut short by an `--epochs` cap is a smoke test, not a result.
    `tags` names recipes (`--set tag=NAME`): only those tagged columns are shown, and their runs
    count even when capped, since the user asked for them by name. `include_capped` admits
    every capped run (work in progress)."""

    tags: tuple[str, ...] | None = None
    include_capped: bool = False

    def admits(self, cfg: dict[str, Any], metrics: dict[str, Any]) -> str | None:
        """None when the run may be used, else why not."""
        tag = cfg.get("tag") or ""
        if tag and self.tags is not None and tag not in self.tags:
            return f"tag {tag!r} not asked for (--tag)"
        if self.include_capped or (tag and self.tags is not None):
            return None
        if stop_reason(cfg, metrics) == CAPPED:
            return (f"capped by --epochs {cfg.get('epochs')} before early stopping "
                    "(--include-capped, or name its tag with --tag)")
        return None


@dataclasses.dataclass
class Candidate:
    """One configuration's finished runs for a Table 2 cell, and whether the cell uses them."""

    dataset: str
    name: str  # the column: model, or "model (tag)"
    members: Members  # one run per seed, the newest where a seed ran twice
    departures: list[str]
    chosen: bool = False
    why: str = ""


def candidates(results_dir: str | Path, datasets: list[str] | None = None,
               models: list[str] | None = None,
               selection: Selection | None = None) -> list[Candidate]:
    """Every configuration with finished runs, ranked per cell: the chosen one first departs
    least from the protocol (departures), then has the most seeds, then was made first (so a
    later run of an equally ranked configuration never moves a cell). Runs the selection leaves
    out become candidates with the reason; they are never chosen."""
    selection = selection or Selection()
    groups: dict[tuple[str, str, str], Members] = {}
    left_out: list[Candidate] = []
    for run, cfg, metrics in finished_runs(results_dir):
        if datasets and cfg["dataset"] not in datasets:
            continue
        if models and cfg["model"] not in models:
            continue
        name = cfg["model"] + (f" ({cfg['tag']})" if cfg.get("tag") else "")  # tagged recipe
        why = selection.admits(cfg, metrics)
        if why is not None:
            left_out.append(Candidate(cfg["dataset"], name, [(run, cfg, metrics)], [], why=why))
            continue
        groups.setdefault((cfg["dataset"], name, _seedless_key(cfg)), []).append(
            (run, cfg, metrics))
    ranked: dict[tuple[str, str], list[tuple[tuple[int, int, str], Candidate]]] = {}
    for (ds, name, _), members in groups.items():
        # one run per seed: the published one, else the newest
        by_seed = {cfg["seed"]: (run, cfg, m) for run, cfg, m in sorted(
            members, key=lambda x: (is_published(x[0]), x[0].name))}
        kept = list(by_seed.values())
        cand = Candidate(ds, name, kept, departures(kept[0][1]))
        first_made = min(r.name for r, _, _ in cand.members)
        ranked.setdefault((ds, name), []).append(
            ((len(cand.departures), -len(cand.members), first_made), cand))
    out: list[Candidate] = []
    for items in ranked.values():
        items.sort(key=lambda item: item[0])
        (best_key, best), rest = items[0], items[1:]
        best.chosen, best.why = True, "chosen"
        out.append(best)
        for key, cand in rest:
            cand.why = (f"departs more from the protocol ({', '.join(cand.departures)})"
                        if key[0] > best_key[0] else
                        f"fewer seeds ({len(cand.members)} < {len(best.members)})"
                        if key[1] > best_key[1] else
                        "an equally ranked configuration was made first (tag this one to "
                        "show it as its own column)")
            out.append(cand)
    return out + left_out


def chosen_runs(results_dir: str | Path, datasets: list[str] | None = None,
                models: list[str] | None = None,
                selection: Selection | None = None) -> dict[tuple[str, str], Members]:
    """(dataset, column) -> the (run dir, config, metrics) of each seed of the chosen
    configuration (`candidates`): what every report uses for that cell."""
    return {(c.dataset, c.name): c.members
            for c in candidates(results_dir, datasets, models, selection) if c.chosen}


def departures(cfg: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """How a run departs from the model as the preset and the protocol define it, each as "key
    value": shown under Table 2 (so a tagged recipe's column says what it is), ranking Table 2's
    candidates and the claims' families. `ignore` names the settings a family varies (top-level
    or model keys). Each departure counts once: a model or trainer setting someone chose (--set,
    a run file, an ablation variant, a tune candidate) at another value than the run would have
    had without it (given_differs); the speed options of SPEED_KEYS and the knobs declared as not
    departing, such as eval_batch_size and tag, do not count. Then a max_len or dropout other
    than the dataset's (datasets.toml, or the imported dataset's meta.json), a non-prefix
    objective, a preset other than paper. Fewer departures win, so with only `all` runs at hand
    the one at the dataset's own max_len is used."""
    src = cfg.get("sources") or {}
    model_cfg = cfg.get("model_config") or {}
    out = []
    for k, v in src.items():  # values someone chose: --set, a run file, a variant, a candidate
        key = k.removeprefix("model.")
        if key in ignore or not is_given(v) or not given_differs(cfg, k):
            continue
        if k.startswith("model."):
            # the model's dropouts set by the dropout option are judged by value, below
            if key not in SPEED_KEYS and not ("dropout" in key and v == src.get("dropout")):
                out.append(f"{key} {toml_text(model_cfg.get(key))}")
        elif k in SETTABLE and k not in NEUTRAL:
            out.append(f"{k} {toml_text(cfg.get(k))}")
    try:
        own = training_defaults(cfg["dataset"], cfg.get("data_dir"))
    except MatrrecError:  # a dataset no longer registered: its own values are unknown
        own = None
    for key in ("max_len", "dropout"):
        if (own is not None and key not in ignore and is_given(src.get(key))
                and cfg.get(key) != getattr(own, key)):
            out.append(f"{key} {cfg.get(key)}")
    for key, want in (("objective", "prefix"), ("preset", "paper")):
        if key not in ignore and cfg.get(key, want) != want:
            out.append(f"{key} {cfg.get(key)}")
    return out


def no_runs_error(results_dir: str | Path, datasets: list[str] | None,
                  selection: Selection | None) -> MatrrecError:
    """The error for an empty table, saying which runs were left out and how to admit them."""
    left = [c for c in candidates(results_dir, datasets, None, selection) if not c.chosen]
    if not left:
        return MatrrecError(f"no finished runs under {stores_text(results_dir)}; "
                            "run matrrec train first")
    return MatrrecError(f"no finished run under {stores_text(results_dir)} qualifies: "
                        f"{len(left)} left out, e.g. {left[0].members[0][0]}: {left[0].why}")


def collect(results_dir: str | Path, datasets: list[str] | None = None,
            selection: Selection | None = None) -> pd.DataFrame:
    """One row per (dataset, model, metric): mean, std, seeds and settings of the chosen config."""
    chosen = chosen_runs(results_dir, datasets, selection=selection)
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
                "departures": ", ".join(departures(members[0][1])),
            })
    if not rows:
        raise no_runs_error(results_dir, datasets, selection)
    return pd.DataFrame(rows)


def _order(values: list[str], order: tuple[str, ...]) -> list[str]:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))


def model_order(names: list[str]) -> list[str]:
    """Table 2's columns: the paper's nine in its order, then recipes tagged on them
    ("matrrec (tuned)"), then the block of simple models (markov, sr, itemknn, ..., pop: the
    registry's order), each followed by its own tagged recipes ("sr (tuned)")."""
    registry = model_names()

    def key(name: str) -> tuple[int, int, int, str]:
        base, tagged = name.split(" (")[0], " (" in name
        if base in MODEL_ORDER:
            return int(tagged), MODEL_ORDER.index(base), 0, name
        place = registry.index(base) if base in registry else len(registry)
        return 2, place, int(tagged), name
    return sorted(set(names), key=key)


def table2(long: pd.DataFrame,
           sig_marks: dict[tuple[str, str, str], str | None] | None = None) -> pd.DataFrame:
    """Long records -> the paper's layout, with best/second marks and improvement columns;
    `sig_marks` ((dataset, baseline, metric) -> which is significantly better, see
    significance.marks) adds the paper's p < 0.01 marks to the improvement columns and, per
    model cell, `<model>_vs_matrrec`: "above" / "below" MaTrRec significantly, else None."""
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
                if sig_marks is not None and m != OURS:
                    row[f"{m}_vs_{OURS}"] = {"baseline": "above", OURS: "below"}.get(
                        sig_marks.get((ds, m, metric)))
            published = {m: paper.table2_value(ds, m, metric) for m in (OURS, *VS)}
            for base in VS:
                row[f"improvement_vs_{base}_pct"] = _gain(means.get(OURS), means.get(base))
                row[f"improvement_vs_{base}_pct_paper"] = _gain(published[OURS], published[base])
                if sig_marks is not None:
                    key = (ds, base, metric)
                    row[f"improvement_vs_{base}_significant"] = (
                        sig_marks[key] == OURS if key in sig_marks else None)
            out.append(row)
    return pd.DataFrame(out)


def _gain(ours: float | None, base: float | None) -> float | None:
    """MaTrRec's relative gain in percent, as the paper's improvement columns."""
    return round(100 * (ours - base) / base, 2) if ours is not None and base else None


def _joined(values: list[Any]) -> str:
    return " ".join("?" if v is None else str(v) for v in values)  # "?" = not recorded


def _env(run: Path) -> dict[str, Any]:
    """A run's env.json, or {} (shown as "?") when it is missing or corrupt."""
    if not (run / ENV).exists():
        return {}
    try:
        env = read_json(run / ENV)
    except MatrrecError as exc:
        warn(f"{exc}; its environment shows as ?")
        return {}
    return env if isinstance(env, dict) else {}


def _epoch_seconds(run: Path) -> list[float]:
    """Each epoch's training + validation seconds, from the run's history.jsonl."""
    path = run / HISTORY
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(float(json.loads(line)["seconds"]))
        except (ValueError, KeyError, TypeError):  # a torn line of a killed write
            warn(f"{path} line {n} is corrupt; its epoch time is left out")
    return out


def _relative(run: Path, root: Path) -> str:
    try:
        return Path(run).relative_to(root).as_posix()
    except ValueError:  # a run outside the results directory keeps its full path
        return str(run)


def runs(results_dir: str | Path, datasets: list[str] | None = None,
         selection: Selection | None = None) -> pd.DataFrame:
    """Every candidate configuration of every Table 2 cell, one row each: whether the cell uses
    it and why not, settings, seeds, epochs (best), how each run ended, training wall and where
    it ran (threads, device, git revision) next to the test metrics, so a cell's cost and
    provenance are one command away. `epoch_s_median` (training + validation, median over every
    epoch of every seed) is robust to a stretch shared with another job; wall / epochs is not."""
    rows = []
    for cand in candidates(results_dir, datasets, selection=selection):
        members = sorted(cand.members, key=lambda member: member[1]["seed"])
        cfg = members[0][1]
        metrics = [m for _, _, m in members]
        envs = [_env(run) for run, _, _ in members]
        known = [(m["wall_seconds"], m["epochs"]) for m in metrics
                 if m.get("wall_seconds") and m.get("epochs")]
        seconds = [s for run, _, _ in members for s in _epoch_seconds(run)]
        rows.append({
            "dataset": cand.dataset, "model": cand.name, "chosen": cand.chosen,
            "why": cand.why, "preset": cfg["preset"],
            "objective": cfg["objective"], "max_len": cfg["max_len"],
            "seeds": _joined([c["seed"] for _, c, _ in members]),
            "epochs": _joined([m.get("epochs") for m in metrics]),
            "best_epoch": _joined([m.get("best_epoch") for m in metrics]),
            "ended_by": _joined(list(dict.fromkeys(
                stop_reason(c, m).replace(" ", "_") for _, c, m in members))),
            "wall_s_mean": round(statistics.fmean(w for w, _ in known), 1) if known else None,
            "epoch_s_median": round(statistics.median(seconds), 2) if seconds else None,
            **{key: _joined(list(dict.fromkeys(e.get(field) for e in envs)))
               for key, field in (("threads", "torch_threads"), ("device", "device"),
                                  ("git", "git_revision"))},
            **{f"test_{k}": round(statistics.fmean(m["test"][k] for m in metrics), 4)
               for k in ("recall@10", "ndcg@10")},
            # relative to the results directory, so the CSV reads the same on every clone
            "run_dirs": " ".join(_relative(r, Path(results_dir)) for r, _, _ in members),
        })
    if not rows:
        raise no_runs_error(results_dir, datasets, selection)
    order = {m: i for i, m in enumerate(model_order([r["model"] for r in rows]))}
    return pd.DataFrame(rows).sort_values(
        ["dataset", "model", "chosen"],
        key=lambda s: s.map(order) if s.name == "model" else (~s if s.name == "chosen" else s),
        ignore_index=True)


def grids(results_dir: str | Path, datasets: list[str] | None = None,
          models: list[str] | None = None) -> pd.DataFrame:
    """The count models' own grids (`grid` of each model class: sr's window, itemknn's neighbors,
    ...) as the records have them: one row per setting with valid and test metrics (mean over
    seeds), the protocol's default marked, and the setting validation picks (highest valid
    NDCG@10; a tie goes to the one departing least, then to the grid's order). Configurations
    that depart in anything but the grid's keys (a --set beside it, a tag) are not grid points."""
    from matrrec_cli.models import get_model_class

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cand in candidates(results_dir, datasets, models):
        cfg, metrics = cand.members[0][1], cand.members[0][2]
        if cand.name not in model_names() or Selection().admits(cfg, metrics) is not None:
            continue
        grid = getattr(get_model_class(cand.name), "grid", {})
        if not grid or not {d.split(" ")[0] for d in cand.departures} <= set(grid):
            continue
        values = cfg.get("model_config", {})
        # unrounded where recorded, so the pick is not decided by a 4-digit tie
        mean = {f"{part}_{k}": statistics.fmean(unrounded(m, part, k) for _, _, m in cand.members)
                for part, k in (("valid", "ndcg@10"), ("test", "ndcg@10"),
                                ("test", "recall@10"))}
        groups.setdefault((cand.dataset, cand.name), []).append({
            "dataset": cand.dataset, "model": cand.name,
            "setting": ", ".join(f"{k} {toml_text(values.get(k))}" for k in grid),
            "default": not cand.departures, **{k: round(v, 4) for k, v in mean.items()},
            "seeds": len(cand.members), "_valid": mean["valid_ndcg@10"],
            "_order": (len(cand.departures), tuple(
                grid[k].index(values.get(k)) if values.get(k) in grid[k] else len(grid[k])
                for k in grid)),
        })
    if not groups:
        with_grid = [m for m in model_names() if getattr(get_model_class(m), "grid", {})]
        raise MatrrecError(f"no runs of a count model's grid under {stores_text(results_dir)}; "
                           f"run matrrec tune --dataset D --model M (M one of "
                           f"{', '.join(with_grid)}) first")
    rows = []
    order = {m: i for i, m in enumerate(model_names())}
    datasets_in = _order([ds for ds, _ in groups], DATASET_ORDER)  # Table 2's dataset order
    for key in sorted(groups, key=lambda k: (datasets_in.index(k[0]), order[k[1]])):
        points = groups[key]
        picked = min(points, key=lambda p: (-p["_valid"], p["_order"]))
        for p in sorted(points, key=lambda p: p["_order"][1]):
            rows.append({k: v for k, v in p.items() if not k.startswith("_")}
                        | {"picked": p is picked})
    return pd.DataFrame(rows)
