"""The refit option (`--set refit=true`): after early stopping, a fresh model trained on the train
and valid targets for the best epoch count scores the test; resumable; the early-stopped part is
the run without the option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, run_cli
from test_train_trainer import _Interrupt, run, tiny_config

from matrrec_cli.data.split import build_sequences, refit_samples, split
from matrrec_cli.errors import MatrrecError
from matrrec_cli.train import runs
from matrrec_cli.train.checkpoint import load_checkpoint
from matrrec_cli.train.progress import Reporter


def _targets(data, samples, objective: str) -> list[tuple[int, int]]:
    """(user, target item index) pairs the samples train on, brute force."""
    out = []
    for a, b, u in zip(samples.a, samples.b, samples.user, strict=True):
        if objective == "prefix":
            out.append((int(u), int(b)))
        else:  # every position of the row: inputs items[a:b], targets items[a+1:b+1]
            out += [(int(u), int(t)) for t in range(a + 1, b + 1)]
    return sorted(out)


@pytest.mark.parametrize("objective", ["prefix", "all"])
def test_refit_samples_add_each_users_valid_target_once(objective: str) -> None:
    lengths = [3, 4, 9, 17, 5]
    rows = [(u, 10 * u + t, t) for u, n in enumerate(lengths, 1) for t in range(n)]
    seqs = build_sequences(pd.DataFrame(rows, columns=["user", "item", "timestamp"]),
                           n_items=100)
    data = split(seqs, max_len=4, objective=objective)
    lo, hi = seqs.offsets[:-1], seqs.offsets[1:]
    want_train = sorted((int(u), int(t)) for u, a, b in zip(seqs.users, lo, hi, strict=True)
                        for t in range(a + 1, b - 2))
    want_refit = sorted([*want_train, *((int(u), int(b - 2)) for u, b in
                                        zip(seqs.users, hi, strict=True))])
    assert _targets(data, data.train, objective) == want_train  # every target exactly once
    got = refit_samples(data)
    assert _targets(data, got, objective) == want_refit
    assert (got.b - got.a <= 4).all()
    assert (got.a >= got.start).all()
    assert not np.isin(hi - 1, got.b).any()  # never the test target


def _interrupt_refit_at(epoch: int) -> Reporter:
    class Stop(Reporter):
        def refit_epoch(self, record: dict) -> None:
            if record["epoch"] == epoch:
                raise _Interrupt

    return Stop(enabled=False)


def test_refit_trains_the_early_stopped_run_then_refits_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _plain_dir = run(tiny_config(tmp_path / "a"))
    cfg = tiny_config(tmp_path / "b", refit=True)
    assert cfg.config_hash() != tiny_config(tmp_path / "a").config_hash()
    full, full_dir = run(cfg)
    # the early-stopped part is the run without the option: same validation, same best epoch
    assert full["valid_full"] == plain["valid_full"]
    assert full["best_epoch"] == plain["best_epoch"] == full["refit_epochs"]
    assert full["test_full"] != plain["test_full"]  # the test is the refit model's
    assert load_checkpoint(full_dir / runs.REFIT)["epoch"] == full["best_epoch"]
    from test_train_trainer import build_for, tiny_data

    from matrrec_cli.train import pipeline
    monkeypatch.setattr(pipeline, "load_split", tiny_data)
    monkeypatch.setattr(pipeline, "model_builder", build_for)
    for name in ("valid", "test"):  # each split re-scores with the weights that scored it
        assert pipeline.evaluate_run(full_dir, split_name=name)["matches_stored"]

    # interrupted in the refit's second epoch, then resumed: the same numbers
    cfg2 = tiny_config(tmp_path / "c", refit=True)
    run_dir = runs.new_run_dir(cfg2)
    with pytest.raises(_Interrupt):
        run(cfg2, run_dir, reporter=_interrupt_refit_at(2))
    assert runs.find_unfinished(cfg2) == run_dir
    assert load_checkpoint(run_dir / runs.REFIT_LAST, ("epoch",))["epoch"] == 2
    assert not (run_dir / runs.REFIT).exists()
    resumed, _ = run(cfg2, run_dir)
    assert resumed["test_full"] == full["test_full"]
    assert resumed["valid_full"] == full["valid_full"]


def test_the_refit_model_learns_and_is_recorded(tmp_path: Path) -> None:
    """A 3-epoch budget: the refit trains for the chosen epoch count on train + valid rows and
    its model learns the users' item cycle (random would be ~0.03)."""
    m, _ = run(tiny_config(tmp_path, refit=True, epochs=3))
    assert m["refit_epochs"] == m["best_epoch"]
    assert m["refit_seconds"] >= 0
    # measured over seeds 2020-2025 at 1 and 2 threads: 0.746-0.826, a 7x margin
    assert m["test"]["ndcg@10"] > 0.1


def test_refit_of_a_count_model_is_one_error(tiny: Path, tmp_path: Path, capsys) -> None:
    code = run_cli(["train", "--dataset", "cyc", "--model", "markov", "--set", "refit=true",
                    "--data-dir", str(tiny), "--results-dir", str(tmp_path)])
    assert code != 0
    err = capsys.readouterr().err
    assert "refit" in err
    assert "count model" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/*/*/metrics.json"))


def test_a_refit_recipe_trains_and_fuses_from_the_cli(tiny: Path, tmp_path: Path) -> None:
    res = tmp_path / "r"
    base = ["train", "--dataset", "cyc", "--data-dir", str(tiny), "--results-dir", str(res)]
    assert run_cli([*base, "--model", "sr"]) == 0
    assert run_cli([*base, "--model", "matrrec", "--epochs", "2", *SMALL, "--set",
                    "scan_impl=torch", "--set", "refit=true", "--set", "tag=refit"]) == 0
    (run_dir, cfg, metrics), = [r for r in runs.finished_runs(res) if r[1]["model"] == "matrrec"]
    assert cfg["refit"] is True
    assert cfg["sources"]["refit"] == "command line --set"
    assert (run_dir / runs.REFIT).exists()
    assert metrics["refit_epochs"] >= 1
    from matrrec_cli.experiments import fusion
    f = fusion.fuse(res, "cyc", count="sr", tag="refit", data_dir=tiny)
    assert f.model == "matrrec (refit)"
    with pytest.raises(MatrrecError, match="no finished matrrec runs"):
        fusion.fuse(res, "cyc", count="sr", data_dir=tiny)  # the untagged column is empty
    assert run_cli(["fuse", "--dataset", "cyc", "--with", "sr", "--tag", "refit",
                    "--data-dir", str(tiny), "--results-dir", str(res)]) == 0
    assert (res / "fuse_cyc_matrrec_refit_sr.csv").exists()


def test_default_config_hash_is_unchanged_by_the_knob(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    assert "refit" not in cfg.semantic()  # a late knob at its default stays out of the hash
    assert dataclasses.replace(cfg, refit=True).semantic()["refit"] is True


def test_a_corrupt_refit_checkpoint_is_one_error_naming_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, refit=True)
    run_dir = runs.new_run_dir(cfg)
    with pytest.raises(_Interrupt):
        run(cfg, run_dir, reporter=_interrupt_refit_at(1))
    (run_dir / runs.REFIT_LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(MatrrecError, match=r"refit_last\.pt is corrupt .*the refit starts over"):
        run(cfg, run_dir)
