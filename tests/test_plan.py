"""`matrrec profile --plan`: runs x epochs x (s/epoch + one evaluation) from profile rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_cli

from matrrec_cli.experiments import plan as pl
from matrrec_cli.train.config import TRAINER_DEFAULTS


def _rows(results: Path) -> None:
    """Profile rows as `matrrec profile` writes them: two models on the CPU, one on a GPU."""
    pd.DataFrame([
        {"dataset": "electronics", "synthetic": True, "model": "matrrec", "max_len": 50,
         "device": "cpu", "memory_gb": 3.5, "train_s_per_epoch": 360.0, "inference_s": 36.0},
        {"dataset": "electronics", "synthetic": True, "model": "sasrec", "max_len": 50,
         "device": "cpu", "memory_gb": 2.0, "train_s_per_epoch": 90.0, "inference_s": 18.0},
        {"dataset": "electronics", "synthetic": True, "model": "matrrec", "max_len": 50,
         "device": "cuda:0", "memory_gb": 1.0, "train_s_per_epoch": 12.0, "inference_s": 1.0},
    ]).to_csv(results / "table5_complexity.csv", index=False)


def test_the_cost_is_runs_times_epochs_times_an_epoch_and_its_evaluation(tmp_path: Path
                                                                          ) -> None:
    _rows(tmp_path)
    lines = pl.plan(tmp_path, "electronics", "table2")
    least = TRAINER_DEFAULTS["stopping_step"] + 1  # no finished run to learn epochs from
    by = {(x.model, x.device): x for x in lines}
    cpu = by[("matrrec", "cpu")]
    assert (cpu.runs, cpu.epochs) == (pl.SEEDS, least)
    assert cpu.hours == pytest.approx(5 * least * (360 + 36) / 3600)
    assert by[("sasrec", "cpu")].hours == pytest.approx(5 * least * (90 + 18) / 3600)
    assert by[("gru4rec", None)].hours is None  # never profiled: named, not guessed
    total = cpu.hours + by[("sasrec", "cpu")].hours
    assert pl.wall_hours(lines, "cpu", 1) == pytest.approx(total)
    # on many workers: never below the longest single run
    assert pl.wall_hours(lines, "cpu", 1000) == pytest.approx(least * (360 + 36) / 3600)
    assert pl.wall_hours(lines, "cuda:0", 4) == pytest.approx(
        max(5 * least * 13 / 3600 / 4, least * 13 / 3600))
    assert pl.plan(tmp_path, "electronics", "table3")[0].runs == pl.ABLATIONS * pl.SEEDS


def test_the_command_prints_the_plan_and_what_to_profile(tmp_path: Path, capsys) -> None:
    _rows(tmp_path)
    assert run_cli(["profile", "--plan", "table2", "--synthetic-like", "electronics",
                    "--results-dir", str(tmp_path), "--workers", "8"]) == 0
    out, err = capsys.readouterr()
    assert "matrrec" in out
    assert "sasrec" in out
    assert "on 8 workers" in err
    assert "not profiled on electronics: bert4rec, core, gru4rec" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing profiled
    assert run_cli(["profile", "--plan", "table9", "--dataset", "electronics",
                    "--results-dir", str(tmp_path)]) == 2
    assert "--plan must be one of" in capsys.readouterr().err


def test_table3_and_figures_count_only_the_runs_left(tiny: Path, tmp_path: Path) -> None:
    """What `ablate --all` and the two `sweep`s would reuse is not planned again: each finished
    (configuration, seed) once, the figures' shared default point once."""
    import json

    from matrrec_cli.commands.tables import run_options
    from matrrec_cli.experiments.runner import resolve_spec

    base = run_options("cyc", model="matrrec", data_dir=str(tiny), results_dir=str(tmp_path),
                       sets=["skip_padding=true"])
    assert pl.to_run("table3", base) == (pl.ABLATIONS * pl.SEEDS,) * 2
    assert pl.to_run("figures", base) == (pl.FIGURE_POINTS * pl.SEEDS,) * 2
    # the default configuration (cyc's own dropout is 0.1: the dropout sweep's point 0.1 and
    # Table 3's first row) finished at seed 2020, as train leaves it; at 2021 not finished
    default = next(s for s in pl._specs("figures", base) if s.label == "0.1")
    for seed, finished in ((2020, True), (2021, False)):
        cfg = resolve_spec(default, seed=seed, prepared=False)
        run = tmp_path / "runs" / "cyc" / "matrrec" / f"2026010{seed % 10}-000000-x"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(cfg.to_dict()))
        if finished:
            (run / "metrics.json").write_text("{}")
    left = (pl.FIGURE_POINTS * pl.SEEDS - 1, pl.FIGURE_POINTS * pl.SEEDS)
    assert pl.to_run("figures", base) == left
    assert pl.plan(tmp_path, "cyc", "figures", left=left[0])[0].runs == left[0]
    assert pl.to_run("table3", base) == (pl.ABLATIONS * pl.SEEDS - 1, pl.ABLATIONS * pl.SEEDS)


def test_table2_counts_only_the_protocols_own_seeds(tmp_path: Path) -> None:
    """Two plain GRU4Rec seeds and three shuffled ones: Table 2 still needs three seeds (a
    run that departs from the protocol is no seed of its cell); SASRec's five plain seeds
    leave nothing."""
    def fake(model: str, seed: int, sources: dict, **cfg: object) -> None:
        run = tmp_path / "runs" / "musical" / model / f"20260101-00000{seed}-{len(sources)}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({
            "dataset": "musical", "model": model, "seed": seed, "preset": "paper",
            "objective": "prefix", "max_len": 50, "epochs": 300, "sources": sources, **cfg}))
        test = {"recall@5": 0.05, "recall@10": 0.1, "recall@20": 0.15, "ndcg@10": 0.05}
        (run / "metrics.json").write_text(json.dumps({"test": test, "valid": test,
                                                      "epochs": 20}))

    for seed in (1, 2):
        fake("gru4rec", seed, {})
    for seed in (3, 4, 5):
        fake("gru4rec", seed, {"shuffle_history": "command line --set"}, shuffle_history=True)
    for seed in range(1, 6):
        fake("sasrec", seed, {})
    runs = {x.model: x.runs for x in pl.plan(tmp_path, "musical", "table2")}
    assert runs["gru4rec"] == 3
    assert runs["sasrec"] == 0
    assert runs["narm"] == pl.SEEDS
