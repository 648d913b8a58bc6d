"""matrrec fuse: late fusion of a trained network with a count model, chosen on validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SMALL, run_cli

from matrrec_cli.experiments import fusion
from matrrec_cli.train import pipeline, runs
from matrrec_cli.train.checkpoint import load_checkpoint, restore
from matrrec_cli.train.samples import make_batch


@pytest.fixture(scope="module")
def trained(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    common = ["--dataset", "cyc", "--data-dir", str(tiny), "--results-dir", str(results)]
    assert run_cli(["train", *common, "--seeds", "2", "--epochs", "3", *SMALL,
                    "--set", "scan_impl=torch"]) == 0
    assert run_cli(["train", *common, "--model", "sr"]) == 0
    assert run_cli(["train", *common, "--model", "pop"]) == 0
    return results


def _fuse(results: Path, count: str = "sr") -> fusion.Fusion:
    from matrrec_cli.experiments.table2 import Selection

    return fusion.fuse(results, "cyc", count=count, selection=Selection(include_capped=True))


def test_beta_zero_is_the_network_alone(trained: Path) -> None:
    """Per seed, beta 0 gives each run's own stored valid and test NDCG@10 (the same ranks)."""
    f = _fuse(trained)
    stored = [json.loads((r / runs.METRICS).read_text())
              for r in sorted((trained / "runs" / "cyc" / "matrrec").iterdir())]
    rows = f.table[(f.table["mode"] == "seed") & (f.table["beta"] == 0)]
    for _, row in rows.iterrows():
        for split in ("valid", "test"):
            want = np.mean([m[f"{split}_full"]["ndcg@10"] for m in stored])
            assert row[f"{split}_ndcg@10"] == pytest.approx(want, rel=1e-12)


def test_a_candidate_equals_its_formula(trained: Path, tiny: Path) -> None:
    """The ensemble at window 2, beta 1, recomputed by hand from the two runs' weights and the
    count model's rule weights: log(mean softmax) + log(0.98 q + 0.02 pop)."""
    f = _fuse(trained)
    cfgs = [runs.load_run(r)[0] for r in sorted((trained / "runs" / "cyc" / "matrrec").iterdir())]
    data = pipeline.load_split(cfgs[0])
    batch = make_batch(data, data.test, split="test")
    probs = []
    for r, cfg in zip(sorted((trained / "runs" / "cyc" / "matrrec").iterdir()), cfgs,
                      strict=True):
        net = pipeline.model_builder(cfg, data.seqs.n_items)()
        restore(net, load_checkpoint(r / runs.BEST)["model"], r / runs.BEST)
        with torch.no_grad():
            probs.append(torch.softmax(net.eval().full_sort_scores(batch.item_seq, batch.lengths)
                                       .double(), dim=1))
    sr = fusion._count_model("sr", data, "test", (("window", 2),), tie_break=False)
    w = sr.seq_repr(batch.item_seq, batch.lengths).double().numpy()
    pop = sr.popularity.double().numpy() / sr.popularity.double().sum().item()
    ndcg = []
    for i in range(len(w)):
        q = w[i] / w[i].sum() if w[i].sum() > 0 else pop
        with np.errstate(divide="ignore"):  # the padding column: -inf, never ranked
            s = np.log(np.mean([p[i].numpy() for p in probs], axis=0)) + \
                np.maximum(np.log(0.98 * q + 0.02 * pop), -1e4)
        s[0] = -np.inf
        rank = 1 + int((s > s[int(batch.target[i])]).sum())
        ndcg.append(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
    row = f.table[(f.table["mode"] == "ensemble") & (f.table["setting"] == "window=2")
                  & (f.table["beta"] == 1.0)].iloc[0]
    assert row["test_ndcg@10"] == pytest.approx(np.mean(ndcg), rel=1e-12)


def test_the_choice_is_made_on_validation_only(trained: Path) -> None:
    f = _fuse(trained)
    for mode in fusion.MODES:
        mine = f.table[f.table["mode"] == mode]
        chosen = mine[mine["chosen"]]
        assert len(chosen) == 1
        assert chosen["valid_ndcg@10"].iloc[0] == mine["valid_ndcg@10"].max()
    s = fusion.summary(f)
    assert set(s["best_simple"]) == {"sr"}  # sr beats pop on the cycle
    row = s.set_index("mode").loc["ensemble"]
    assert row["ratio_best"] == pytest.approx(row["test_ndcg@10"] / f.best_test)


def test_fuse_command_writes_its_table_and_refuses_bad_input(trained: Path, capsys) -> None:
    common = ["--dataset", "cyc", "--results-dir", str(trained)]
    assert run_cli(["fuse", *common, "--include-capped", "--with", "markov"]) == 0
    out = capsys.readouterr().out
    assert "goal" in out
    df = pd.read_csv(trained / "fuse_cyc_matrrec_markov.csv")
    assert len(df) == len(fusion.MODES) * len(fusion.BETAS)  # markov has no grid
    assert run_cli(["fuse", *common, "--include-capped", "--with", "matrrec"]) == 1
    assert "not a count model" in capsys.readouterr().err
    assert run_cli(["fuse", *common]) == 1  # the smoke runs are capped: none chosen
    assert "no finished matrrec runs" in capsys.readouterr().err


def test_report_fuse_renders_the_record_again_without_data_or_checkpoints(
        trained: Path, tmp_path: Path, capsys) -> None:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(trained, results)
    common = ["--dataset", "cyc", "--results-dir", str(results)]
    capsys.readouterr()
    assert run_cli(["fuse", *common, "--include-capped", "--with", "markov", "--markdown"]) == 0
    fused = capsys.readouterr().out
    record = results / "fusions" / "cyc" / "matrrec_markov"
    assert sorted(p.name for p in record.iterdir()) == [
        fusion.CANDIDATES, fusion.RECORD, fusion.PER_USER]
    # the record is read back whole: the same tables, nothing scored (no weights, no data)
    for ckpt in (results / "runs").rglob("*.pt"):
        ckpt.unlink()
    assert run_cli(["report", "fuse", *common, "--with", "markov", "--markdown"]) == 0
    assert capsys.readouterr().out == fused
    assert run_cli(["report", "fuse", *common, "--with", "markov", "--markdown",
                    "--verdict"]) == 0
    verdict = capsys.readouterr().out
    assert verdict.lstrip().startswith("**Chosen on validation")
    assert fused.endswith(verdict)
    # publishing: the fusion waits for its runs, then goes with them; a clone renders it
    assert run_cli(["publish", "--results-dir", str(results), "--model", "sr"]) == 0
    assert "is not published; publish the runs first" in capsys.readouterr().out
    assert run_cli(["publish", "--results-dir", str(results), "--include-capped"]) == 0
    assert "1 fusion record(s)" in capsys.readouterr().out
    clone = tmp_path / "clone"
    shutil.copytree(results / "published", clone / "published")
    assert run_cli(["report", "fuse", "--dataset", "cyc", "--results-dir", str(clone),
                    "--with", "markov", "--markdown"]) == 0
    assert capsys.readouterr().out == fused
    assert run_cli(["report", "fuse", "--dataset", "cyc", "--results-dir", str(clone),
                    "--with", "sr"]) == 1
    err = capsys.readouterr().err
    assert "no fusion record" in err
    assert "run matrrec fuse" in err
    assert len(err.splitlines()) == 1


def test_a_second_fuse_replaces_the_record_whole(trained: Path, tmp_path: Path) -> None:
    f = _fuse(trained, count="markov")
    first = fusion.save(f, tmp_path)
    again = fusion.load(first)
    assert again.runs == f.runs
    assert again.seeds == f.seeds
    assert again.chosen == f.chosen
    pd.testing.assert_frame_equal(again.table, f.table)
    for key, series in f.per_user.items():
        assert np.array_equal(again.per_user[key].sort_index().to_numpy(),
                              series.sort_index().to_numpy())
    changed = fusion.Fusion(**{**f.__dict__, "count_test": 0.5})
    assert fusion.save(changed, tmp_path) == first
    assert fusion.load(first).count_test == 0.5
    assert not any((tmp_path / "fusions" / ".staging").iterdir())  # nothing left beside it
