"""`--track mlflow` / `--track tensorboard`: what a trained run logs, read back through the
trackers' own readers; an unreachable tracker is one warning and the run stands."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL
from helpers import run_cli as _run

from matrrec_cli.train import runs


def _sweep(tiny: Path, results: Path, *extra: str) -> int:
    return _run(["sweep", "dropout", "0.1", "--dataset", "cyc", "--epochs", "2", "--device",
                 "cpu", "--data-dir", str(tiny), "--results-dir", str(results), *SMALL,
                 *extra])


def test_mlflow_gets_params_sources_epoch_steps_test_metrics_and_artifacts(
        tiny: Path, tmp_path: Path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _sweep(tiny, tmp_path, "--track", "mlflow", "--study", "smoke") == 0
    (_, cfg, metrics), = runs.finished_runs(tmp_path)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    params, tags = logged.data.params, logged.data.tags
    assert params["lr"] == "0.001"
    assert params["model.hidden_size"] == "16"
    assert params["model.dropout_prob"] == "0.1"
    assert tags["source.model.hidden_size"] == "command line --set"
    assert tags["source.model.dropout_prob"] == "sweep dropout"
    assert tags["matrrec.config_hash"] == cfg["config_hash"]
    assert "env.git_revision" in tags
    history = client.get_metric_history(logged.info.run_id, "valid_ndcg_at_10")
    assert [m.step for m in history] == [1, 2]
    assert logged.data.metrics["test_ndcg_at_10"] == metrics["test_full"]["ndcg@10"]
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {runs.CONFIG, runs.METRICS, runs.HISTORY, runs.ENV} <= names
    assert runs.LAST not in names  # checkpoints stay in the run directory


def test_an_unreachable_tracker_is_one_warning_and_the_run_stands(
        tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    assert _sweep(tiny, tmp_path) == 0  # the URI alone turns tracking on
    err = capsys.readouterr().err
    assert err.count("--track mlflow: could not log run") == 1
    assert "Traceback" not in err
    assert len(runs.finished_runs(tmp_path)) == 1


def test_tensorboard_event_files(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert _sweep(tiny, tmp_path, "--track", "tensorboard") == 0
    (run_dir, _, _), = runs.finished_runs(tmp_path)
    logdir = tmp_path / "tensorboard" / "cyc" / "matrrec" / run_dir.name
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert [s.step for s in events.Scalars("valid/ndcg@10")] == [1, 2]


def test_a_default_store_that_is_a_directory_is_one_warning_without_retries(
        tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").mkdir()  # results/mlflow.db cannot be a database
    assert _sweep(tiny, tmp_path, "--track", "mlflow") == 0
    err = capsys.readouterr().err
    assert err.count("--track mlflow: could not log run") == 1
    assert "is not a file" in err
    assert "Traceback" not in err
    assert len(runs.finished_runs(tmp_path)) == 1


def test_an_unknown_tracker_is_refused_before_anything_trains(
        tiny: Path, tmp_path: Path, capsys) -> None:
    for args in (["train", "--model", "gru4rec"], ["train", "--model", "gru4rec", "--seeds", "2"]):
        assert _run([*args, "--dataset", "cyc", "--epochs", "1", "--device", "cpu",
                     "--data-dir", str(tiny), "--results-dir", str(tmp_path),
                     "--track", "wandb"]) == 2
        assert "--track must be one of" in capsys.readouterr().err
    assert not list(tmp_path.glob("runs/*/*/*"))
