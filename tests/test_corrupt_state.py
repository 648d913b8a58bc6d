"""Corrupt state gives one line naming the file and what to do; reports skip a corrupt run with a
warning and go on (one bad record never blocks the others)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import import_synthetic

from matrrec_cli.cli import main


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def _clean(err: str, *, says: str) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("matrrec: error:")]
    assert len(lines) == 1, err
    assert says in lines[0], lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """An imported dataset and finished 1-epoch runs of pop, gru4rec and matrrec on it (made with
    --epochs 1, so reports need --include-capped)."""
    root = tmp_path_factory.mktemp("world")
    data, results = root / "data", root / "results"
    data.mkdir()
    import_synthetic(data)
    runs = {}
    for model, extra in (("pop", []), ("gru4rec", []),
                         ("matrrec", ["--set", "hidden_size=8", "--set", "inner_size=16",
                                      "--set", "d_state=4"])):
        with pytest.raises(SystemExit) as e:
            main(["train", "--dataset", "cyc", "--model", model, "--epochs", "1", "--device",
                  "cpu", "--data-dir", str(data), "--results-dir", str(results), "--json",
                  *extra])
        assert not e.value.code
        runs[model] = next((results / "runs" / "cyc" / model).iterdir())
    return data, results, runs


@pytest.fixture
def copy(world, tmp_path: Path) -> tuple[Path, Path, dict[str, Path]]:
    """A private copy of the world, free to damage."""
    data, results, runs = world
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(results, tmp_path / "results")
    moved = {m: tmp_path / "results" / r.relative_to(results) for m, r in runs.items()}
    return tmp_path / "data", tmp_path / "results", moved


@pytest.mark.parametrize(("name", "content"), [
    ("metrics.json", "{}"), ("metrics.json", '{"test": {"ndcg@10": 0.1'),
    ("config.json", "{}"), ("config.json", ""), ("metrics.json", "[]"),
])
def test_a_corrupt_run_record_is_skipped_with_a_warning(copy, capsys, name: str,
                                                        content: str) -> None:
    _, results, runs = copy
    (runs["gru4rec"] / name).write_text(content)
    for report in ("table2", "runs"):
        rc, _, err = _run(["report", report, "--results-dir", str(results),
                           "--include-capped"], capsys)
        assert rc == 0, err
        assert f"matrrec: warning: skipping run {runs['gru4rec']}" in err
        assert "Traceback" not in err
    rc, out, _ = _run(["report", "table2", "--results-dir", str(results), "--include-capped",
                       "--json"], capsys)
    models = {k for row in json.loads(out) for k in row if k in ("pop", "gru4rec", "matrrec")}
    assert models == {"pop", "matrrec"}


def test_a_torn_history_line_and_a_corrupt_env_leave_report_runs_working(copy, capsys) -> None:
    _, results, runs = copy
    with open(runs["gru4rec"] / "history.jsonl", "a") as f:
        f.write('{"epoch": 2, "secon')
    (runs["gru4rec"] / "env.json").write_text("{")
    rc, _, err = _run(["report", "runs", "--results-dir", str(results), "--include-capped"],
                      capsys)
    assert rc == 0
    assert "history.jsonl line 2 is corrupt" in err
    assert "Traceback" not in err


def test_a_truncated_ranks_file_leaves_the_other_pairs(copy, capsys) -> None:
    _, results, runs = copy
    ranks = runs["gru4rec"] / "ranks.parquet"
    ranks.write_bytes(ranks.read_bytes()[:50])
    rc, _, err = _run(["report", "significance", "--results-dir", str(results),
                       "--include-capped"], capsys)
    assert rc == 0
    assert "matrrec vs gru4rec left out" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["random", "wrong keys", "other model", "empty"])
def test_a_corrupt_best_checkpoint_is_one_error(copy, capsys, damage: str) -> None:
    _, _, runs = copy
    best = runs["matrrec"] / "best.pt"
    if damage == "random":
        best.write_bytes(bytes(range(256)) * 40)
    elif damage == "wrong keys":
        torch.save({"weights": {}}, best)
    elif damage == "other model":
        other = torch.load(runs["gru4rec"] / "best.pt", weights_only=True)
        torch.save({"model": other["model"]}, best)
    else:
        best.write_bytes(b"")
    rc, _, err = _run(["evaluate", str(runs["matrrec"]), "--device", "cpu"], capsys)
    assert rc == 1
    _clean(err, says=str(best))


def test_a_corrupt_last_checkpoint_on_resume_is_one_error(copy, capsys) -> None:
    data, results, runs = copy
    run = runs["matrrec"]
    (run / "metrics.json").unlink()  # as if killed after the checkpoint
    (run / "last.pt").write_bytes(b"\x80\x04garbage")
    rc, _, err = _run(["train", "--dataset", "cyc", "--model", "matrrec", "--epochs", "1",
                       "--device", "cpu", "--data-dir", str(data), "--results-dir", str(results),
                       "--set", "hidden_size=8", "--set", "inner_size=16", "--set", "d_state=4",
                       "--resume"], capsys)
    assert rc == 1
    _clean(err, says="last.pt is corrupt")
    assert "delete it and train without --resume" in err


@pytest.mark.parametrize(("name", "damage"), [
    ("meta.json", b""), ("meta.json", b"{"), ("meta.json", b'{"n_users": 3}'),
    ("interactions.parquet", b""), ("interactions.parquet", b"PAR1garbagePAR1"),
    ("interactions.parquet", "truncate"),
])
def test_corrupt_prepared_data_names_the_command_that_rebuilds_it(copy, capsys, name: str,
                                                                   damage) -> None:
    data, results, _ = copy
    path = data / "cyc" / name
    path.write_bytes(path.read_bytes()[:100] if damage == "truncate" else damage)
    rc, _, err = _run(["train", "--dataset", "cyc", "--model", "pop", "--data-dir", str(data),
                       "--results-dir", str(results)], capsys)
    assert rc == 1
    _clean(err, says=f"{path} is corrupt")
    assert "run `matrrec import cyc --from-file" in err


@pytest.mark.parametrize(("name", "content", "says"), [
    ("metrics.json", "{}", "metrics.json is corrupt"),
    ("config.json", "{}", "config.json is corrupt"),
    ("config.json", "[1]", "config.json is corrupt"),
])
def test_evaluate_of_a_corrupt_record_is_one_error(copy, capsys, name: str, content: str,
                                                   says: str) -> None:
    _, _, runs = copy
    (runs["gru4rec"] / name).write_text(content)
    rc, _, err = _run(["evaluate", str(runs["gru4rec"]), "--device", "cpu"], capsys)
    assert rc == 1
    _clean(err, says=says)


def test_a_datasets_toml_that_is_not_utf8_is_one_error(tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    bad = tmp_path / "datasets.toml"
    bad.write_bytes(b"[x]\ntitle = \"\xff\xfe\"\n")
    monkeypatch.setenv("MATRREC_DATASETS_TOML", str(bad))
    rc, _, err = _run(["datasets", "--data-dir", str(tmp_path)], capsys)
    assert rc == 1
    _clean(err, says="not UTF-8 text")


@pytest.mark.parametrize(("key", "value"), [("max_len", "ten"), ("seed", 1.5),
                                             ("mask_history", "yes")])
def test_a_config_value_of_the_wrong_type_is_one_error(copy, capsys, key: str,
                                                       value: object) -> None:
    import json

    _, _, runs = copy
    path = runs["gru4rec"] / "config.json"
    record = json.loads(path.read_text())
    record[key] = value
    path.write_text(json.dumps(record))
    for args in (["evaluate", str(runs["gru4rec"]), "--device", "cpu"],
                 ["recommend", str(runs["gru4rec"]), "--user", "1", "-k", "3"]):
        rc, _, err = _run(args, capsys)
        assert rc == 1, args
        _clean(err, says=f"config.json is corrupt ({key} is {value!r})")
