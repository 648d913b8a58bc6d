"""Run directories and their records.

    results/runs/<dataset>/<model>/<run-id>/
        config.json      resolved TrainConfig with the source of every value, and its hash
        env.json         package versions, git revision, device, Mamba backend used
        history.jsonl    one JSON object per epoch (loss, valid metrics, early-stopping state)
        last.pt          checkpoint after the latest epoch (everything --resume needs)
        best.pt          model weights of the best valid epoch (what the test uses)
        ranks.parquet    per-user rank of the target, valid and test (for significance tests)
        metrics.json     final valid and test metrics; its presence marks the run finished

The run id is `<UTC time>-<config hash>`; `--resume` picks the newest unfinished run whose
config.json has the same hash. Finished runs are also read from the published evidence,
results/published/runs/ (the same layout, without last.pt; paths.run_stores): experiment
commands reuse them and reports count them, while new runs are only ever written to runs/.
`runs/.locks/<dataset>-<model>-<config hash>.lock` is held (flock)
by the process training that configuration and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matrrec_cli.errors import MatrrecError, warn
from matrrec_cli.io import current_umask, exclusive_lock
from matrrec_cli.paths import PUBLISHED, run_stores
from matrrec_cli.train.config import TRAINER_DEFAULTS, TrainConfig

CONFIG, METRICS, HISTORY, RANKS, ENV = (
    "config.json", "metrics.json", "history.jsonl", "ranks.parquet", "env.json",
)
LAST, BEST = "last.pt", "best.pt"
REFIT, REFIT_LAST = "refit.pt", "refit_last.pt"  # the refit option (trainer.refit)
CHECKPOINTS = (BEST, LAST, REFIT, REFIT_LAST)


def weights(cfg: TrainConfig, split: str) -> str:
    """The checkpoint that scores `split` (and recommends, as "test"): refit.pt for the test of
    a run with the refit option, else best.pt."""
    return REFIT if cfg.refit and split == "test" else BEST


def require_weights(run_dir: Path, cfg: TrainConfig, split: str) -> Path:
    """The checkpoint that scores `split` of a run (`weights`), or one error saying why it is
    not there and what gives it."""
    path = run_dir / weights(cfg, split)
    if path.exists():
        return path
    if is_published(run_dir):
        raise MatrrecError(f"{path} is not there: this run's record was published without its "
                           "checkpoints (matrrec publish --checkpoints keeps them); train the "
                           "same configuration here to score with it")
    raise MatrrecError(f"{path} is missing: the run is unfinished (matrrec train --resume), or "
                       "was trained elsewhere (a Ray worker) without its checkpoints; train it "
                       "again locally, or with --keep-checkpoints")


class RunBusy(MatrrecError):
    """Another process holds the training lock of this configuration and seed."""


@contextlib.contextmanager
def training_lock(cfg: TrainConfig) -> Iterator[None]:
    """Hold the lock of `cfg`'s configuration and seed (its config hash) while training it.

    Two processes training the same configuration and seed (two workers of a sweep, or one
    command started twice) would create two runs of it or interleave one run's checkpoints; the
    second one gets a clear error instead. The lock covers finding or creating the run directory
    as well as training. An OS lock (flock), so a killed process never leaves it held and resume
    after a crash still works. Where flock does not exist (Windows) runs are not locked.
    """
    locks = Path(cfg.results_dir) / "runs" / ".locks"  # beside, not among, the run dirs
    locks.mkdir(parents=True, exist_ok=True)
    busy = RunBusy(f"{cfg.dataset}/{cfg.model} seed {cfg.seed} (config {cfg.config_hash()}) is "
                   "being trained by another process; wait for it to finish (or train another "
                   "seed)")
    with exclusive_lock(locks / f"{cfg.dataset}-{cfg.model}-{cfg.config_hash()}.lock", busy):
        yield


def check_writable(cfg: TrainConfig) -> None:
    """Raise the OSError that training would meet later when the results directory cannot hold
    a run (not a directory, not writable, a name the file system refuses)."""
    root = Path(cfg.results_dir) / "runs"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
        pass


def runs_root(results_dir: str | Path, dataset: str, model: str) -> Path:
    return Path(results_dir) / "runs" / dataset / model


def new_run_dir(cfg: TrainConfig) -> Path:
    """A fresh, unique run directory for `cfg`."""
    root = runs_root(cfg.results_dir, cfg.dataset, cfg.model)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{cfg.config_hash()}"
    for i in range(1000):
        path = root / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise MatrrecError(f"could not create a run directory under {root}")


RECORD_FILES = (CONFIG, ENV, HISTORY, RANKS, METRICS)  # a finished run, without checkpoints


def pack_run(run_dir: Path, *, checkpoints: bool | tuple[str, ...] = False
             ) -> dict[str, bytes]:
    """A finished run's files by name, to send from the machine that trained it (a Ray worker)
    to the one that keeps the results, or to publish; checkpoints only when asked (True:
    best.pt, last.pt and refit.pt; or the names given)."""
    extra = (BEST, LAST, REFIT) if checkpoints is True else checkpoints or ()
    names = [*RECORD_FILES, *extra]
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).exists()}


def place_run(files: dict[str, bytes], final: Path, staging: Path) -> Path:
    """Write a run's `files` into a fresh directory under `staging` and rename it to `final`
    whole (metrics.json included), so a reader never sees half a run and a failed write
    leaves none."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=staging))
    try:
        for name, blob in files.items():
            (tmp / Path(name).name).write_bytes(blob)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from a group
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):  # empty now, unless another writer stages beside us
            staging.rmdir()
    return final


def install_run(cfg: TrainConfig, files: dict[str, bytes]) -> Path:
    """Write a run trained elsewhere into `cfg.results_dir` with the identity a local run has
    (`<time>-<hash>` under runs/<dataset>/<model>/, config.json naming this machine's
    directories). Built in runs/.staging and renamed into place whole, metrics.json included:
    a reader never sees a half-written run, and a failed write leaves none."""
    if METRICS not in files:
        raise MatrrecError(f"the run record of {cfg.dataset}/{cfg.model} seed {cfg.seed} has no "
                           f"{METRICS}: it did not finish")
    # the worker's own directories are no concern of this machine
    files = {**files, CONFIG: record_bytes(cfg.to_dict())}
    final = new_run_dir(cfg)  # reserves a unique name; the staged run replaces it
    final.rmdir()
    return place_run(files, final, Path(cfg.results_dir) / "runs" / ".staging")


def record_bytes(record: dict[str, Any]) -> bytes:
    """A JSON record as train writes it (io.write_json's format)."""
    return (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode()


def unrounded(metrics: dict[str, Any], split: str, key: str) -> float:
    """A recorded metric at full precision (metrics.json's `<split>_full`; records that predate
    it have only the 4-digit `<split>`): choices compare these, so a tie at the shown precision
    is broken by the value, not by the order the runs were made in."""
    full = metrics.get(f"{split}_full")
    return float((full if isinstance(full, dict) and key in full else metrics[split])[key])


def is_published(run: Path) -> bool:
    """Whether a run directory is part of the published evidence (<results>/published/runs/
    <dataset>/<model>/<run id>): never written to, never resumed."""
    return len(run.parts) >= 5 and run.parts[-5:-3] == (PUBLISHED, "runs")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MatrrecError(f"cannot read {path}: {exc}") from None


def _runs_of(cfg: TrainConfig, *, published: bool = False) -> Iterator[Path]:
    """Run directories of exactly `cfg` (the config hash recorded in their config.json), newest
    first: the one rule by which finished and unfinished runs are found. `published`: the
    published evidence first, then this machine's runs."""
    stores = run_stores(cfg.results_dir)
    for store in stores if published else stores[1:]:
        root = store / cfg.dataset / cfg.model
        if not root.is_dir():
            continue
        want = cfg.config_hash()
        for path in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
            try:
                recorded = json.loads((path / CONFIG).read_text()).get("config_hash")
            except (OSError, ValueError, AttributeError):  # not a run, or a torn record
                continue
            if recorded == want:
                yield path


def find_unfinished(cfg: TrainConfig) -> Path | None:
    """The newest run of the same configuration that has no metrics.json yet (this machine's
    own runs: published ones are finished)."""
    return next((p for p in _runs_of(cfg) if not (p / METRICS).exists()), None)


def find_finished(cfg: TrainConfig) -> Path | None:
    """A finished run (metrics.json present) of exactly this configuration and seed: the
    published one where there is one (so a command re-run on a clone reuses the evidence and
    prints its numbers), else the newest of this machine's."""
    return next((p for p in _runs_of(cfg, published=True) if (p / METRICS).exists()), None)


def load_run(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any] | None]:
    """A run's config and (if finished) metrics record."""
    path = Path(run_dir)
    if not (path / CONFIG).exists():
        raise MatrrecError(f"{path} is not a run directory (no {CONFIG}); see results/runs/")
    try:
        cfg = TrainConfig.from_dict(read_json(path / CONFIG))
    except (TypeError, AttributeError):  # {} or a list: not the record train writes
        raise MatrrecError(f"{path / CONFIG} is corrupt (not a run configuration); train the "
                           "run again") from None
    bad = _mistyped(cfg)
    if bad:
        raise MatrrecError(f"{path / CONFIG} is corrupt ({bad}); train the run again")
    metrics = read_json(path / METRICS) if (path / METRICS).exists() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise MatrrecError(f"{path / METRICS} is corrupt; train the run again")
    return cfg, metrics


def _mistyped(cfg: TrainConfig) -> str | None:
    """The first field of a loaded configuration whose value is not of its default's type
    (a hand-edited or damaged config.json: `"max_len": "ten"`), as "max_len is 'ten'"."""
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if default is dataclasses.MISSING:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else None
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            return f"{f.name} is {value!r}"
    return None


def data_dir_of(run_dir: Path, cfg: TrainConfig, given: str | Path | None = None) -> str:
    """Where a run's dataset is prepared: `given` (--data-dir), else the directory the run
    recorded. A relative one was relative to where training ran; seen from elsewhere, it is
    looked for beside the run's results directory (<dir>/results/runs/... -> <dir>/data), the
    layout the defaults make, before it is given up on."""
    if given is not None:
        return str(given)
    recorded = Path(cfg.data_dir)
    if recorded.is_absolute() or (recorded / cfg.dataset).exists():
        return cfg.data_dir
    depth = 5 if is_published(run_dir) else 4  # runs/<ds>/<model>/<id> (published/ above)
    parents = Path(run_dir).resolve().parents
    if len(parents) > depth and (parents[depth] / recorded / cfg.dataset).exists():
        return str(parents[depth] / recorded)
    return cfg.data_dir


def check_record(run: Path, cfg: Any, metrics: Any) -> None:
    """Raise when a finished run's records lack what the reports read (a torn or emptied file)."""
    if not isinstance(cfg, dict) or not all(
            isinstance(cfg.get(k), t) for k, t in (("dataset", str), ("model", str),
                                                   ("seed", int))):
        raise MatrrecError(f"{run / CONFIG} is corrupt (no dataset, model or seed)")
    test = metrics.get("test") if isinstance(metrics, dict) else None
    if not isinstance(test, dict) or not test or not all(
            isinstance(v, (int, float)) for v in test.values()):
        raise MatrrecError(f"{run / METRICS} is corrupt (no test metrics)")


def finished_runs(results_dir: str | Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(run dir, config dict, metrics dict) of every finished run under results/published/runs
    and results/runs; a run published from this machine (the same run id under the same
    dataset and model) counts once, as its published copy. A run whose records are corrupt is
    skipped with a warning naming it: one bad record never blocks the reports of every other
    run."""
    seen: set[tuple[str, str, str]] = set()
    found = []
    for store in run_stores(results_dir):
        for metrics_path in sorted(store.glob(f"*/*/*/{METRICS}")):
            key = metrics_path.parts[-4:-1]  # (dataset, model, run id)
            if key not in seen:
                seen.add(key)
                found.append(metrics_path)
    out = []
    for metrics_path in sorted(found, key=lambda p: p.parts[-4:-1]):
        run = metrics_path.parent
        try:
            cfg, metrics = read_json(run / CONFIG), read_json(metrics_path)
            check_record(run, cfg, metrics)
        except MatrrecError as exc:
            warn(f"skipping run {run}: {exc}; train it again or delete it")
            continue
        out.append((run, cfg, metrics))
    return out


EARLY, BUDGET, CAPPED, COUNTED = "early stopping", "epoch budget", "epochs cap", "counted"
PROTOCOL_EPOCHS = TRAINER_DEFAULTS["epochs"]  # RecBole's budget; fewer is a cap


def stop_reason(cfg: dict[str, Any], metrics: dict[str, Any]) -> str:
    """How a finished run ended: early stopping; the protocol's whole epoch budget (or more);
    a budget cut below the protocol's by `--epochs` before early stopping (a smoke run, not a
    result); or counted (no training). New records store it (metrics.json `stop_reason`); older
    ones are read from their config and metrics."""
    if metrics.get("stop_reason"):
        return metrics["stop_reason"]
    if metrics.get("stopped_early"):
        return EARLY
    if metrics.get("counted") or not _trainable(cfg.get("model", "")):
        return COUNTED
    return CAPPED if int(cfg.get("epochs", PROTOCOL_EPOCHS)) < PROTOCOL_EPOCHS else BUDGET


def _trainable(model: str) -> bool:
    from matrrec_cli.models import get_model_class

    try:
        return bool(get_model_class(model).trainable)
    except MatrrecError:  # a model no longer registered: judge it as a trained one
        return True
