"""Search for a better recipe than the paper's, chosen on the validation split only.

Coordinate search from the faithful configuration: for each knob in turn, train every value
with the other knobs at the best found so far, and keep the value with the highest mean valid
NDCG@10 over the tuning seeds (a tie keeps the value already held). Test metrics are carried
only to be reported; they never take part in a choice. The winner is printed as the exact
`matrrec train` command, tagged so that Table 2 shows it as its own column, "<model> (tuned)".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments.runner import RunResult, RunSpec

SCORE = "ndcg@10"  # RecBole's valid_metric, the early-stopping metric too
# knob -> (how it is given: a train option or a --set key, the values tried), in search order
KNOBS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "objective": ("cli", ("prefix", "all")),
    "dropout": ("cli", (0.1, 0.2, 0.3, 0.4, 0.5)),
    "max_len": ("cli", (10, 20, 30, 50)),
    "n_layers": ("set", (1, 2)),
    "lr": ("set", (3e-4, 1e-3, 3e-3)),
    "weight_decay": ("set", (0.0, 1e-5, 1e-4)),
}


def parse_grid(pairs: list[str]) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """`--grid knob=v1,v2` overrides (repeatable); a knob absent from every pair keeps its
    default values. An empty value list (`--grid lr=`) leaves the knob out of the search."""
    grid = dict(KNOBS)
    for pair in pairs:
        knob, sep, raw = pair.partition("=")
        if not sep or knob not in KNOBS:
            raise UsageError(f"--grid {pair!r}: expected knob=v1,v2 with knob one of "
                             f"{', '.join(KNOBS)}")
        kind, defaults = KNOBS[knob]
        try:
            values = tuple(type(defaults[0])(v.strip()) for v in raw.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"--grid {pair!r}: values must be like {defaults[0]!r}") from None
        if values:
            grid[knob] = (kind, values)
        else:
            grid.pop(knob)
    return grid


def spec_for(dataset: str, model: str, choice: dict[str, Any],
             grid: dict[str, tuple[str, tuple[Any, ...]]], base_cli: dict[str, Any],
             base_sets: list[str]) -> RunSpec:
    cli = dict(base_cli)
    sets = list(base_sets)
    for knob, value in choice.items():
        if grid[knob][0] == "cli":
            cli[knob] = value
        else:
            sets.append(f"{knob}={value}")
    label = ",".join(f"{k}={v}" for k, v in choice.items()) or "faithful"
    return RunSpec(dataset=dataset, model=model, label=label,
                   cli=tuple((k, v) for k, v in cli.items() if v is not None), sets=tuple(sets))


def _mean(results: list[RunResult], split: str) -> float:
    return statistics.fmean(r.metrics[split][SCORE] for r in results)


def search(dataset: str, model: str, grid: dict[str, tuple[str, tuple[Any, ...]]],
           run: Callable[[RunSpec], list[RunResult]], *, base_cli: dict[str, Any],
           base_sets: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chosen knob values and one row per trained candidate (knob, value, valid and test
    mean, kept). `run` trains (or reuses) a spec over the tuning seeds."""
    best: dict[str, Any] = {}
    best_valid: float | None = None
    rows: list[dict[str, Any]] = []
    for knob, (_, values) in grid.items():
        kept = None
        for value in values:
            spec = spec_for(dataset, model, {**best, knob: value}, grid, base_cli, base_sets)
            results = run(spec)
            valid, test = _mean(results, "valid"), _mean(results, "test")
            rows.append({"knob": knob, "value": value, "valid_" + SCORE: round(valid, 4),
                         "test_" + SCORE: round(test, 4), "seeds": len(results),
                         "config": spec.label})
            if best_valid is None or valid > best_valid:
                best_valid, kept = valid, value
        if kept is not None:  # else no value beat the best so far: the knob stays as it was
            best[knob] = kept
        for row in rows:
            if row["knob"] == knob:
                row["kept"] = kept is not None and row["value"] == kept
    return best, rows


def command(dataset: str, model: str, best: dict[str, Any],
            grid: dict[str, tuple[str, tuple[Any, ...]]], base_sets: list[str],
            seeds: int = 5) -> str:
    """The `matrrec train` line that reproduces the tuned recipe, tagged for Table 2."""
    parts = ["matrrec train", f"--dataset {dataset}", f"--model {model}"]
    for knob, value in best.items():
        if grid[knob][0] == "cli":
            parts.append(f"--{knob.replace('_', '-')} {value}")
    sets = [*base_sets, *(f"{k}={v}" for k, v in best.items() if grid[k][0] == "set"),
            "tag=tuned"]
    parts += [f"--set {s}" for s in sets]
    parts.append(f"--seeds {seeds}")
    return " ".join(parts)
