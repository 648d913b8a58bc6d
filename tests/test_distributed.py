"""`matrrec train --nproc-per-node 2` on CPU (gloo), end to end through torch's launcher.

Two ranks must evaluate the same weights to the very same per-user ranks as one process, train to
the same losses and metrics as one process with the same global batch (to rounding: the gradient
is summed per shard and then across ranks, another order than one process's sum), leave one run
directory that only rank 0 wrote, and resume a run they were interrupted in.

The data make the awkward cases happen: 227 train rows in global batches of 113 end each epoch
with a batch of one sample (an empty shard on rank 1) after two odd-sized ones split 57/56, and
30 users in evaluation batches of 7 leave rank 0 three batches and rank 1 two.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import import_synthetic

from matrrec_cli.cli import main
from matrrec_cli.train import distributed, runs
from matrrec_cli.train.checkpoint import load_checkpoint, restore
from matrrec_cli.train.evaluate import evaluate_split
from matrrec_cli.train.pipeline import load_split, model_builder

REL = 1e-5  # 1 vs 2 ranks: summation order only (the same draws on any number of ranks)
ARGS = ["--dataset", "cyc", "--model", "sasrec", "--epochs", "3", "--device", "cpu", "--json",
        "--set", "hidden_size=16", "--set", "inner_size=32", "--set", "batch_size=113",
        "--set", "eval_batch_size=7"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    """One intra-op thread per process, in this process and in the ranks (they inherit it)."""
    saved, threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = saved


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return import_synthetic(tmp_path_factory.mktemp("data"), "cyc", n_users=30, n_items=20,
                            max_len=15, train_len=8)


def _train(capfd, *args: str) -> dict:
    """`matrrec train` in this process (its ranks, if any, as torchrun's children): the JSON."""
    with pytest.raises(SystemExit) as e:
        main(["train", *ARGS, *args])
    out, err = capfd.readouterr()
    assert e.value.code in (0, None), err[-2000:]
    (line,) = out.strip().splitlines()  # one JSON line: rank 1 printed nothing
    return json.loads(line)


@pytest.fixture(scope="module")
def runs_1_and_2(data_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """The same run (dropout 0) in one process and on two ranks (torchrun's children)."""
    out = []
    for nproc in ("1", "2"):
        results = tmp_path_factory.mktemp(f"results{nproc}")
        with pytest.raises(SystemExit) as e:
            main(["train", *ARGS, "--dropout", "0", "--data-dir", str(data_dir),
                  "--results-dir", str(results), "--nproc-per-node", nproc])
        assert e.value.code in (0, None)
        (run,) = (results / "runs" / "cyc" / "sasrec").iterdir()
        out.append(run)
    return out[0], out[1]


def _history(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / runs.HISTORY).read_text().splitlines()]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def test_two_ranks_train_as_one_process(runs_1_and_2) -> None:
    one, two = runs_1_and_2
    assert len(_history(one)) == len(_history(two)) == 3
    worst = _worst(one, two)
    print(f"1 vs 2 ranks: max relative difference {worst:.2e}")
    assert worst <= REL
    m1, m2 = (json.loads((r / runs.METRICS).read_text()) for r in (one, two))
    assert m1["config_hash"] == m2["config_hash"]  # where it ran is not what it computed


def _worst(one: Path, two: Path) -> float:
    """The largest relative difference between two runs' epoch losses and final metrics."""
    pairs = [(a["loss"], b["loss"]) for a, b in zip(_history(one), _history(two), strict=True)]
    m1, m2 = (json.loads((r / runs.METRICS).read_text()) for r in (one, two))
    for split_name in ("valid_full", "test_full"):
        pairs += [(m1[split_name][k], m2[split_name][k]) for k in m1[split_name]]
    return max(_rel(a, b) for a, b in pairs)


SIZES = {"sasrec": ["--set", "hidden_size=16", "--set", "inner_size=32"],
         "matrrec": ["--set", "hidden_size=16", "--set", "inner_size=32", "--set", "d_state=4"],
         "bert4rec": ["--set", "hidden_size=16", "--set", "inner_size=32"]}


@pytest.mark.parametrize(("model", "extra"), [
    *((m, ()) for m in SIZES),
    ("sasrec", ("--set", "loss=sampled", "--set", "negatives=8"))])  # the negatives' draw too
def test_two_ranks_equal_one_process_at_the_default_dropout(data_dir: Path, tmp_path: Path,
                                                            model: str, extra: tuple) -> None:
    """Every random draw of training (dropout masks, BERT4Rec's masked positions) is the one
    process's, whatever the number of ranks: each rank draws the whole batch's and keeps its
    rows, from rank 0's state (models/draws.py). So at the model's own dropout two ranks give
    the one-process numbers to summation order, with the batch of one that leaves rank 1's
    shard empty in every epoch."""
    out = []
    for nproc in ("1", "2"):
        results = tmp_path / f"results{nproc}"
        with pytest.raises(SystemExit) as e:
            main(["train", "--dataset", "cyc", "--model", model, "--epochs", "3", "--device",
                  "cpu", "--set", "batch_size=113", "--set", "eval_batch_size=7",
                  *SIZES[model], *extra, "--data-dir", str(data_dir), "--results-dir",
                  str(results), "--nproc-per-node", nproc])
        assert e.value.code in (0, None)
        (run,) = (results / "runs" / "cyc" / model).iterdir()
        out.append(run)
    one, two = out
    cfg = json.loads((one / runs.CONFIG).read_text())
    assert any("dropout" in k and v > 0 for k, v in cfg["model_config"].items()
               if isinstance(v, float))  # the model's own dropout is on
    worst = _worst(one, two)
    print(f"{model}, 1 vs 2 ranks at its dropout: max relative difference {worst:.2e}")
    assert worst <= REL


def test_a_rank_draws_its_rows_of_the_whole_batch_mask() -> None:
    """The rank-invariant draw is F.dropout's own draw, row for row, bit for bit."""
    import torch.nn.functional as F

    from matrrec_cli.models import draws

    x = torch.randn(9, 5, 4)
    torch.manual_seed(3)
    whole = F.dropout(x, 0.4, True)
    for lo, hi in ((0, 5), (5, 9), (9, 9)):
        torch.manual_seed(3)
        with draws.batch_rows(9, lo, hi):
            part = draws.dropout(x[lo:hi], 0.4, True)
        assert torch.equal(part, whole[lo:hi])
    torch.manual_seed(3)
    assert torch.equal(draws.dropout(x, 0.4, True), whole)  # one process: F.dropout itself


def test_two_ranks_evaluate_like_one_process(runs_1_and_2) -> None:
    """The 2-rank run's stored ranks and metrics (gathered from both ranks) are exactly what one
    process computes from the same best.pt."""
    _, two = runs_1_and_2
    cfg, stored = runs.load_run(two)
    data = load_split(cfg)
    model = model_builder(cfg, data.seqs.n_items)()
    restore(model, load_checkpoint(two / runs.BEST)["model"], two / runs.BEST)
    ranks = pd.read_parquet(two / runs.RANKS)
    for split_name in ("valid", "test"):
        res = evaluate_split(model, data, cfg, split=split_name, device="cpu")
        assert res.metrics == stored[f"{split_name}_full"]
        mine = ranks[ranks["split"] == split_name]
        assert mine["user"].tolist() == res.users.tolist()
        assert mine["rank"].tolist() == res.ranks.tolist()


def test_two_ranks_refit_as_one_process(data_dir: Path, tmp_path: Path) -> None:
    """The refit option's second training (train + valid targets) shards like the first: the
    test metrics of one process and of two ranks agree, and refit.pt scores the test."""
    out = []
    for nproc in ("1", "2"):
        results = tmp_path / f"results{nproc}"
        with pytest.raises(SystemExit) as e:
            main(["train", *ARGS, "--dropout", "0", "--set", "refit=true", "--data-dir",
                  str(data_dir), "--results-dir", str(results), "--nproc-per-node", nproc])
        assert e.value.code in (0, None)
        (run,) = (results / "runs" / "cyc" / "sasrec").iterdir()
        assert (run / runs.REFIT).exists()
        assert not list(run.glob(".*.tmp"))  # atomic_path's temporaries: none left behind
        out.append(json.loads((run / runs.METRICS).read_text()))
    one, two = out
    assert one["refit_epochs"] == two["refit_epochs"] >= 1
    assert max(_rel(one["test_full"][k], two["test_full"][k]) for k in one["test_full"]) <= REL


def test_only_rank_0_wrote_the_run(runs_1_and_2) -> None:
    _, two = runs_1_and_2
    root = two.parents[2]  # results/runs
    assert sorted(p for p in root.rglob("*") if p.is_dir()) == sorted(
        [root / ".locks", two.parent.parent, two.parent, two])
    assert sorted(p.name for p in two.iterdir()) == sorted(
        [runs.CONFIG, runs.ENV, runs.HISTORY, runs.LAST, runs.BEST, runs.RANKS, runs.METRICS])
    assert len(_history(two)) == 3  # one writer: two would have appended six lines
    env = json.loads((two / runs.ENV).read_text())
    assert (env["world_size"], env["backend"]) == (2, "gloo")
    assert json.loads((two / runs.METRICS).read_text())["world_size"] == 2
    one_env = json.loads((runs_1_and_2[0] / runs.ENV).read_text())
    assert one_env["world_size"] == 1
    assert "backend" not in one_env
    assert "world_size" not in json.loads((runs_1_and_2[0] / runs.METRICS).read_text())
    ck = load_checkpoint(two / runs.LAST, ("rng_ranks",))
    assert len(ck["rng_ranks"]) == 2


def test_resume_of_a_two_rank_run_replays_it(data_dir: Path, tmp_path: Path, capfd,
                                             monkeypatch) -> None:
    """Interrupted after epoch 1 (its checkpoints as they were then) and resumed on two ranks,
    a run with dropout ends exactly as the uninterrupted one: each rank gets its own RNG state
    back from last.pt. The checkpoints of epoch 1 are copied while the ranks wait after it."""
    args = ["--dropout", "0.2", "--data-dir", str(data_dir), "--nproc-per-node", "2"]
    copied = tmp_path / "copied"  # the ranks hold after epoch 1 until the copy is made
    monkeypatch.setenv("MATRREC_PAUSE_AFTER_CHECKPOINT", f"1:@{copied}")
    stash = tmp_path / "stash"
    done = threading.Event()

    def copy_at_epoch_1() -> None:
        while not done.is_set():
            for history in (tmp_path / "a").rglob(runs.HISTORY):
                if len(history.read_text().splitlines()) == 1:  # written after last.pt
                    shutil.copytree(history.parent, stash)
                    copied.touch()
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=copy_at_epoch_1)
    watcher.start()
    try:
        full = _train(capfd, *args, "--results-dir", str(tmp_path / "a"))
    finally:
        done.set()
        watcher.join()
    monkeypatch.delenv("MATRREC_PAUSE_AFTER_CHECKPOINT")
    run = Path(full["run_dir"])
    # the state of a run killed after epoch 1, in a fresh results directory
    killed = tmp_path / "b" / run.relative_to(tmp_path / "a")
    shutil.copytree(stash, killed)
    assert load_checkpoint(killed / runs.LAST, ("epoch",))["epoch"] == 1
    again = _train(capfd, *args, "--results-dir", str(tmp_path / "b"), "--resume")
    assert again["run_dir"] == str(killed)
    assert (again["valid"], again["test"]) == (full["valid"], full["test"])
    assert [h["loss"] for h in _history(killed)] == [h["loss"] for h in _history(run)]
    assert (json.loads((killed / runs.METRICS).read_text())["test_full"]
            == json.loads((run / runs.METRICS).read_text())["test_full"])


def test_nproc_usage_errors(data_dir: Path, tmp_path: Path, capsys) -> None:
    for extra, message in ((["--seeds", "2"], "cannot be combined with --seeds"),
                           (["--device", "cuda"], "torch sees no CUDA GPU"),
                           ([], "--nproc-per-node must be at least 1, not 0")):
        nproc = "0" if not extra else "2"
        with pytest.raises(SystemExit) as e:
            main(["train", *ARGS, "--data-dir", str(data_dir), "--results-dir", str(tmp_path),
                  "--nproc-per-node", nproc, *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("matrrec: error:"), err
        assert message in err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_command_line_is_rebuilt_from_the_parse(monkeypatch) -> None:
    """The ranks run the options the user gave (flags, repeated --set), without --nproc."""
    seen = {}
    monkeypatch.setattr(distributed, "launch",
                        lambda argv, nproc, device: seen.update(argv=argv, nproc=nproc) or 0)
    monkeypatch.setattr("matrrec_cli.train.config.resolve", lambda opts: opts)
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "cyc", "--set", "a=1", "--nproc-per-node", "3", "--resume",
              "--set", "b=2", "--dropout", "0.5", "--json"])
    assert e.value.code == 0
    assert seen["nproc"] == 3
    argv = seen["argv"]
    assert argv[0] == "train"
    assert "--nproc-per-node" not in argv
    pairs = {tuple(argv[i:i + 2]) for i in range(1, len(argv) - 1)}
    assert {("--dataset", "cyc"), ("--set", "a=1"), ("--set", "b=2"),
            ("--dropout", "0.5")} <= pairs
    assert {"--resume", "--json"} <= set(argv)
    assert "--seed" not in argv


def test_a_rank_failure_is_the_command_status(data_dir: Path, tmp_path: Path, capfd) -> None:
    """Rank 0 finds the run busy (another process holds its lock): its one error line, status
    1, and the other rank stopped, not left waiting."""
    from matrrec_cli.train.config import RunOptions, resolve

    cfg = resolve(RunOptions("cyc", "sasrec", sets=("hidden_size=16", "inner_size=32",
                                                     "batch_size=113", "eval_batch_size=7"),
                             epochs=3, device="cpu", data_dir=str(data_dir),
                             results_dir=str(tmp_path)))
    with runs.training_lock(cfg), pytest.raises(SystemExit) as e:
        main(["train", *ARGS, "--data-dir", str(data_dir), "--results-dir", str(tmp_path),
              "--nproc-per-node", "2"])
    assert e.value.code == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count("is being trained by another process") == 1  # rank 0's one line
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_finished_two_rank_run_exits_0_every_time_on_a_loaded_cpu(data_dir: Path,
                                                                     tmp_path: Path) -> None:
    """Ten finished 2-rank runs, each a fresh `matrrec` process, while another process holds a
    core: every one exits 0 (ranks leave the process group together; distributed.close)."""
    import subprocess
    import sys

    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for i in range(10):
            proc = subprocess.run(
                [sys.executable, "-m", "matrrec_cli", "train", "--dataset", "cyc", "--model",
                 "sasrec", "--epochs", "1", "--device", "cpu", *SIZES["sasrec"],
                 "--data-dir", str(data_dir), "--results-dir", str(tmp_path / f"r{i}"),
                 "--nproc-per-node", "2"], capture_output=True, text=True, timeout=600,
                stdin=subprocess.DEVNULL, check=False)
            assert proc.returncode == 0, f"try {i + 1}: {proc.stderr[-1500:]}"
            assert "terminate called" not in proc.stderr
    finally:
        load.kill()
        load.wait()
