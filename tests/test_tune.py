"""`matrrec tune` on Optuna: the faithful trial is always in the study, a stopped study resumes,
two processes share one SQLite study without training a configuration twice, pruning stops a
trial, and the choice is made on validation only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import SMALL
from helpers import run_cli as _run

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments import tune
from matrrec_cli.train.config import RunOptions

optuna = pytest.importorskip("optuna")







def _args(tiny: Path, results: Path, *extra: str) -> list[str]:
    return ["tune", "--dataset", "cyc", "--epochs", "1", "--device", "cpu", "--data-dir",
            str(tiny), "--results-dir", str(results), *SMALL, *extra]


def _study(results: Path, name: str = "cyc-matrrec"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'tune.sqlite3'}")


def test_parse_space() -> None:
    space = tune.parse_space(["lr=loguniform:1e-4:1e-2", "dropout=0.1,0.3", "n-layers=int:1:3",
                              "objective=prefix,all"])
    assert space["lr"] == tune.Param("lr", "loguniform", low=1e-4, high=1e-2)
    assert space["dropout"].values == (0.1, 0.3)
    assert space["n_layers"].kind == "int"
    assert space["objective"].values == ("prefix", "all")
    for bad in ("lr", "lr=", "lr=loguniform:0:1", "lr=uniform:2:1", "lr=int:a:b"):
        with pytest.raises(UsageError):
            tune.parse_space([bad])


def test_the_earlier_spelling_still_works() -> None:
    assert tune.from_old_options(["lr=0.001,0.01"], ["dropout", "lr"]) == [
        "dropout=0.1,0.2,0.3,0.4,0.5", "lr=0.001,0.01"]
    for grid, knobs in ((["lr="], None), (["dropout=0.1"], ["lr"]), ([], ["speed"])):
        with pytest.raises(UsageError):
            tune.from_old_options(grid, knobs)


def test_the_winning_command_and_each_values_source() -> None:
    base = RunOptions("musical", sets=("skip_padding=true",))
    spec = tune.spec_for({"dropout": 0.2, "lr": 0.003}, base, "trial 3")
    assert (spec.options.dropout, spec.options.sets) == (0.2, ("skip_padding=true", "lr=0.003"))
    assert spec.options.source("lr") == spec.options.source("dropout") == "tune trial 3"
    assert spec.options.source("skip_padding") == "command line"
    assert tune.command(base, {"dropout": 0.2, "lr": 0.003}) == (
        "matrrec train --dataset musical --model matrrec --dropout 0.2 "
        "--set skip_padding=true --set lr=0.003 --set tag=tuned --seeds 5")


class FakeTrial:
    def __init__(self, prune_at: int) -> None:
        self.reported: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reported) >= self.prune_at


def test_the_pruner_stops_a_trial_at_the_epoch_it_says() -> None:
    reporter = tune.PruningReporter(FakeTrial(prune_at=2))
    reporter.enabled = False
    record = {"epoch": 1, "loss": 1.0, "valid_score": 0.1, "improved": True, "bad": 0,
              "valid": {"recall@10": 0.2}, "seconds": 0.1}
    reporter.epoch(record)
    with pytest.raises(optuna.TrialPruned):
        reporter.epoch({**record, "epoch": 2})
    assert reporter.trial.reported == [(0.1, 1), (0.1, 2)]


def test_the_faithful_trial_comes_first_and_a_stopped_study_resumes(
        tiny: Path, tmp_path: Path, capsys) -> None:
    args = _args(tiny, tmp_path, "--space", "dropout=0.3,0.5", "--sampler", "grid")
    assert _run([*args, "--n-trials", "1"]) == 0  # stopped after the faithful trial
    first = _study(tmp_path).trials
    assert [t.params for t in first] == [{"dropout": 0.1}]  # the dataset's dropout
    assert _run([*args, "--n-trials", "2"]) == 0  # resumes the same study
    trials = _study(tmp_path).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert sorted(t.params["dropout"] for t in trials) == [0.1, 0.3, 0.5]  # the grid, once
    # three configurations, three runs: the faithful one was not trained again
    assert len(list((tmp_path / "runs" / "cyc" / "matrrec").iterdir())) == 3
    df = pd.read_csv(tmp_path / "tune_cyc_matrrec.csv")
    assert list(df["faithful"]) == [True, False, False]
    best = df.loc[df["valid_ndcg@10"].idxmax()]
    out = capsys.readouterr().out
    if best["faithful"] or (df["valid_ndcg@10"] == best["valid_ndcg@10"]).sum() > 1:
        assert "--set tag=tuned" not in out  # nothing beat the faithful trial
    else:
        assert f"--dropout {best['dropout']}" in out
        assert "--set tag=tuned --seeds 5" in out


def test_two_processes_share_one_sqlite_study(tiny: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = [sys.executable, "-m", "matrrec_cli", *_args(tiny, tmp_path, "--space",
            "dropout=0.2,0.3,0.4", "--sampler", "grid", "--storage", storage, "--study", "s",
            "--n-trials", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for e in errs]
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 4
    assert len({t.number for t in trials}) == 4
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert any(t.params == {"dropout": 0.1} for t in done)  # the faithful trial ran
    runs_made = [json.loads((d / "config.json").read_text())["model_config"]["dropout_prob"]
                 for d in (tmp_path / "runs" / "cyc" / "matrrec").iterdir()]
    assert len(runs_made) == len(set(runs_made))  # no configuration trained twice


def test_a_shared_sqlite_study_waits_for_another_workers_lock(tmp_path: Path) -> None:
    """A worker holding the SQLite write lock longer than sqlite3's default 5 s (a loaded
    machine can deschedule it that long) delays the other worker's next write, never fails it:
    a failed write inside a trial (the objective's set_user_attr, which Optuna does not retry)
    would end that worker's study."""
    import sqlite3
    import threading
    import time

    db = tmp_path / "shared.db"
    found = tune.study(name="s", storage=f"sqlite:///{db}", sampler="grid", prune=False,
                       seed=0)
    trial = found.ask()
    held = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    held.execute("BEGIN EXCLUSIVE")  # what a worker does while it writes
    hold_s = 8.0
    release = threading.Timer(hold_s, held.execute, args=("COMMIT",))
    release.start()
    start = time.monotonic()
    try:
        trial.set_user_attr("worker", "elsewhere:1")  # a write: waits for the lock
    finally:
        release.join()
        held.close()
    assert time.monotonic() - start >= hold_s - 0.5  # it did wait, the lock was real
    assert found.trials[0].user_attrs == {"worker": "elsewhere:1"}


def test_bad_searches_are_refused_before_anything_trains(tiny: Path, tmp_path: Path,
                                                          capsys) -> None:
    for extra, message in (
            (["--space", "width=1,2"], "neither model 'matrrec' nor the trainer has"),
            (["--space", "lr=loguniform:0.01:0.1"], "starting value 0.001 is outside"),
            (["--space", "lr=loguniform:1e-4:1e-2", "--sampler", "grid"], "needs value lists"),
            (["--space", "epochs=1,2"], "are not searched"),
            (["--space", "n_heads=3"], "must be a multiple of n_heads 3"),
            (["--grid", "lr="], "gives lr no values"),
            (["--space", "lr=0.1,0.01", "--space", "lr=0.2,0.3"], "lr is given twice"),
            (["--space", "max_len=int:1.5:10"], "bounds must be whole numbers"),
            (["--space", "dropout=a,b"], "'a' is not a value of dropout"),
            (["--space", "max_len=5,7.5"], "7.5 is not a value of max_len"),
            (["--prune", "--executor", "ray"], "--prune needs")):
        assert _run(_args(tiny, tmp_path, *extra)) in (1, 2), extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "runs").exists()


def test_a_trial_left_running_by_a_killed_process_is_failed_and_tried_again(
        tiny: Path, tmp_path: Path, capsys) -> None:
    """A study killed mid-trial (SIGKILL) leaves that trial RUNNING in its storage; the next
    run marks it failed, tries its parameters again and finishes."""
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no process
    url = f"sqlite:///{tmp_path / 'tune.sqlite3'}"
    killed = optuna.create_study(study_name="cyc-matrrec", storage=url, direction="maximize")
    trial = killed.ask({"dropout": optuna.distributions.CategoricalDistribution((0.1, 0.3, 0.5))})
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    stuck = trial.params["dropout"]
    args = _args(tiny, tmp_path, "--space", "dropout=0.3,0.5", "--sampler", "grid")
    assert _run([*args, "--n-trials", "1"]) == 0
    assert f"trial {trial.number} was left running" in capsys.readouterr().err
    trials = _study(tmp_path).trials
    assert trials[0].state.name == "FAIL"
    assert [t.params for t in trials[1:] if t.state.name == "COMPLETE"] == [{"dropout": stuck}]
    assert not [t for t in trials if t.state.name == "RUNNING"]
