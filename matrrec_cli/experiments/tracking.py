"""Send each trained run to an experiment tracker: MLflow, or TensorBoard event files.

A run is logged from its run directory once it has finished (locally or on a Ray worker, then
installed here), so every executor logs the same thing and nothing in the training loop waits
on a tracker:

* MLflow (`--track mlflow`, or whenever $MLFLOW_TRACKING_URI is set): the resolved config as
  params (model settings as `model.<key>`) with each value's source as a tag `source.<key>`;
  every epoch's loss and validation metrics as steps; the test metrics (MLflow allows no '@'
  in a name: valid_ndcg_at_10, test_recall_at_20); the environment (versions, device,
  threads, git revision) as tags; the run directory's records as artifacts (config, env,
  history, metrics, ranks; not the checkpoints). The MLflow experiment is the dataset, or
  `--study NAME`. Without a tracking URI the store is `results/mlflow.db` (SQLite, no server;
  artifacts beside it in results/mlartifacts); a tracking server's URI works the same.
* TensorBoard (`--track tensorboard`): torch's SummaryWriter writes the same curves and the
  test metrics under results/tensorboard/<dataset>/<model>/<run id>.

A tracker that cannot be reached costs one warning line; the run and its results stand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from matrrec_cli.errors import UsageError, warn
from matrrec_cli.train import runs
from matrrec_cli.train.config import flat

TRACKERS = ("none", "mlflow", "tensorboard")
# checkpoints, and any file above 1 MiB, stay in the run directory only
ARTIFACT_LIMIT = 1 << 20


def tracker(track: str | None) -> str:
    """The tracker a command uses: `--track`, else MLflow when $MLFLOW_TRACKING_URI is set."""
    if track is None:
        return "mlflow" if os.environ.get("MLFLOW_TRACKING_URI") else "none"
    if track not in TRACKERS:
        raise UsageError(f"--track must be one of {', '.join(TRACKERS)}, not {track!r}")
    return track


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    text = (run_dir / runs.HISTORY).read_text() if (run_dir / runs.HISTORY).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def log_run(run_dir: Path, *, track: str, study: str | None = None) -> None:
    """Log one finished run to `track`; a tracker that fails is one warning, never an error."""
    if track == "none":
        return
    try:
        if track == "mlflow":
            _mlflow(run_dir, study)
        else:
            _tensorboard(run_dir)
    except ImportError:
        warn(f"--track {track}: the {track} package is not installed (pip install "
             f"'matrrec[{track}]'); run {run_dir} is not tracked")
    except Exception as exc:  # a tracker's own errors: unreachable server, refused request
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warn(f"--track {track}: could not log run {run_dir} ({type(exc).__name__}: {first}); "
             "the run itself is saved")


def _mlflow(run_dir: Path, study: str | None) -> None:
    # fail fast on an unreachable server instead of retrying for minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    cfg = json.loads((run_dir / runs.CONFIG).read_text())
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    env = json.loads((run_dir / runs.ENV).read_text())
    results = Path(cfg["results_dir"])
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        _check_store(results / "mlflow.db")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(results / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri)
    name = study or cfg["dataset"]
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment = found.experiment_id
    elif os.environ.get("MLFLOW_TRACKING_URI"):  # the server decides where artifacts live
        experiment = client.create_experiment(name)
    else:
        experiment = client.create_experiment(
            name, artifact_location=(results / "mlartifacts" / name).resolve().as_uri())
    tags = {"matrrec.run_dir": str(run_dir), "matrrec.config_hash": cfg["config_hash"],
            "mlflow.runName": f"{cfg['model']} seed {cfg['seed']} ({run_dir.name})",
            **{f"source.{k}": v for k, v in cfg.get("sources", {}).items()},
            **{f"env.{k}": json.dumps(v) if isinstance(v, (dict, list)) else str(v)
               for k, v in env.items()}}
    rid = client.create_run(experiment, tags=tags).info.run_id
    try:
        _mlflow_fill(client, rid, run_dir, cfg, metrics)
    except BaseException:
        client.set_terminated(rid, status="FAILED")  # never a run left "running" forever
        raise
    client.set_terminated(rid)


def _check_store(db: Path) -> None:
    """The default store must be a writable file (or creatable): MLflow meets an unusable one
    with minutes of database retries and dozens of log lines; this is one exception, which
    log_run turns into one warning."""
    if db.exists() and not db.is_file():
        raise OSError(f"{db} is not a file")
    target = db if db.exists() else db.parent
    if not os.access(target, os.W_OK):
        raise PermissionError(f"{target} is not writable")


def _metric(name: str) -> str:
    """MLflow's metric names allow no '@': ndcg@10 is logged as ndcg_at_10."""
    return name.replace("@", "_at_")


def _mlflow_fill(client: Any, rid: str, run_dir: Path, cfg: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, str(v)[:6000]) for k, v in flat(cfg).items()]
    steps = []
    for record in _epochs(run_dir):
        t, step = 0, int(record["epoch"])
        if record.get("loss") is not None:
            steps.append(Metric("loss", float(record["loss"]), t, step))
        steps += [Metric(_metric(f"valid_{k}"), float(v), t, step)
                  for k, v in record["valid"].items()]
    steps += [Metric(_metric(f"test_{k}"), float(v), 0, 0)
              for k, v in metrics["test_full"].items()]
    for i in range(0, max(len(params), len(steps)), 100):  # MLflow's batch limits
        client.log_batch(rid, params=params[i:i + 100], metrics=steps[i:i + 100],
                         tags=[RunTag("matrrec.best_epoch", str(metrics["best_epoch"]))]
                         if i == 0 else [])
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.name not in runs.CHECKPOINTS and \
                path.stat().st_size <= ARTIFACT_LIMIT:
            client.log_artifact(rid, str(path))


def _tensorboard(run_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    cfg = json.loads((run_dir / runs.CONFIG).read_text())
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    logdir = Path(cfg["results_dir"]) / "tensorboard" / cfg["dataset"] / cfg["model"] / \
        run_dir.name
    with SummaryWriter(log_dir=str(logdir)) as writer:
        for record in _epochs(run_dir):
            if record.get("loss") is not None:
                writer.add_scalar("loss", record["loss"], record["epoch"])
            for k, v in record["valid"].items():
                writer.add_scalar(f"valid/{k}", v, record["epoch"])
        writer.add_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in flat(cfg).items() if v is not None},
                           {f"test/{k}": v for k, v in metrics["test_full"].items()},
                           run_name=".")
