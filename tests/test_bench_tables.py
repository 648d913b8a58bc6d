"""`matrrec report bench`: the benchmark scripts' CSVs read back as the README's speed tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_cli as _run

from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments import bench

REPO = Path(__file__).resolve().parent.parent


def _speed_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": "musical", "synthetic": False, "model": "matrrec", "max_len": 50,
        "preset": "paper", "scan_impl": "", "rounds": 3, "threads": 2,
        "options": ["", "skip_padding=true", "skip_padding=true,readout_only=true"],
        "train_s_per_epoch": [6.0, 3.0, 2.4], "inference_s": [0.5, 0.25, 0.2]})


def test_speed_options_are_each_set_against_the_first_row(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "speed.csv"
    _speed_rows().to_csv(csv, index=False)
    assert _run(["report", "bench", "speed_options", "--from", str(csv), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["options"] for r in rows] == ["default", "skip_padding=true",
                                            "skip_padding=true,readout_only=true"]
    # 6.0 / 3.0 and 6.0 / 2.4; 0.5 / 0.25 and 0.5 / 0.2
    assert [r["train speed-up"] for r in rows] == ["1.0×", "2.0×", "2.5×"]
    assert [r["eval speed-up"] for r in rows] == ["1.0×", "2.0×", "2.5×"]
    assert _run(["report", "bench", "speed_options", "--from", str(csv), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**matrrec on musical, L 50: median of 3 interleaved rounds, "
                          "2 thread(s)**")
    assert "| skip_padding=true | 3.00 | 0.250 | 2.0× | 2.0× |" in out
    # a forced scan is named: it changes every row's times
    title, _ = bench.speed_options(_speed_rows().assign(scan_impl="torch"), csv)
    assert ", scan torch:" in title


def _scale_rows() -> pd.DataFrame:
    prep = {"plan": "memory", "stage": "prep", "threads": 1, "model": None, "objective": None,
            "loss": None, "batch": None, "epoch_s": None, "peak_rss_gb": 0.5}
    cell = {"plan": "memory", "stage": "train+eval", "threads": 1, "model": "matrrec"}
    return pd.DataFrame([
        {**prep, "shape": "big", "items": 63001},
        {**cell, "shape": "big", "objective": "all", "loss": "full", "batch": 2048,
         "epoch_s": 3000.0, "peak_rss_gb": 3.2},
        {**cell, "shape": "big", "objective": "all", "loss": "sampled", "batch": 2048,
         "epoch_s": 500.0, "peak_rss_gb": 3.4},
        # no sampled partner: not a row; another thread count or model: not this view's
        {**cell, "shape": "big", "objective": "prefix", "loss": "full", "batch": 2048,
         "epoch_s": 5000.0, "peak_rss_gb": 3.4},
        {**cell, "shape": "big", "objective": "all", "loss": "full", "batch": 2048,
         "epoch_s": 1.0, "peak_rss_gb": 1.0, "threads": 2},
        {**cell, "shape": "big", "objective": "all", "loss": "sampled", "batch": 2048,
         "epoch_s": 1.0, "peak_rss_gb": 1.0, "model": "sasrec"},
    ])


def test_scale_pairs_full_and_sampled_cells_of_one_model_and_thread_count(
        tmp_path: Path) -> None:
    results = tmp_path / "results"
    csv = bench.published_csv(results, "scale")
    csv.parent.mkdir(parents=True)
    _scale_rows().to_csv(csv, index=False)
    title, df = bench.bench_table("scale", results)
    assert title.startswith("matrrec, 1 thread(s)")
    assert df.to_dict("records") == [{
        "dataset (items)": "big (63,001)", "objective": "all", "batch": 2048,
        "full loss, s/epoch": "3,000", "sampled, s/epoch": "500", "speed-up": "6.0×",
        "peak RSS GB, full / sampled": "3.2 / 3.4"}]


def test_bad_bench_input_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    assert _run(["report", "bench", "nope"]) != 0
    assert "choose one of speed_options, scale" in capsys.readouterr().err
    missing = tmp_path / "none.csv"
    assert _run(["report", "bench", "scale", "--from", str(missing)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1  # one line, no traceback
    assert str(missing) in err[0]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(MatrrecError, match="no column"):
        bench.bench_table("speed_options", tmp_path, wrong)
    only_full = tmp_path / "full.csv"
    _scale_rows().query("loss != 'sampled'").to_csv(only_full, index=False)
    with pytest.raises(MatrrecError, match="with both losses"):
        bench.bench_table("scale", tmp_path, only_full)


def test_the_published_bench_tables_render() -> None:
    """The committed CSVs the README's speed tables are rendered from are readable views."""
    for name in bench.VIEWS:
        title, df = bench.bench_table(name, REPO / "results")
        assert title
        assert not df.empty
