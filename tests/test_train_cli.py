"""`matrrec train`, `matrrec evaluate` and `matrrec report table2` end to end, on synthetic data
(the data layer is replaced by the synthetic frame; the model is the real MaTrRec, made small)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from matrrec_cli.cli import main
from matrrec_cli.errors import UsageError
from matrrec_cli.io import write_json
from matrrec_cli.train import runs
from matrrec_cli.train.config import RunOptions, TrainConfig

SMALL = ["--set", "hidden_size=16", "--set", "inner_size=32", "--set", "d_state=4",
         "--set", "batch_size=128"]


def _train(capsys, results: Path, *extra: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "synthetic", "--epochs", "2", "--device", "cpu",
              "--results-dir", str(results), "--json", *SMALL, *extra])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # stdout holds the JSON object only
    return json.loads(out[0])


def test_train_json_records_and_evaluate_reproduces(fake_data, capsys, tmp_path: Path) -> None:
    res = _train(capsys, tmp_path)
    assert set(res["test"]) >= {"recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10",
                                "ndcg@20", "mrr@10"}
    run_dir = Path(res["run_dir"])
    assert run_dir.parent == tmp_path / "runs" / "synthetic" / "matrrec"
    cfg = json.loads((run_dir / runs.CONFIG).read_text())
    assert cfg["sources"]["epochs"] == "command line"
    assert cfg["sources"]["max_len"] == "datasets.toml"
    assert cfg["sources"]["model.dropout_prob"] == "datasets.toml"
    assert cfg["sources"]["model.hidden_size"] == "command line --set"
    assert cfg["max_len"] == 8
    assert cfg["seed"] == 2020
    assert cfg["sources"]["seed"] == cfg["sources"]["model"] == "default"
    assert cfg["sources"]["dataset"] == cfg["sources"]["results_dir"] == "command line"
    env = json.loads((run_dir / runs.ENV).read_text())
    assert env["device"] == "cpu"
    assert env["mamba_backend"] == ["torch"]
    ranks = pd.read_parquet(run_dir / runs.RANKS)
    assert list(ranks.columns) == ["user", "split", "rank"]

    for split_name in ("test", "valid"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(run_dir), "--split", split_name, "--json", "--device", "cpu"])
        assert e.value.code in (0, None)
        out = json.loads(capsys.readouterr().out)
        assert out["matches_stored"] is True
        assert out["metrics"] == res[split_name]


def test_each_value_records_its_true_source(fake_data, capsys, tmp_path: Path,
                                            monkeypatch) -> None:
    """An explicit --model matrrec is the command line's, not a default; a directory from the
    environment names its variable; the seeds of --seeds are the command line's."""
    monkeypatch.setenv("MATRREC_DATA_DIR", str(tmp_path / "data"))
    cfg = json.loads((Path(_train(capsys, tmp_path, "--model", "matrrec", "--seed", "3")
                           ["run_dir"]) / runs.CONFIG).read_text())["sources"]
    assert (cfg["model"], cfg["seed"], cfg["device"]) == ("command line",) * 3
    assert cfg["data_dir"] == "$MATRREC_DATA_DIR"
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "synthetic", "--epochs", "1", "--seeds", "1", *SMALL,
              "--results-dir", str(tmp_path / "s")])
    (run,) = (tmp_path / "s" / "runs" / "synthetic" / "matrrec").iterdir()
    cfg = json.loads((run / runs.CONFIG).read_text())["sources"]
    assert (cfg["seed"], cfg["model"], cfg["device"]) == ("command line --seeds", "default",
                                                          "default")


def test_resume_continues_unfinished_run(fake_data, capsys, tmp_path: Path) -> None:
    first = _train(capsys, tmp_path)
    run_dir = Path(first["run_dir"])
    (run_dir / runs.METRICS).unlink()  # as if killed after the last checkpoint
    again = _train(capsys, tmp_path, "--resume")
    assert again["run_dir"] == first["run_dir"]
    assert again["test"] == first["test"]
    done = _train(capsys, tmp_path, "--resume")  # finished: said so, nothing trained
    assert done["run_dir"] == first["run_dir"]
    assert len(list((tmp_path / "runs").rglob("config.json"))) == 1
    fresh = _train(capsys, tmp_path)  # without --resume: a new run
    assert fresh["run_dir"] != first["run_dir"]
    assert fresh["test"] == first["test"]  # same seed, same numbers


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "no_such_key=1"], "unknown key"),
    (["--set", "hidden_size=big"], "expected an int"),
    (["--objective", "sometimes"], "'sometimes' is not one of 'prefix', 'all'"),
    (["--preset", "mine"], "'mine' is not one of 'paper', 'recbole'"),
    (["--set", "lr=nan"], "lr must be a finite number above 0"),
    (["--set", "lr=-1"], "lr must be a finite number above 0"),
    (["--seed", "-1"], "--seed must be in [0, 2^32)"),
    (["--seed", "4294967296"], "--seed must be in [0, 2^32)"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--dropout", "nan"], "--dropout must be in [0, 1)"),
    (["--no-such-flag"], "No such option"),
    (["--set", "hidden_size=0"], "hidden_size=0 must be at least 1"),
    (["--max-len", "1000000000000"], "--max-len must be in [1, 65536]"),
    (["--set", "tag=../../evil"], "--set tag must be letters, digits"),
    (["--set", "hidden_dropout_prob=1.5"], "must be in [0, 1)"),
])
def test_bad_options_are_one_line_errors(fake_data, capsys, tmp_path, args, message) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "synthetic", "--results-dir", str(tmp_path), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("matrrec: error:")
    assert message in err
    assert len(err.splitlines()) == 1


def test_evaluate_needs_a_run_dir(capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path)])
    assert e.value.code == 1
    assert "not a run directory" in capsys.readouterr().err


def _fake_run(results: Path, dataset: str, model: str, seed: int, test: dict, preset="paper"):
    run = results / "runs" / dataset / model / f"2026-{model}-{seed}"
    cfg = {"dataset": dataset, "model": model, "seed": seed, "preset": preset,
           "objective": "prefix", "max_len": 50, "epochs": 300}
    write_json(run / runs.CONFIG, cfg)
    write_json(run / runs.METRICS, {"test": test})


def test_report_table2(capsys, tmp_path: Path) -> None:
    def m(r10: float) -> dict:
        return {"recall@5": r10 / 2, "recall@10": r10, "recall@20": r10 * 1.5, "ndcg@10": r10 / 2}
    _fake_run(tmp_path, "musical", "sasrec", 2020, m(0.10))
    _fake_run(tmp_path, "musical", "mamba4rec", 2020, m(0.08))
    _fake_run(tmp_path, "musical", "matrrec", 2020, m(0.11))
    _fake_run(tmp_path, "musical", "matrrec", 2021, m(0.13))
    _fake_run(tmp_path, "office", "matrrec", 2020, m(0.05))
    with pytest.raises(SystemExit) as e:
        main(["report", "table2", "--results-dir", str(tmp_path), "--dataset", "musical"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Table 2" in out
    assert "preset paper" in out
    assert "0.1200 ± 0.0141" in out  # a pipe gets whole cells, not Rich's 80-column "0.12…"
    wide = pd.read_csv(tmp_path / "table2_overall.csv")
    assert set(wide["dataset"]) == {"musical"}
    r10 = wide[wide["metric"] == "recall@10"].iloc[0]
    assert r10["matrrec"] == pytest.approx(0.12)
    assert r10["matrrec_std"] == pytest.approx(0.0141, abs=1e-4)
    assert r10["matrrec_mark"] == "best"
    assert r10["sasrec_mark"] == "second"
    assert r10["improvement_vs_sasrec_pct"] == pytest.approx(20.0)
    assert r10["improvement_vs_mamba4rec_pct"] == pytest.approx(50.0)
    with pytest.raises(SystemExit):
        main(["report", "table2", "--results-dir", str(tmp_path), "--dataset", "musical",
              "--markdown"])
    lines = capsys.readouterr().out.splitlines()
    header = next(x for x in lines if x.startswith("| dataset"))
    assert header.split(" | ")[2:5] == ["sasrec", "mamba4rec", "matrrec"]
    row = next(x for x in lines if "| recall@10 |" in x)
    assert "| **0.1200 ± 0.0141** |" in row  # best in bold, the Rich markup gone
    assert "| <u>0.1000</u> |" in row
    assert "20.00%" in row
    assert "[" not in row
    # a table of another dataset keeps Musical's rows in the CSV (merged by dataset)
    with pytest.raises(SystemExit):
        main(["report", "table2", "--results-dir", str(tmp_path), "--dataset", "office"])
    wide = pd.read_csv(tmp_path / "table2_overall.csv")
    assert set(wide["dataset"]) == {"musical", "office"}
    assert len(wide) == 8
    capsys.readouterr()
    with pytest.raises(SystemExit):  # --json: the rows on stdout, parseable
        main(["report", "table2", "--results-dir", str(tmp_path), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["dataset"] for r in rows} == {"musical", "office"}


@pytest.mark.parametrize(("command", "text"), [
    ("train", "[default: 2020]"), ("ablate", "[default: datasets.toml]"),
    ("sweep", "[default: one]"), ("profile", "[default: 10")])
def test_help_shows_defaults_in_brackets(command: str, text: str, capsys, monkeypatch) -> None:
    # Rich markup would swallow an unescaped "[default: ...]" as a tag
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert text in capsys.readouterr().out


def test_late_keys_at_their_defaults_keep_older_config_hashes() -> None:
    """weight_decay, tag, bucket_by_length, skip_padding and readout_only came after the first
    recorded runs: a config that leaves them at their defaults must hash like a record written
    without them."""
    import dataclasses

    from matrrec_cli.models import MODEL_PATHS, make_config
    from matrrec_cli.train.config import LATE_DEFAULTS, LATE_MODEL_DEFAULTS, resolve

    # a model key added later must be registered as late (or this file updated on purpose)
    recorded = json.loads((Path(__file__).parent / "golden" / "model_config_keys.json").read_text())
    first = {"dataset", "model", "preset", "objective", "seed", "epochs", "batch_size",
             "eval_batch_size", "lr", "stopping_step", "mask_history", "max_len", "dropout",
             "model_config", "device", "data_dir", "results_dir", "sources"}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - first <= set(LATE_DEFAULTS)
    for model in MODEL_PATHS:
        added = set(dataclasses.asdict(make_config(model))) - set(recorded[model])
        assert added <= set(LATE_MODEL_DEFAULTS), (model, added)
    for model in ("matrrec", "sasrec", "mamba4rec"):
        cfg = resolve(RunOptions("ml-100k", model), prepared=False)
        old = cfg.to_dict()
        for key in LATE_DEFAULTS:
            old.pop(key)
        old["model_config"] = {k: v for k, v in old["model_config"].items()
                               if k in recorded[model]}
        assert TrainConfig.from_dict(old).config_hash() == cfg.config_hash(), model
    base = resolve(RunOptions("ml-100k"), prepared=False)
    for pair in ("weight_decay=0.01", "tag=tuned", "skip_padding=true", "readout_only=true",
                 "bucket_by_length=true"):
        cfg = resolve(RunOptions("ml-100k", sets=(pair,)), prepared=False)
        assert cfg.config_hash() != base.config_hash(), pair
    with pytest.raises(UsageError):
        resolve(RunOptions("ml-100k", sets=("weight_decay=-1",)), prepared=False)
    for model in ("nextitnet", "sine"):  # they read their padding: trimming would change them
        with pytest.raises(UsageError, match="bucket_by_length"):
            resolve(RunOptions("ml-100k", model, sets=("bucket_by_length=true",)),
                    prepared=False)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_honour_the_umask(fake_data, capsys, tmp_path: Path, umask: int) -> None:
    """Run files written through the atomic helper get 0666 less the umask, as a plain open()
    would (mkstemp alone makes them 0600, unreadable to a group sharing the results)."""
    import os
    import stat

    old = os.umask(umask)
    try:
        res = _train(capsys, tmp_path)
        with pytest.raises(SystemExit):
            main(["report", "table2", "--results-dir", str(tmp_path), "--include-capped"])
    finally:
        os.umask(old)
    run_dir = Path(res["run_dir"])
    files = [run_dir / n for n in (runs.CONFIG, runs.ENV, runs.METRICS, runs.HISTORY, runs.RANKS,
                                   runs.LAST, runs.BEST)] + [tmp_path / "table2_overall.csv"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert not list(run_dir.glob(".*.tmp"))


def test_a_run_without_numba_says_in_one_line_that_it_uses_the_eager_scan(
        fake_data, capsys, tmp_path: Path, monkeypatch) -> None:
    """numba is a core dependency where it has wheels; where it does not import, the run still
    trains (eager scan, the same numbers) and says so once."""
    from matrrec_cli.models import scan_kernel

    def said(results: Path) -> list[str]:
        with pytest.raises(SystemExit) as e:
            main(["train", "--dataset", "synthetic", "--epochs", "1", "--device", "cpu",
                  "--results-dir", str(results), *SMALL])
        assert e.value.code in (0, None)
        return [x for x in capsys.readouterr().err.splitlines() if "fused CPU scan is off" in x]

    assert said(tmp_path / "with") == []
    monkeypatch.setattr(scan_kernel, "available", lambda: False)
    lines = said(tmp_path / "without")
    assert len(lines) == 1
    assert "eager scan" in lines[0]
