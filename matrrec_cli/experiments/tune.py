"""Search for a better recipe than the paper's, chosen on the validation split only.

Coordinate search from the starting configuration (the faithful one, plus any `--set` given):
the start is trained first, and each knob's current value is always one of its candidates, so
nothing is chosen that was not compared with where the search began. For each knob in turn,
train every value with the other knobs at the best found so far, and keep the value with the
highest mean valid NDCG@10 over the tuning seeds (a tie keeps the value already held). Test
metrics are carried only to be reported; they never take part in a choice. The winner is
printed as the exact `matrrec train` command, tagged so that Table 2 shows it as its own column,
"<model> (tuned)".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments.runner import RunResult, RunSpec
from matrrec_cli.train.config import RunOptions

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


def parse_grid(pairs: list[str], knobs: list[str] | None = None
               ) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """`--grid knob=v1,v2` replaces a knob's values (repeatable); `knobs` (`--knobs a,b`) limits
    the search to those knobs, in search order. A knob never gets an empty list of values: that
    would be a search that measures nothing."""
    names = list(KNOBS) if knobs is None else knobs
    for knob in names:
        if knob not in KNOBS:
            raise UsageError(f"--knobs {knob!r}: choose from {', '.join(KNOBS)}")
    grid = {k: KNOBS[k] for k in KNOBS if k in names}
    for pair in pairs:
        knob, sep, raw = pair.partition("=")
        knob = knob.strip().replace("-", "_")
        if not sep or knob not in KNOBS:
            raise UsageError(f"--grid {pair!r}: expected knob=v1,v2 with knob one of "
                             f"{', '.join(KNOBS)}")
        kind, defaults = KNOBS[knob]
        try:
            values = tuple(type(defaults[0])(v.strip()) for v in raw.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"--grid {pair!r}: values must be like {defaults[0]!r}") from None
        if not values:
            raise UsageError(f"--grid {pair!r} gives {knob} no values; list at least one, or "
                             f"search other knobs only with --knobs")
        if knob not in grid:
            raise UsageError(f"--grid {knob}: not among --knobs {', '.join(names)}")
        grid[knob] = (kind, values)
    if not grid:
        raise UsageError("no knob to search; --knobs lists none")
    return grid


def current_value(cfg: Any, knob: str) -> Any:
    """The value `knob` has in a resolved TrainConfig (None: the model has no such setting)."""
    if knob in cfg.model_config:
        return cfg.model_config[knob]
    return getattr(cfg, knob, None)


def spec_for(choice: dict[str, Any], grid: dict[str, tuple[str, tuple[Any, ...]]],
             base: RunOptions) -> RunSpec:
    """The candidate `choice` (knob -> value) on top of `base`, the command's options."""
    values = {k: v for k, v in choice.items() if grid[k][0] == "cli"}
    sets = [f"{k}={v}" for k, v in choice.items() if grid[k][0] == "set"]
    label = ",".join(f"{k}={v}" for k, v in choice.items()) or "faithful"
    return RunSpec(base.given_by(f"tune {label}", sets=sets, **values), label=label)


def _mean(results: list[RunResult], split: str) -> float:
    return statistics.fmean(r.metrics[split][SCORE] for r in results)


def search(grid: dict[str, tuple[str, tuple[Any, ...]]],
           run: Callable[[RunSpec], list[RunResult]], *, base: RunOptions,
           start: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chosen knob values (only those that moved from `start`) and one row per candidate
    (knob, value, valid and test mean, whether it is the value held before, kept). `start` holds
    each knob's value in the starting configuration; `run` trains (or reuses) a spec over the
    tuning seeds. The starting configuration is measured first, and each knob's held value is
    a candidate (its runs are the incumbent's, reused)."""
    best: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []

    def measure(knob: str, value: Any, choice: dict[str, Any], held: bool) -> float:
        spec = spec_for(choice, grid, base)
        results = run(spec)
        valid, test = _mean(results, "valid"), _mean(results, "test")
        rows.append({"knob": knob, "value": value, "valid_" + SCORE: round(valid, 4),
                     "test_" + SCORE: round(test, 4), "seeds": len(results),
                     "config": spec.label, "held": held, "kept": held})
        return valid

    best_valid = measure("start", "-", {}, True)
    for knob, (_, values) in grid.items():
        held = start[knob]
        first = len(rows)
        measure(knob, held, dict(best), True)  # the incumbent: the same runs, reused
        kept = held
        for value in values:
            if value == held:
                continue
            valid = measure(knob, value, {**best, knob: value}, False)
            if valid > best_valid:
                best_valid, kept = valid, value
        if kept != held:
            best[knob] = kept
        for row in rows[first:]:
            row["kept"] = row["value"] == kept
    return best, rows


def command(base: RunOptions, best: dict[str, Any],
            grid: dict[str, tuple[str, tuple[Any, ...]]], seeds: int = 5) -> str:
    """The `matrrec train` line that reproduces the tuned recipe, tagged for Table 2."""
    parts = ["matrrec train", f"--dataset {base.dataset}", f"--model {base.model}"]
    for knob, value in best.items():
        if grid[knob][0] == "cli":
            parts.append(f"--{knob.replace('_', '-')} {value}")
    sets = [*base.sets, *(f"{k}={v}" for k, v in best.items() if grid[k][0] == "set"),
            "tag=tuned"]
    parts += [f"--set {s}" for s in sets]
    parts.append(f"--seeds {seeds}")
    return " ".join(parts)
