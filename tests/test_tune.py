"""The recipe search chooses on the validation split only."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrrec_cli.errors import UsageError
from matrrec_cli.experiments import tune
from matrrec_cli.experiments.runner import RunResult, RunSpec
from matrrec_cli.train.config import RunOptions

GRID = {"dropout": ("cli", (0.1, 0.2, 0.3)), "lr": ("set", (0.001, 0.003))}


def fake_run(valid: dict[str, float], test: dict[str, float], calls: list[RunSpec]):
    def run(spec: RunSpec) -> list[RunResult]:
        calls.append(spec)
        m = {"valid": {"ndcg@10": valid[spec.label]}, "test": {"ndcg@10": test[spec.label]}}
        return [RunResult(spec, 1, Path("."), m, False)]
    return run


START = {"dropout": 0.4, "lr": 0.001}


def test_search_follows_valid_and_never_test() -> None:
    valid = {"faithful": 0.25, "dropout=0.1": 0.10, "dropout=0.2": 0.30, "dropout=0.3": 0.20,
             "dropout=0.2,lr=0.003": 0.31}
    test = {"faithful": 0.9, "dropout=0.1": 0.99, "dropout=0.2": 0.01,  # test disagrees
            "dropout=0.3": 0.50, "dropout=0.2,lr=0.003": 0.00}
    calls: list[RunSpec] = []
    base = RunOptions("musical", epochs=5, sets=("skip_padding=true",))
    best, rows = tune.search(GRID, fake_run(valid, test, calls), base=base, start=START)
    assert best == {"dropout": 0.2, "lr": 0.003}
    assert calls[0].label == "faithful"  # the start is measured first
    # the second knob is searched at the first knob's winner, with the fixed settings kept
    last = calls[-1].options
    assert (last.epochs, last.dropout) == (5, 0.2)
    assert last.sets == ("skip_padding=true", "lr=0.003")
    # each value records who gave it: the command line, or the search
    assert (last.source("epochs"), last.source("skip_padding")) == ("command line",) * 2
    assert last.source("dropout") == last.source("lr") == "tune dropout=0.2,lr=0.003"
    assert [(r["knob"], r["value"], r["held"], r["kept"]) for r in rows] == [
        ("start", "-", True, True),
        ("dropout", 0.4, True, False), ("dropout", 0.1, False, False),
        ("dropout", 0.2, False, True), ("dropout", 0.3, False, False),
        ("lr", 0.001, True, False), ("lr", 0.003, False, True)]
    cmd = tune.command(base, best, GRID)
    assert cmd == ("matrrec train --dataset musical --model matrrec --dropout 0.2 "
                   "--set skip_padding=true --set lr=0.003 --set tag=tuned --seeds 5")


def test_the_start_is_a_candidate_that_a_lone_grid_value_must_beat() -> None:
    """`--grid dropout=0.2` alone must still compare 0.2 with the held 0.4 (it used to win
    unmeasured); a worse value is not kept, a tie keeps the held value."""
    for other, kept in ((0.20, {}), (0.25, {}), (0.30, {"dropout": 0.2})):
        calls: list[RunSpec] = []
        valid = {"faithful": 0.25, "dropout=0.2": other}
        best, rows = tune.search({"dropout": ("cli", (0.2,))}, fake_run(valid, valid, calls),
                                 base=RunOptions("d", "sasrec"), start={"dropout": 0.4})
        assert best == kept
        assert [c.label for c in calls] == ["faithful", "faithful", "dropout=0.2"]
        assert [r["value"] for r in rows] == ["-", 0.4, 0.2]


def test_a_tie_keeps_the_value_already_held() -> None:
    valid = {"faithful": 0.2, "dropout=0.1": 0.2, "dropout=0.2": 0.1, "dropout=0.3": 0.1,
             "lr=0.003": 0.2}
    best, _ = tune.search(GRID, fake_run(valid, valid, []), base=RunOptions("d"), start=START)
    assert best == {}  # nothing beat the start


def test_parse_grid() -> None:
    grid = tune.parse_grid(["dropout=0.3,0.4"])
    assert grid["dropout"] == ("cli", (0.3, 0.4))
    assert list(grid) == list(tune.KNOBS)
    assert tune.parse_grid(["max_len=10,20"])["max_len"] == ("cli", (10, 20))
    assert tune.parse_grid(["max-len=10"])["max_len"] == ("cli", (10,))  # one spelling, alias
    assert list(tune.parse_grid([], ["lr", "objective"])) == ["objective", "lr"]
    for bad in ("speed=1", "dropout", "max_len=ten", "lr="):  # lr= would search nothing
        with pytest.raises(UsageError):
            tune.parse_grid([bad])
    with pytest.raises(UsageError):
        tune.parse_grid(["dropout=0.1"], ["lr"])  # a grid for a knob left out
