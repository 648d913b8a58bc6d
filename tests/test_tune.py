"""The recipe search chooses on the validation split only."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments import tune
from matrrec_cli.experiments.runner import RunResult, RunSpec

GRID = {"dropout": ("cli", (0.1, 0.2, 0.3)), "lr": ("set", (0.001, 0.003))}


def fake_run(valid: dict[str, float], test: dict[str, float], calls: list[RunSpec]):
    def run(spec: RunSpec) -> list[RunResult]:
        calls.append(spec)
        m = {"valid": {"ndcg@10": valid[spec.label]}, "test": {"ndcg@10": test[spec.label]}}
        return [RunResult(spec, 1, Path("."), m, False)]
    return run


def test_search_follows_valid_and_never_test() -> None:
    valid = {"dropout=0.1": 0.10, "dropout=0.2": 0.30, "dropout=0.3": 0.20,
             "dropout=0.2,lr=0.001": 0.30, "dropout=0.2,lr=0.003": 0.31}
    test = {"dropout=0.1": 0.99, "dropout=0.2": 0.01, "dropout=0.3": 0.50,  # test disagrees
            "dropout=0.2,lr=0.001": 0.01, "dropout=0.2,lr=0.003": 0.00}
    calls: list[RunSpec] = []
    best, rows = tune.search("musical", "matrrec", GRID, fake_run(valid, test, calls),
                             base_cli={"epochs": 5}, base_sets=["skip_padding=true"])
    assert best == {"dropout": 0.2, "lr": 0.003}
    # the second knob is searched at the first knob's winner, with the fixed settings kept
    assert calls[-1].cli == (("epochs", 5), ("dropout", 0.2))
    assert calls[-1].sets == ("skip_padding=true", "lr=0.003")
    assert [r["kept"] for r in rows] == [False, True, False, False, True]
    cmd = tune.command("musical", "matrrec", best, GRID, ["skip_padding=true"])
    assert cmd == ("matrrec train --dataset musical --model matrrec --dropout 0.2 "
                   "--set skip_padding=true --set lr=0.003 --set tag=tuned --seeds 5")


def test_a_tie_keeps_the_value_already_held() -> None:
    valid = {"dropout=0.1": 0.2, "dropout=0.2": 0.1, "dropout=0.3": 0.1,
             "dropout=0.1,lr=0.001": 0.2, "dropout=0.1,lr=0.003": 0.2}
    best, _ = tune.search("d", "matrrec", GRID, fake_run(valid, valid, []), base_cli={},
                          base_sets=[])
    assert best == {"dropout": 0.1}  # lr stays at its default: nothing beat 0.2


def test_parse_grid() -> None:
    grid = tune.parse_grid(["dropout=0.3,0.4", "lr="])
    assert grid["dropout"] == ("cli", (0.3, 0.4))
    assert "lr" not in grid
    assert "objective" in grid
    assert tune.parse_grid(["max_len=10,20"])["max_len"] == ("cli", (10, 20))
    for bad in ("speed=1", "dropout", "max_len=ten"):
        with pytest.raises(UsageError):
            tune.parse_grid([bad])
