"""A corpus of bad inputs on the newer surfaces (run files, tune, recommend, fuse, reports,
executor options, the published evidence): each is one `matrrec: error:` line on stderr and a
non-zero exit, never a traceback, and nothing is written where it should not be. Each case
fails before anything trains, so the corpus runs in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import run_cli

SMALL = ["--set", "hidden_size=16", "--set", "embedding_size=16"]


@pytest.fixture(scope="module")
def world(tiny: Path, tmp_path_factory) -> dict[str, Path]:
    """A prepared dataset, a results directory with one finished gru4rec run, run files."""
    root = tmp_path_factory.mktemp("corpus")
    results = root / "results"
    assert run_cli(["train", "--dataset", "cyc", "--model", "gru4rec", "--epochs", "1",
                    "--device", "cpu", "--data-dir", str(tiny), "--results-dir", str(results),
                    *SMALL]) == 0
    (run,) = (results / "runs" / "cyc" / "gru4rec").iterdir()
    files = {"unclosed.toml": 'dataset = "cyc"\n[trainer\n',
             "wrong-type.toml": 'dataset = "cyc"\n[trainer]\nepochs = "ten"\n',
             "negative.toml": 'dataset = "cyc"\n[trainer]\nepochs = -3\n',
             "zero-lr.toml": 'dataset = "cyc"\n[trainer]\nlr = 0\n',
             "zero-width.toml": 'dataset = "cyc"\n[model_config]\nhidden_size = 0\n',
             "zero-len.toml": 'dataset = "cyc"\n[trainer]\nmax_len = 0\n',
             "empty.toml": ""}
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "utf16.toml").write_bytes('dataset = "cyc"\n'.encode("utf-16"))
    (root / "a-directory.toml").mkdir()
    (root / "not-sqlite.db").write_text("user,item\n1,2\n")
    (root / "a-file").write_text("x")
    return {"root": root, "data": tiny, "results": results, "run": run}


def _fmt(args: list[str], w: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in w.items()}) for a in args]


TRAIN = ["--data-dir", "{data}", "--results-dir", "{root}/fresh", "--device", "cpu",
         "--epochs", "1"]
CASES = {
    # run files
    "unclosed table": (["train", "--config", "{root}/unclosed.toml", *TRAIN], "not a readable"),
    "wrong type": (["train", "--config", "{root}/wrong-type.toml", *TRAIN], "expected an int"),
    "out of range": (["train", "--config", "{root}/negative.toml", "--data-dir", "{data}",
                      "--results-dir", "{root}/fresh", "--device", "cpu"], "at least 1"),
    "lr 0": (["train", "--config", "{root}/zero-lr.toml", *TRAIN], "above 0"),
    "width 0": (["train", "--config", "{root}/zero-width.toml", *TRAIN], "at least 1"),
    "L 0": (["train", "--config", "{root}/zero-len.toml", *TRAIN], "--max-len must be"),
    "empty file": (["train", "--config", "{root}/empty.toml", *TRAIN], "give --dataset"),
    "UTF-16": (["train", "--config", "{root}/utf16.toml", *TRAIN], "not a readable TOML"),
    "a directory": (["train", "--config", "{root}/a-directory.toml", *TRAIN], "not a readable"),
    "missing": (["train", "--config", "{root}/missing.toml", *TRAIN], "no such file"),
    # tune
    "space twice": (["tune", "--dataset", "cyc", "--space", "lr=0.1,0.01", "--space",
                     "lr=0.2,0.3", *TRAIN], "given twice"),
    "int bounds": (["tune", "--dataset", "cyc", "--space", "max_len=int:1.5:10", *TRAIN],
                   "whole numbers"),
    "space type": (["tune", "--dataset", "cyc", "--space", "dropout=a,b", *TRAIN],
                   "not a value of dropout"),
    "storage not sqlite": (["tune", "--dataset", "cyc", "--storage",
                            "sqlite:///{root}/not-sqlite.db", "--space", "dropout=0.1,0.2",
                            *TRAIN], "cannot open the study"),
    "storage not a URL": (["tune", "--dataset", "cyc", "--storage", "{root}/not-sqlite.db",
                           "--space", "dropout=0.1,0.2", *TRAIN], "cannot open the study"),
    # recommend
    "unknown user": (["recommend", "{run}", "--user", "nobody"], "unknown user id 'nobody'"),
    "k 0": (["recommend", "{run}", "--user", "1", "-k", "0"], "greater than or equal to 1"),
    "not a run": (["recommend", "{root}", "--user", "1"], "is not a run directory"),
    "no user": (["recommend", "{run}"], "give --user"),
    # fuse and reports on empty or damaged results
    "fuse, no runs": (["fuse", "--dataset", "cyc", "--results-dir", "{root}/empty",
                       "--data-dir", "{data}"], "no finished matrrec runs"),
    "table2, empty": (["report", "table2", "--results-dir", "{root}/empty"], "no finished"),
    "claims, empty": (["report", "claims", "--results-dir", "{root}/empty"], "no finished"),
    "shuffle, file": (["report", "shuffle", "--results-dir", "{root}/a-file"], "a file stands"),
    "significance, file": (["report", "significance", "--results-dir", "{root}/a-file"],
                           "a file stands"),
    "docs, missing": (["docs", "{root}/missing.md"], "no such document"),
    # executor options out of range
    "nproc 0": (["train", "--dataset", "cyc", "--nproc-per-node", "0", *TRAIN], "at least 1"),
    "cpus 0": (["train", "--dataset", "cyc", "--seeds", "2", "--executor", "ray",
                "--cpus-per-run", "0", *TRAIN], "--cpus-per-run must be at least 1"),
    "unknown tracker": (["train", "--dataset", "cyc", "--track", "wandb", *TRAIN],
                        "--track must be one of"),
    # odd paths: a name the file system refuses, before the configuration table
    "name too long": (["train", "--dataset", "cyc", "--data-dir", "{data}", "--results-dir",
                       "{root}/" + "x" * 300, "--device", "cpu", "--epochs", "1"],
                      "file name too long"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_a_nonzero_exit(world: dict[str, Path], capsys,
                                                  case: str) -> None:
    args, says = CASES[case]
    capsys.readouterr()
    rc = run_cli(_fmt(args, world))
    out, err = capsys.readouterr()
    assert out == ""  # refused before any table is printed
    assert rc != 0, case
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("matrrec: error: ")
    assert says in lines[0], lines[0]
    assert not list((world["root"] / "fresh").glob("runs/*/*/*"))  # nothing trained


def test_a_damaged_published_run_is_skipped_with_a_warning_naming_it(
        world: dict[str, Path], tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    shutil.copytree(world["results"], results)
    assert run_cli(["publish", "--results-dir", str(results), "--include-capped"]) == 0
    shutil.rmtree(results / "runs")
    (published,) = (results / "published" / "runs" / "cyc" / "gru4rec").iterdir()
    (published / "metrics.json").write_text("{")
    capsys.readouterr()
    assert run_cli(["report", "table2", "--results-dir", str(results),
                    "--include-capped"]) == 1
    err = capsys.readouterr().err
    assert f"skipping run {published}" in err
    assert "Traceback" not in err
