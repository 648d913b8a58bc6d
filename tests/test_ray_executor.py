"""`--executor ray` on a local Ray with 2 CPUs: the same runs as `--executor local`, written with
a local run's identity; a killed worker is retried and ends as an uninterrupted run; a failing
configuration fails alone. One Ray instance serves the whole module (it takes seconds to start).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import SMALL
from helpers import run_cli as _run

from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments import ray_executor
from matrrec_cli.experiments.jobs import ExecutorOptions
from matrrec_cli.experiments.runner import RunSpec, Seeds, run_all
from matrrec_cli.train import runs
from matrrec_cli.train.config import RunOptions

ray = pytest.importorskip("ray")

RAY = ExecutorOptions(kind="ray", cpus_per_run=1)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()




@pytest.fixture
def one_thread():
    """Ray tasks train with --cpus-per-run threads; the local reference must use as many."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




def _finished(results: Path) -> dict[tuple[str, int], dict]:
    """(config hash, seed) -> metrics.json of every finished run under `results`."""
    out = {}
    for _, cfg, metrics in runs.finished_runs(results):
        out[(cfg["config_hash"], cfg["seed"])] = metrics
    return out


def test_a_sweep_on_ray_equals_local_run_for_run(local_ray, tiny: Path, tmp_path: Path,
                                                 one_thread, capsys) -> None:
    sweep = ["sweep", "dropout", "0.1,0.3", "--dataset", "cyc", "--seeds", "2", "--epochs", "2",
             "--device", "cpu", "--data-dir", str(tiny), *SMALL]
    assert _run([*sweep, "--results-dir", str(tmp_path / "local")]) == 0
    assert _run([*sweep, "--results-dir", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "running on node" in err
    assert "epoch 2/2" in err
    assert err.count(": done") == 4
    local, remote = _finished(tmp_path / "local"), _finished(tmp_path / "ray")
    assert len(local) == 4
    assert local.keys() == remote.keys()
    for key in local:  # same threads, same seed, same data: the same numbers
        assert remote[key]["valid_full"] == local[key]["valid_full"], key
        assert remote[key]["test_full"] == local[key]["test_full"], key
    for run, cfg, _ in runs.finished_runs(tmp_path / "ray"):
        # a local run's identity: its place, its name, this machine's directories
        assert run.parent == tmp_path / "ray" / "runs" / "cyc" / "matrrec"
        assert run.name.endswith(cfg["config_hash"])
        assert cfg["data_dir"] == str(tiny)
        env = json.loads((run / runs.ENV).read_text())
        assert env["executor"]["kind"] == "ray"
        assert env["torch_threads"] == 1
        assert not (run / runs.BEST).exists()  # no checkpoints without --keep-checkpoints
    assert not list((tmp_path / "ray" / "runs").glob(".staging/*"))  # nothing half-written
    # the same command again: every run is reused, nothing goes to Ray
    assert _run([*sweep, "--results-dir", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert err.count("reusing") == 4
    assert "queued" not in err
    tables = [pd.read_csv(tmp_path / d / "sweep_dropout_cyc_matrrec.csv").drop(
        columns="wall_seconds") for d in ("local", "ray")]
    pd.testing.assert_frame_equal(*tables)  # the same table, but for the time it took


def _spec(tiny: Path, results: Path, *sets: str) -> RunSpec:
    opts = RunOptions("cyc", "gru4rec", epochs=3, device="cpu", data_dir=str(tiny),
                      results_dir=str(results), sets=("batch_size=64", *sets))
    return RunSpec(opts, label=" ".join(sets) or "gru4rec")


def test_a_killed_worker_is_retried_and_ends_as_an_uninterrupted_run(
        local_ray, tiny: Path, tmp_path: Path, one_thread, monkeypatch) -> None:
    (reference,) = run_all([_spec(tiny, tmp_path / "local")], Seeds((5,)), quiet=True)
    marker = tmp_path / "killed"
    monkeypatch.setenv(ray_executor.KILL_ENV, f"2:{marker}")  # die after epoch 2's checkpoint
    (retried,) = run_all([_spec(tiny, tmp_path / "ray")], Seeds((5,)), executor=RAY,
                         quiet=True)
    assert marker.exists()  # the worker did die mid-run
    assert retried.metrics["test_full"] == reference.metrics["test_full"]
    assert retried.metrics["valid_full"] == reference.metrics["valid_full"]
    history = (retried.run_dir / runs.HISTORY).read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in history] == [1, 2, 3]


def test_a_failing_configuration_fails_alone(local_ray, tiny: Path, tmp_path: Path,
                                             capsys) -> None:
    specs = [_spec(tiny, tmp_path), _spec(tiny, tmp_path, "lr=1e30")]  # the second diverges
    with pytest.raises(MatrrecError, match=r"1 of 2 run\(s\) failed"):
        run_all(specs, Seeds((1,)), executor=RAY)
    err = capsys.readouterr().err
    assert "lr=1e30 seed 1: failed: MatrrecError: loss became" in err
    (kept,) = runs.finished_runs(tmp_path)  # the good run is finished and kept
    assert kept[1]["lr"] == 1e-3


def test_local_options_refuse_ray_flags(tiny: Path, tmp_path: Path, capsys) -> None:
    assert _run(["sweep", "dropout", "0.1", "--dataset", "cyc", "--data-dir", str(tiny),
                 "--results-dir", str(tmp_path), "--gpus-per-run", "1"]) == 2
    assert "are for --executor ray" in capsys.readouterr().err


def test_profile_cells_run_as_ray_tasks(local_ray, tiny: Path, tmp_path: Path) -> None:
    assert _run(["profile", "--dataset", "cyc", "--model", "gru4rec,markov", "--max-batches",
                 "1", "--repeats", "1", "--device", "cpu", "--data-dir", str(tiny),
                 "--results-dir", str(tmp_path), "--executor", "ray"]) == 0
    df = pd.read_csv(tmp_path / "table5_complexity.csv")
    assert sorted(df["model"]) == ["gru4rec", "markov"]
    assert (df["memory_gb"] > 0).all()


def test_more_gpus_or_cpus_than_any_node_has_is_refused_at_once(local_ray, tiny: Path,
                                                                tmp_path: Path) -> None:
    for opts, says in ((ExecutorOptions(kind="ray", gpus_per_run=1), "--gpus-per-run 1: no"),
                       (ExecutorOptions(kind="ray", cpus_per_run=64), "--cpus-per-run 64: no")):
        with pytest.raises(MatrrecError, match=says):
            run_all([_spec(tiny, tmp_path)], Seeds((1,)), executor=opts)
    assert not runs.finished_runs(tmp_path)


def test_an_address_where_nothing_listens_is_one_error() -> None:
    # a refused connection answers at once (Ray would retry for minutes, saying nothing)
    with pytest.raises(MatrrecError, match=r"--address 127\.0\.0\.1:1: nothing answers there"):
        ray_executor._check_reachable("127.0.0.1:1")
    ray_executor._check_reachable("auto")  # left to Ray: no host:port to try
