"""Search for a better recipe than the paper's with Optuna, chosen on the validation split only.

Optuna does the searching: the study (trials, their parameters and values) lives in its storage
— a SQLite file in the results directory by default, or any database URL (`--storage`) that
several workers or machines share, so a stopped study resumes (`--study NAME`) and parallel
workers never evaluate the same trial twice. Samplers: TPE (default) or grid. `--prune` lets a
median pruner stop a trial whose per-epoch valid NDCG@10 falls behind the other trials'.

What is ours: the search space syntax (`--space lr=loguniform:1e-4:1e-2`, `--space
dropout=0.1,0.3,0.5`; any `--set` key or own flag of the model and trainer), the faithful
configuration enqueued as the first trial (so every study compares with where it began), and
each trial's runs — trained or reused exactly as `matrrec train` would (same config hash, so a
trial of an already finished configuration costs nothing). A trial's value is the mean valid
NDCG@10 over the tuning seeds; the test mean is stored beside it, never used. The winner is
printed as the exact `matrrec train` command, tagged so Table 2 shows it as "<model> (tuned)".
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.experiments.runner import RunResult, RunSpec
from matrrec_cli.models import get_model_class
from matrrec_cli.train.config import OWN_FLAGS, RunOptions, TrainConfig
from matrrec_cli.train.progress import Reporter
from matrrec_cli.train.runs import unrounded

SCORE = "ndcg@10"  # RecBole's valid_metric, the early-stopping metric too
# The space searched when --space is not given (the old coordinate search's knobs), in order.
DEFAULT_SPACE = ("objective=prefix,all", "dropout=0.1,0.2,0.3,0.4,0.5", "max_len=10,20,30,50",
                 "n_layers=1,2", "lr=0.0003,0.001,0.003", "weight_decay=0.0,1e-05,0.0001")
KINDS = ("uniform", "loguniform", "int", "intlog")


@dataclass(frozen=True)
class Param:
    """One searched key: a list of values (categorical) or a range (uniform, loguniform, int,
    intlog)."""

    key: str
    kind: str  # "choice" or one of KINDS
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind in ("int", "intlog"):
            return trial.suggest_int(self.key, int(self.low), int(self.high),
                                     log=self.kind == "intlog")
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def holds(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_space(specs: list[str]) -> dict[str, Param]:
    """`key=v1,v2,...` (values) or `key=KIND:low:high` with KIND one of uniform, loguniform,
    int, intlog. Keys are checked against the model and trainer in `check_space`."""
    space: dict[str, Param] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise UsageError(f"--space {spec!r}: expected key=v1,v2 or key=loguniform:low:high")
        if key in space:  # the second would silently replace the first
            raise UsageError(f"--space {key} is given twice; give each key once (one list or "
                             "one range)")
        kind, _, rest = raw.partition(":")
        if kind in KINDS:
            try:
                low, high = (float(x) for x in rest.split(":"))
            except ValueError:
                raise UsageError(f"--space {spec!r}: expected {kind}:low:high") from None
            if not (math.isfinite(low) and math.isfinite(high) and low < high) or \
                    (kind in ("loguniform", "intlog") and low <= 0):
                raise UsageError(f"--space {spec!r}: needs low < high (and low > 0 for a log "
                                 "scale)")
            if kind in ("int", "intlog") and not (low.is_integer() and high.is_integer()):
                raise UsageError(f"--space {spec!r}: {kind} bounds must be whole numbers")
            space[key] = Param(key, kind, low=low, high=high)
        else:
            values = tuple(dict.fromkeys(_number(v.strip()) for v in raw.split(",") if v.strip()))
            if not values:
                raise UsageError(f"--space {spec!r} gives {key} no values")
            space[key] = Param(key, "choice", values=values)
    return space


def from_old_options(grid: list[str], knobs: list[str] | None) -> list[str]:
    """The earlier spelling: `--knobs a,b` picks keys of the default space, `--grid k=v1,v2`
    replaces a key's values."""
    defaults = dict(s.split("=", 1) for s in DEFAULT_SPACE)
    names = list(defaults) if knobs is None else [k.replace("-", "_") for k in knobs]
    for name in names:
        if name not in defaults:
            raise UsageError(f"--knobs {name!r}: choose from {', '.join(defaults)}, or search "
                             "any key with --space")
    chosen = {k: defaults[k] for k in names}
    for pair in grid:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not raw.strip():
            raise UsageError(f"--grid {pair!r} gives {key} no values; list at least one")
        if key not in chosen:
            raise UsageError(f"--grid {key}: not among the searched keys {', '.join(chosen)}")
        chosen[key] = raw
    return [f"{k}={v}" for k, v in chosen.items()]


def model_grid(model: str) -> list[str]:
    """A count model's own grid (its `grid`: sr, itemknn, sknn, vsknn, ease) as --space specs;
    empty for a trained model, whose default space is DEFAULT_SPACE."""
    cls = get_model_class(model)
    return [f"{k}={','.join(str(v) for v in vs)}" for k, vs in getattr(cls, "grid", {}).items()]


def current_value(cfg: TrainConfig, key: str) -> Any:
    """The value `key` has in a resolved TrainConfig (None: neither model nor trainer has it)."""
    if key in cfg.model_config:
        return cfg.model_config[key]
    return getattr(cfg, key, None)


def spec_for(choice: dict[str, Any], base: RunOptions, label: str) -> RunSpec:
    """The candidate `choice` (key -> value) on top of `base`, the command's options."""
    own = {k: v for k, v in choice.items() if k in OWN_FLAGS}
    sets = [f"{k}={v}" for k, v in choice.items() if k not in OWN_FLAGS]
    return RunSpec(base.given_by(f"tune {label}", sets=sets, **own), label=label)


def _check_types(key: str, values: tuple[Any, ...], current: Any) -> None:
    """A value list must hold values of the key's type: numbers for a numeric key (an int key
    whole numbers), true/false for a boolean one; anything else would fail inside a trial."""
    if isinstance(current, bool):
        bad = [v for v in values if str(v).lower() not in ("true", "false", "1", "0")]
        want = "true or false"
    elif isinstance(current, int):
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool)]
        want = "whole numbers"
    elif isinstance(current, float):
        bad = [v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)]
        want = "numbers"
    else:
        return
    if bad:
        raise UsageError(f"--space {key}: {bad[0]!r} is not a value of {key} (it takes {want}, "
                         f"like {current!r})")


def check_space(space: dict[str, Param], start: TrainConfig, sampler: str) -> dict[str, Any]:
    """Each key's value in the starting configuration, which must lie in its range (the faithful
    trial is part of every study); a value list gains it when it lacks it."""
    faithful = {}
    for key, param in space.items():
        value = current_value(start, key)
        if value is None:
            raise UsageError(f"--space {key}: neither model {start.model!r} nor the trainer has "
                             "this setting (matrrec models lists a model's keys)")
        if param.kind == "choice":
            _check_types(key, param.values, value)
        if param.kind == "choice" and not param.holds(value):
            space[key] = Param(key, "choice", values=(value, *param.values))
        elif not space[key].holds(value):
            raise UsageError(f"--space {key}: the starting value {value!r} is outside "
                             f"{param.low:g}..{param.high:g}; widen the range so the faithful "
                             "trial is part of the study")
        if sampler == "grid" and param.kind != "choice":
            raise UsageError(f"--sampler grid needs value lists; give --space {key}=v1,v2,...")
        faithful[key] = value
    return faithful


def study(*, name: str, storage: str, sampler: str, prune: bool, seed: int) -> Any:
    """Create or load the Optuna study (load: `--study NAME` resumes it)."""
    try:
        import optuna
    except ImportError:
        raise UsageError("matrrec tune runs on Optuna: pip install 'matrrec[optuna]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if sampler == "grid":
        # every combination of the value lists once: Optuna's brute-force sampler counts the
        # enqueued faithful trial and other workers' running trials as visited (its
        # GridSampler counts neither, so it would run the faithful point twice)
        chosen: Any = optuna.samplers.BruteForceSampler(seed=seed)
    elif sampler == "tpe":
        chosen = optuna.samplers.TPESampler(seed=seed)
    else:
        raise UsageError(f"--sampler must be tpe or grid, not {sampler!r}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if prune else \
        optuna.pruners.NopPruner()
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            return optuna.create_study(study_name=name, storage=open_storage(storage),
                                       sampler=chosen, pruner=pruner, direction="maximize",
                                       load_if_exists=True)
        except (ValueError, ImportError) as exc:
            raise MatrrecError(f"--storage {storage}: cannot open the study ({exc})") from None
        except Exception as exc:  # sqlalchemy's: a busy, unreachable or unusable database
            # Two workers starting together race to create the schema or the study: the loser
            # finds it made a moment later, so it tries again before giving up.
            last = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            if attempt < attempts:
                time.sleep(0.5 * attempt)
    raise MatrrecError(f"--storage {storage}: cannot open the study ({last})")


class PruningReporter(Reporter):
    """Reports each epoch's valid NDCG@10 to the trial and stops it when Optuna's pruner says
    so. Steps count the epochs of all the trial's seeds in order, so trials over the same seeds
    compare step by step."""

    def __init__(self, trial: Any) -> None:
        super().__init__()
        self.trial, self.step = trial, 0

    def epoch(self, record: dict[str, Any]) -> None:
        import optuna

        super().epoch(record)
        self.step += 1
        self.trial.report(record["valid_score"], self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {self.step} epoch(s): valid "
                                     f"{record['valid_score']:.4f} below the median")


# How long a SQLite write waits for another worker's (sqlite3's default is 5 s): on a loaded
# machine a worker holding the lock can be descheduled for longer, and "database is locked"
# would end the other worker's study mid-trial.
SQLITE_LOCK_TIMEOUT_S = 60.0


def open_storage(url: str) -> Any:
    """Optuna's storage for `url`; a SQLite file shared by several workers waits for the lock
    (SQLITE_LOCK_TIMEOUT_S) instead of failing."""
    import optuna

    if not url.startswith("sqlite:"):
        return url  # Optuna opens other databases with their own drivers' defaults
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}})


def default_storage(results_dir: str | Path) -> str:
    path = Path(results_dir) / "tune.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def _worker() -> str:
    """This process as a trial's owner: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def recover_stale(found: Any, storage: str) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer exists (killed mid-
    study): marked FAIL and their parameters enqueued again, so the study tries them once more
    (their finished runs are reused, their unfinished ones resume). Returns their numbers. A
    trial owned by a live process, or by another machine, is left alone."""
    import optuna
    from optuna.trial import TrialState

    store = optuna.storages.get_storage(open_storage(storage))
    study_id = store.get_study_id_from_name(found.study_name)
    host = socket.gethostname()
    stale = []
    for t in found.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = store.get_trial_id_from_study_id_trial_number(study_id, t.number)
        store.set_trial_state_values(trial_id, TrialState.FAIL)
        found.enqueue_trial(t.params, skip_if_exists=False)
        stale.append(t.number)
    return stale


def objective(space: dict[str, Param], base: RunOptions,
              run: Callable[[RunSpec, Any], list[RunResult]]) -> Callable[[Any], float]:
    """Optuna's objective: suggest, train (or reuse) over the tuning seeds, mean valid score."""
    def evaluate(trial: Any) -> float:
        trial.set_user_attr("worker", _worker())  # recover_stale's evidence of its owner
        choice = {k: p.suggest(trial) for k, p in space.items()}
        label = ",".join(f"{k}={v}" for k, v in choice.items())
        results = run(spec_for(choice, base, f"trial {trial.number}: {label}"), trial)
        trial.set_user_attr("test_" + SCORE, statistics.fmean(
            r.metrics["test"][SCORE] for r in results))  # shown, never used in a choice
        trial.set_user_attr("seeds", len(results))
        trial.set_user_attr("runs", [str(r.run_dir) for r in results])
        return statistics.fmean(unrounded(r.metrics, "valid", SCORE) for r in results)
    return evaluate


def rows(found: Any, faithful: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial of the study: number, state, parameters, valid and test score."""
    out = []
    best = _best(found)
    for t in found.trials:
        out.append({"trial": t.number, "state": t.state.name.lower(),
                    **{k: t.params.get(k) for k in faithful},
                    "valid_" + SCORE: None if t.value is None else round(t.value, 4),
                    "test_" + SCORE: (round(t.user_attrs["test_" + SCORE], 4)
                                      if "test_" + SCORE in t.user_attrs else None),
                    "faithful": t.params == faithful,
                    "best": best is not None and t.number == best.number})
    return out


def _best(found: Any) -> Any:
    done = [t for t in found.trials if t.value is not None and t.state.name == "COMPLETE"]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def winner(found: Any, faithful: dict[str, Any]) -> dict[str, Any] | None:
    """The best trial's parameters that differ from the faithful ones, or None when no trial
    beat the faithful trial on validation (or it has not finished)."""
    best = _best(found)
    start = next((t for t in found.trials if t.params == faithful and t.value is not None),
                 None)
    if best is None or start is None or best.value <= start.value:
        return None
    return {k: v for k, v in best.params.items() if v != faithful.get(k)}


def command(base: RunOptions, best: dict[str, Any], seeds: int = 5) -> str:
    """The `matrrec train` line that reproduces the tuned recipe, tagged for Table 2."""
    parts = ["matrrec train", f"--dataset {base.dataset}", f"--model {base.model}"]
    for key, value in best.items():
        if key in OWN_FLAGS:
            parts.append(f"--{key.replace('_', '-')} {value}")
    sets = [*base.sets, *(f"{k}={v}" for k, v in best.items() if k not in OWN_FLAGS),
            "tag=tuned"]
    parts += [f"--set {s}" for s in sets]
    if get_model_class(base.model).trainable:  # a count model is the same at every seed
        parts.append(f"--seeds {seeds}")
    return " ".join(parts)
