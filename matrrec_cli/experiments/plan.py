"""What an experiment would cost here, before it is started (`matrrec profile --plan`).

cost of a model's runs = runs x epochs per run x seconds per epoch (+ evaluation per epoch)

* runs: what the experiment trains (PLANS), less the runs already finished (either store):
  for Table 2 the seeds of each model's cell where the cell is the protocol's own model
  (table2.candidates: a shuffled or ablated run is no seed of Table 2); for Table 3 and the
  figures, given the options the command will get (`--set ...`), exactly the runs
  `ablate --all` / `sweep` would reuse;
* epochs per run: the mean epochs of this model's finished, early-stopped runs on the dataset
  (else on any dataset, else the protocol's patience plus one, the least a run can take);
* seconds per epoch and inference seconds: matrrec profile's rows for the dataset (real or
  --synthetic-like), on each device profiled; a model without a row is named with the profile
  command that measures it;
* memory: the profile row's peak.

On N Ray workers the wall is the work divided over the workers, never below the longest single
run; a GPU row gives the GPU's wall.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments import ablation, sweep
from matrrec_cli.experiments.claims import profile_rows
from matrrec_cli.experiments.runner import RunSpec, parse_seeds, resolve_spec
from matrrec_cli.experiments.table2 import MODEL_ORDER, candidates
from matrrec_cli.train.config import TRAINER_DEFAULTS, RunOptions
from matrrec_cli.train.runs import EARLY, find_finished, finished_runs, stop_reason

SEEDS = 5
ABLATIONS = 7  # Table 3's rows: the default and six variants
FIGURE_VALUES = {"dropout": [0.1, 0.2, 0.3, 0.4, 0.5],  # Figures 2 and 3 (the paper's axes)
                 "max_len": [10, 20, 30, 40, 50, 70]}
FIGURE_POINTS = 5 + 6 - 1  # the default point is on both axes
PLANS = {
    "table2": "every neural model of Table 2, 5 seeds",
    "table3": "MaTrRec's default and six ablations, 5 seeds",
    "figures": "MaTrRec over 5 dropouts and 6 lengths (the default shared), 5 seeds",
}


@dataclasses.dataclass
class Line:
    model: str
    runs: int
    epochs: float
    epochs_from: str
    device: str | None = None
    s_per_epoch: float | None = None
    inference_s: float | None = None
    memory_gb: float | None = None

    @property
    def hours(self) -> float | None:
        if self.s_per_epoch is None:
            return None
        # every epoch also scores the validation users once (about one inference pass)
        return self.runs * self.epochs * (self.s_per_epoch + (self.inference_s or 0.0)) / 3600


def runs_of(plan: str) -> dict[str, int]:
    """Model -> runs the plan trains from nothing."""
    if plan == "table2":
        return dict.fromkeys(MODEL_ORDER, SEEDS)
    if plan == "table3":
        return {"matrrec": ABLATIONS * SEEDS}
    if plan == "figures":
        return {"matrrec": FIGURE_POINTS * SEEDS}
    raise UsageError(f"--plan must be one of {', '.join(PLANS)}, not {plan!r}")


def _specs(what: str, base: RunOptions) -> list[RunSpec]:
    """The MaTrRec specs `ablate --all` (table3) or the two `sweep`s (figures) build from `base`."""
    if what == "table3":
        every = ablation.variants(remove=[], add=[], heads=[], layers=[], all_=True)
        return ablation.specs([base.dataset], every, base)
    base = base.given_by("plan", model="matrrec")
    return [spec for param, values in FIGURE_VALUES.items()
            for spec in sweep.specs(sweep.canonical(param), values, [base.dataset], base)]


def to_run(what: str, base: RunOptions) -> tuple[int, int]:
    """(runs the plan still has to train, runs it asks for) for table3 or figures: each
    configuration and seed once (the default point of both figures is one run per seed), less
    those with a finished run in either store, found as the experiment command finds them."""
    configs = {}
    for spec in _specs(what, base):
        for seed in parse_seeds(str(SEEDS)).values:
            cfg = resolve_spec(spec, seed=seed, prepared=False)
            configs.setdefault(cfg.config_hash(), cfg)
    return sum(find_finished(c) is None for c in configs.values()), len(configs)


def _epochs(results_dir: Path, dataset: str) -> dict[str, tuple[float, str]]:
    """Model -> (mean epochs of its early-stopped runs, where that comes from)."""
    here: dict[str, list[int]] = {}
    anywhere: dict[str, list[int]] = {}
    for _, cfg, metrics in finished_runs(results_dir):
        if stop_reason(cfg, metrics) != EARLY or cfg.get("tag"):
            continue
        anywhere.setdefault(cfg["model"], []).append(int(metrics["epochs"]))
        if cfg["dataset"] == dataset:
            here.setdefault(cfg["model"], []).append(int(metrics["epochs"]))
    out = {m: (statistics.fmean(v), f"{len(v)} runs on {dataset}") for m, v in here.items()}
    for m, v in anywhere.items():
        out.setdefault(m, (statistics.fmean(v), f"{len(v)} runs on other datasets"))
    return out


def plan(results_dir: str | Path, dataset: str, what: str, *,
         left: int | None = None) -> list[Line]:
    """One line per (model, device profiled) of the plan; a model never profiled on this
    dataset gets one line without costs. `left`: the runs Table 3 or the figures still have to
    train (`to_run`), instead of all of them."""
    rdir = Path(results_dir)
    want = runs_of(what)
    if left is not None and what != "table2":
        want = {"matrrec": left}
    # Table 2's seeds already finished: those of the cell's chosen configuration, only where
    # it is the protocol's own (a shuffled or ablated run makes no seed of Table 2)
    done = {c.name: len(c.members) for c in candidates(rdir, [dataset], list(want))
            if c.chosen and not c.departures} if what == "table2" else {}
    epochs = _epochs(rdir, dataset)
    least = TRAINER_DEFAULTS["stopping_step"] + 1
    # the profile rows of the dataset (this machine's before the published), one per model
    # and device: Table 5's, at the dataset's own L, before Table 4's other lengths
    prof = profile_rows(rdir, dataset).drop_duplicates(["model", "device"], keep="first")
    lines = []
    for model, n in want.items():
        if what == "table2":
            n = max(0, n - done.get(model, 0))
        e, source = epochs.get(model, (float(least), "no finished run: the least a run takes"))
        rows = prof[prof["model"] == model]
        if rows.empty:
            lines.append(Line(model, n, e, source))
        for _, r in rows.iterrows():
            lines.append(Line(model, n, e, source, str(r["device"]),
                              float(r["train_s_per_epoch"]), float(r["inference_s"]),
                              float(r["memory_gb"])))
    return lines


def wall_hours(lines: list[Line], device: str, workers: int) -> float | None:
    """The wall on `workers` parallel workers of one device kind: the work divided over them,
    never below the longest single run."""
    hours = [(x.hours, x.runs) for x in lines if x.device == device and x.hours is not None]
    if not hours:
        return None
    longest = max((h / n for h, n in hours if n), default=0.0)
    return max(sum(h for h, _ in hours) / workers, longest)
