"""Unwritable directories and a full disk: one line naming the path and what to do, nothing
half-written left behind, stale temporary files cleaned at the next start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import import_synthetic

from matrrec_cli.cli import main

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--set", "hidden_size=64", "--set", "inner_size=64", "--set", "d_state=4"]


def _run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0, capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return import_synthetic(tmp_path_factory.mktemp("data"))


def _one_line(err: str, says: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("matrrec: error:"), err
    assert says in lines[-1]


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_results_dir_that_is_not_a_directory(tiny: Path, tmp_path: Path, capsys,
                                               where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    results = blocker if where == "file" else blocker / "sub"
    rc, err = _run(["train", "--dataset", "cyc", "--model", "pop", "--data-dir", str(tiny),
                    "--results-dir", str(results)], capsys)
    assert rc == 1
    _one_line(err, "a file stands where a directory is needed")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("command", [
    ["import", "new", "--from-file", "{csv}", "--format", "table", "--data-dir", "{bad}"],
    ["stats", "--data-dir", "{bad}"],
    ["datasets", "--data-dir", "{bad}"],
    ["train", "--dataset", "cyc", "--data-dir", "{bad}"],
])
def test_a_data_dir_that_is_a_file(tiny: Path, tmp_path: Path, capsys, command: list[str]
                                   ) -> None:
    bad = tmp_path / "data-file"
    bad.write_text("x")
    args = [a.format(csv=tiny / "i.csv", bad=bad) for a in command]
    rc, err = _run(args, capsys)
    assert rc != 0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("matrrec: error:")
    assert bad.read_text() == "x"


def test_stale_temporary_files_are_removed_when_a_run_resumes(tiny: Path, tmp_path: Path,
                                                               capsys) -> None:
    args = ["train", "--dataset", "cyc", "--model", "gru4rec", "--epochs", "1", "--device",
            "cpu", "--data-dir", str(tiny), "--results-dir", str(tmp_path)]
    assert _run(args, capsys)[0] == 0
    run = next((tmp_path / "runs" / "cyc" / "gru4rec").iterdir())
    (run / "metrics.json").unlink()  # killed after its last checkpoint...
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half")  # ...and in the middle of a write
    assert _run([*args, "--resume"], capsys)[0] == 0
    assert not list(run.glob(".*.tmp"))
    assert (run / "metrics.json").exists()


def _tmpfs_runner() -> list[str] | None:
    """`unshare -rm` (a private mount namespace as root of a user namespace), where it works."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return None
    ok = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                        capture_output=True, check=False)
    return ["unshare", "-rm"] if ok.returncode == 0 else None


def test_a_full_disk_during_training_is_one_line_and_leaves_nothing(tiny: Path,
                                                                     tmp_path: Path) -> None:
    """The results directory on a 96 KB tmpfs: the first checkpoint cannot be written."""
    runner = _tmpfs_runner()
    if runner is None:
        pytest.skip("no unshare/tmpfs here to make a small disk")
    results = tmp_path / "small"
    results.mkdir()
    script = (f"mount -t tmpfs -o size=96k tmpfs {results} && "
              f"{sys.executable} -m matrrec_cli train --dataset cyc --model matrrec --epochs 2 "
              f"--device cpu --data-dir {tiny} --results-dir {results} {' '.join(SMALL)}; "
              f"echo rc=$?; find {results} -type f | sort")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*runner, "sh", "-c", script], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("matrrec: error: no space left on the device of"), proc.stderr
    assert "free some space" in last
    left = [ln for ln in proc.stdout.splitlines() if ln.startswith("/")]
    assert not [f for f in left if f.endswith(".tmp")], left  # nothing half-written
    assert not [f for f in left if "/runs/cyc/" in f], left  # a run that never started


@pytest.mark.parametrize("report", ["table2", "shuffle", "significance", "claims", "runs",
                                    "breakdown"])
def test_every_report_on_a_results_dir_that_is_a_file_is_one_error(tmp_path: Path, capsys,
                                                                    report: str) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("x")
    extra = ["--dataset", "musical"] if report == "breakdown" else []
    rc, err = _run(["report", report, "--results-dir", str(blocker), *extra], capsys)
    assert rc == 1
    _one_line(err, "a file stands where a directory is needed")
