"""Speed work must not change results: the exact metrics of short seeded runs, pinned.

tests/golden/short_runs.json holds the full-precision valid/test metrics and the epoch losses of
two short seeded runs (MaTrRec with the native scan, both objectives; SASRec) on a fixed synthetic
dataset, written by `MATRREC_WRITE_GOLDEN=1 pytest tests/test_pinned_metrics.py` at a known-good
commit. Any change to samples, batching, the scan, the trainer or evaluation that moves a single
bit fails here. Bitwise equality needs the same torch build and CPU kind: the golden file records
both, and on another platform the comparison allows 1e-5 relative instead of 0.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch
from test_train_tiny import synthetic_interactions

from matrrec_cli.train.config import resolve
from matrrec_cli.train.pipeline import model_builder
from matrrec_cli.train.progress import Reporter
from matrrec_cli.train.samples import build_sequences, split
from matrrec_cli.train.trainer import fit

GOLDEN = Path(__file__).parent / "golden" / "short_runs.json"
RUNS = {
    "matrrec-prefix": ("matrrec", "prefix", ["hidden_size=16", "inner_size=32", "d_state=8"]),
    "matrrec-all": ("matrrec", "all", ["hidden_size=16", "inner_size=32", "d_state=8"]),
    "sasrec-prefix": ("sasrec", "prefix", ["hidden_size=16", "inner_size=32"]),
}


def _run(name: str, tmp_path: Path) -> dict:
    model, objective, sets = RUNS[name]
    cfg = resolve(dataset="golden", model=model,
                  cli={"epochs": 3, "max_len": 12, "dropout": 0.2, "objective": objective},
                  sets=[*sets, "batch_size=64"], device="cpu", data_dir=str(tmp_path),
                  results_dir=str(tmp_path))
    seqs = build_sequences(synthetic_interactions(n_users=50, n_items=30, max_len=25, seed=7))
    data = split(seqs, max_len=cfg.max_len, objective=objective)
    run_dir = tmp_path / name
    run_dir.mkdir()
    m = fit(cfg, data, model_builder(cfg, seqs.n_items), run_dir, reporter=Reporter(enabled=False))
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return {"valid": m["valid_full"], "test": m["test_full"],
            "losses": [h["loss"] for h in history]}


def _platform() -> dict:
    return {"torch": torch.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads()}


def test_short_seeded_runs_match_the_pinned_metrics(tmp_path: Path) -> None:
    got = {name: _run(name, tmp_path) for name in RUNS}
    if os.environ.get("MATRREC_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"platform": _platform(), "runs": got}, indent=1) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    pinned = json.loads(GOLDEN.read_text())
    exact = pinned["platform"] == _platform()
    for name, want in pinned["runs"].items():
        for key in ("valid", "test"):
            for metric, value in want[key].items():
                if exact:
                    assert got[name][key][metric] == value, (name, key, metric)
                else:
                    assert got[name][key][metric] == pytest.approx(value, rel=1e-5, abs=1e-7)
        assert got[name]["losses"] == (want["losses"] if exact else
                                       pytest.approx(want["losses"], rel=1e-5))
