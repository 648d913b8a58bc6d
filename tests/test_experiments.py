"""ablate, sweep, train --seeds, profile, significance and breakdown, end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL
from helpers import run_cli as _run
from scipy import stats

from matrrec_cli.errors import MatrrecError, UsageError
from matrrec_cli.experiments import ablation, breakdown, significance, synthetic
from matrrec_cli.experiments.runner import RunResult, RunSpec, Seeds, parse_seeds
from matrrec_cli.train.config import RunOptions


def _common(tiny: Path, results: Path) -> list[str]:
    return ["--dataset", "cyc", "--epochs", "2", "--device", "cpu", "--data-dir", str(tiny),
            "--results-dir", str(results)]


def test_parse_seeds() -> None:
    assert parse_seeds(None) == Seeds((2020,), "default")
    assert parse_seeds(None, seed=3) == Seeds((3,), "command line")
    assert parse_seeds("3") == Seeds((2020, 2021, 2022), "command line --seeds")
    assert parse_seeds("2", seed=7).values == (7, 8)
    assert parse_seeds("5,1").values == (5, 1)
    for bad in ("0", "a", "1,1"):
        with pytest.raises(UsageError):
            parse_seeds(bad)
    with pytest.raises(UsageError, match="--seed 2020"):  # a seed, not 2020 of them
        parse_seeds("2020")
    assert parse_seeds("2020,").values == (2020,)


def test_ablation_variants_follow_table3() -> None:
    rows = ablation.variants(remove=[], add=[], heads=[], layers=[], all_=True)
    assert [label for label, _ in rows] == [
        "L=1,H=1", "Add PE", "Remove FFN", "Remove RC", "Remove Dropout", "2heads(H=2)",
        "2layers(L=2)"]
    assert dict(rows)["Remove RC"] == ("use_residual=false",)
    with pytest.raises(UsageError):
        ablation.variants(remove=["attention"], add=[], heads=[], layers=[], all_=False)
    with pytest.raises(UsageError):
        ablation.variants(remove=[], add=[], heads=[], layers=[], all_=False)


def test_custom_variants_carry_any_settings_after_the_papers_rows() -> None:
    rows = ablation.variants(remove=["ffn"], add=[], heads=[], layers=[], all_=False,
                             custom=["loss=sampled, negatives=64", "dropout_prob=0.1"])
    assert rows[1:] == [("Remove FFN", ("use_ffn=false",)),
                        ("loss=sampled,negatives=64", ("loss=sampled", "negatives=64")),
                        ("dropout_prob=0.1", ("dropout_prob=0.1",))]
    assert ablation.variants(remove=[], add=[], heads=[], layers=[], all_=False,
                             custom=["loss=sampled"])[0] == (ablation.DEFAULT_LABEL, ())
    for bad in ("loss", "=sampled", ",", "loss=sampled,64"):
        with pytest.raises(UsageError, match="--variant"):
            ablation.variants(remove=[], add=[], heads=[], layers=[], all_=False, custom=[bad])


def _result(label: str, seed: int, r10: float, n10: float) -> RunResult:
    metrics = {"test": {"recall@10": r10, "ndcg@10": n10}, "epochs": 3, "wall_seconds": 1.0}
    return RunResult(RunSpec(RunOptions("d"), label=label), seed, Path("."), metrics, False)


def test_table3_marks_better_in_bold_and_more_than_10_percent_worse() -> None:
    df = ablation.table3([
        _result("L=1,H=1", 1, 0.10, 0.050), _result("L=1,H=1", 2, 0.12, 0.050),
        _result("Add PE", 1, 0.12, 0.0449), _result("Add PE", 2, 0.12, 0.0449),
        _result("Remove RC", 1, 0.0989, 0.0451)]).set_index("label")
    assert df.loc["L=1,H=1", "recall@10"] == 0.11
    assert df.loc["L=1,H=1", "recall@10_std"] == round(float(np.std([0.10, 0.12], ddof=1)), 4)
    assert df.loc["Add PE", "recall@10_better"]
    assert not df.loc["Add PE", "recall@10_worse10"]
    assert df.loc["Add PE", "ndcg@10_worse10"]  # 0.0449 < 0.9 * 0.05
    assert not df.loc["Remove RC", "ndcg@10_worse10"]  # 0.0451 is within 10 %
    assert df.loc["Remove RC", "recall@10_worse10"]  # 0.0989 < 0.099
    assert not df.loc["L=1,H=1", "recall@10_better"]


def test_ablate_trains_each_variant_once_and_reuses_runs(tiny: Path, tmp_path: Path,
                                                         capsys) -> None:
    args = ["ablate", "--remove", "ffn", "--seeds", "2", *_common(tiny, tmp_path), *SMALL]
    assert _run(args) == 0
    df = pd.read_csv(tmp_path / "table3_ablation.csv")
    assert list(df["label"]) == ["L=1,H=1", "Remove FFN"]
    assert list(df["n_seeds"]) == [2, 2]
    run_dirs = sorted((tmp_path / "runs" / "cyc" / "matrrec").iterdir())
    assert len(run_dirs) == 4
    use_ffn = sorted(json.loads((d / "config.json").read_text())["model_config"]["use_ffn"]
                     for d in run_dirs)
    assert use_ffn == [False, False, True, True]
    for d in run_dirs:  # who gave each value: the variant, the command line, the import
        cfg = json.loads((d / "config.json").read_text())
        src = cfg["sources"]
        assert src["model.use_ffn"] == ("default" if cfg["model_config"]["use_ffn"]
                                        else "ablate Remove FFN")
        assert (src["seed"], src["model.hidden_size"]) == ("command line --seeds",
                                                           "command line --set")
        assert src["max_len"] == str(tiny / "cyc" / "meta.json")
        assert src["model"].startswith("ablate")
    capsys.readouterr()
    assert _run(args) == 0  # everything finished: nothing is trained again
    assert len(list((tmp_path / "runs" / "cyc" / "matrrec").iterdir())) == 4
    assert capsys.readouterr().err.count("reusing") == 4
    assert pd.read_csv(tmp_path / "table3_ablation.csv").equals(df)
    # a third seed and a new variant, rendered from finished runs only: nothing trains
    capsys.readouterr()
    more = ["ablate", "--remove", "ffn", "--add", "pe", "--seeds", "3", "--finished-only",
            "--markdown", *_common(tiny, tmp_path), *SMALL]
    assert _run(more) == 0
    assert len(list((tmp_path / "runs" / "cyc" / "matrrec").iterdir())) == 4
    out = capsys.readouterr().out
    assert any(x.startswith("| Remove FFN |") and x.endswith("| 2 |") for x in out.splitlines())
    assert any(x.startswith("| Add PE | - |") and x.endswith("| 0 |") for x in out.splitlines())
    # the Welch test behind each row's `*`, as a note (none for a variant without runs)
    notes = [x for x in out.splitlines() if x.startswith("- ")]
    assert len(notes) == 1
    assert notes[0].startswith("- Remove FFN vs L=1,H=1 on cyc: recall@10 ")
    assert "(Welch p " in notes[0]
    assert list(pd.read_csv(tmp_path / "table3_ablation.csv")["n_seeds"]) == [2, 2]


def test_ablate_variant_trains_any_setting_beside_the_default(tiny: Path, tmp_path: Path
                                                              ) -> None:
    args = ["ablate", "--variant", "loss=sampled,negatives=4", "--seeds", "1",
            *_common(tiny, tmp_path), *SMALL]
    assert _run(args) == 0
    df = pd.read_csv(tmp_path / "table3_ablation.csv")
    assert list(df["label"]) == ["L=1,H=1", "loss=sampled,negatives=4"]
    cfgs = [json.loads((d / "config.json").read_text())
            for d in sorted((tmp_path / "runs" / "cyc" / "matrrec").iterdir())]
    by_loss = {c["loss"]: c for c in cfgs}
    assert sorted(by_loss) == ["full", "sampled"]
    assert by_loss["sampled"]["negatives"] == 4
    assert by_loss["sampled"]["sources"]["loss"] == "ablate loss=sampled,negatives=4"
    assert by_loss["full"]["sources"]["loss"] == "default"


def test_ablate_leaves_out_a_run_another_process_is_training(tiny: Path, tmp_path: Path,
                                                             capsys) -> None:
    from matrrec_cli.experiments.runner import resolve_spec
    from matrrec_cli.train import runs

    args = ["ablate", "--remove", "ffn", *_common(tiny, tmp_path), *SMALL]
    base = RunOptions("cyc", epochs=2, sets=tuple(SMALL[1::2]), device="cpu",
                      data_dir=str(tiny), results_dir=str(tmp_path))
    spec = ablation.specs(["cyc"], ablation.variants(remove=["ffn"], add=[], heads=[], layers=[],
                                                     all_=False), base)[1]
    cfg = resolve_spec(spec, seed=2020)
    busy = runs.new_run_dir(cfg)  # an unfinished run of Remove FFN, seed 2020 ...
    (busy / runs.CONFIG).write_text(json.dumps(cfg.to_dict()))
    with runs.training_lock(cfg):  # ... that another worker is training
        assert _run(args) == 0
    err = capsys.readouterr().err
    assert "being trained by another process" in err
    assert not (busy / runs.METRICS).exists()
    assert list(pd.read_csv(tmp_path / "table3_ablation.csv")["label"]) == ["L=1,H=1"]
    assert _run(args) == 0  # lock released: this time it is resumed and finished
    assert (busy / runs.METRICS).exists()
    assert len(list(busy.parent.glob(f"*{cfg.config_hash()}*"))) == 1  # no second run of it


def test_train_seeds_says_so_when_every_run_is_busy(tiny: Path, tmp_path: Path,
                                                    capsys) -> None:
    from matrrec_cli.experiments.runner import RunSpec, resolve_spec
    from matrrec_cli.train import runs

    spec = RunSpec(RunOptions("cyc", "gru4rec", epochs=2, device="cpu", data_dir=str(tiny),
                              results_dir=str(tmp_path)), label="gru4rec")
    cfg = resolve_spec(spec, seed=2020)
    with runs.training_lock(cfg):  # another worker is training seed 2020
        code = _run(["train", "--model", "gru4rec", "--seeds", "1", *_common(tiny, tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: all 1 run(s) are being trained by another process" in err
    assert "Traceback" not in err


def test_sweeps_write_csv_and_png_named_after_dataset_and_model(tiny: Path,
                                                                 tmp_path: Path) -> None:
    """Sweeps of two datasets and of another model leave every CSV and PNG (nothing is
    overwritten), and a rerun of one replaces only its own rows."""
    csv = tiny / "i.csv"
    assert _run(["import", "cyc2", "--from-file", str(csv), "--format", "table", "--kcore", "0",
                 "--max-len", "10", "--data-dir", str(tiny)]) == 0
    for ds, model in (("cyc", "gru4rec"), ("cyc2", "gru4rec"), ("cyc", "narm")):
        assert _run(["sweep", "dropout", "0.0,0.3", "--model", model, "--epochs", "1",
                     *_common(tiny, tmp_path)[2:], "--dataset", ds]) == 0
    for stem in ("dropout_cyc_gru4rec", "dropout_cyc2_gru4rec", "dropout_cyc_narm"):
        df = pd.read_csv(tmp_path / f"sweep_{stem}.csv")
        assert list(df["dropout"]) == [0.0, 0.3], stem
        png = tmp_path / f"fig2_{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dropouts = sorted(json.loads((d / "config.json").read_text())["dropout"]
                      for d in (tmp_path / "runs" / "cyc" / "gru4rec").iterdir())
    assert dropouts == [0.0, 0.3]
    out = tmp_path / "mine.csv"  # --output: this sweep's rows only, the PNG beside
    assert _run(["sweep", "dropout", "0.0", "--model", "gru4rec", "--epochs", "1",
                 *_common(tiny, tmp_path)[2:], "--dataset", "cyc", "--output", str(out)]) == 0
    assert list(pd.read_csv(out)["dropout"]) == [0.0]
    assert out.with_suffix(".png").exists()
    assert len(pd.read_csv(tmp_path / "sweep_dropout_cyc_gru4rec.csv")) == 2
    assert _run(["sweep", "dropout", "0.1", "--dropout", "0.2", "--dataset", "cyc"]) == 2
    assert _run(["sweep", "heads", "1,2", "--dataset", "cyc"]) == 2


def test_train_seeds_reports_mean_and_std(tiny: Path, tmp_path: Path, capsys) -> None:
    assert _run(["train", "--model", "gru4rec", "--seeds", "2", "--json",
                 *_common(tiny, tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [2020, 2021]
    per_run = [json.loads((Path(r) / "metrics.json").read_text())["test"]["ndcg@10"]
               for r in out["runs"]]
    assert out["test"]["ndcg@10"] == round(float(np.mean(per_run)), 4)
    assert out["test"]["ndcg@10_std"] == round(float(np.std(per_run, ddof=1)), 4)


def test_one_seed_has_no_spread_row(tiny: Path, tmp_path: Path, capsys) -> None:
    assert _run(["train", "--model", "gru4rec", "--seeds", "1", *_common(tiny, tmp_path)]) == 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert any("seed 2020" in line for line in lines)
    assert not any(line.strip("│ ").startswith(("std", "mean")) for line in lines)


@pytest.fixture(scope="module")
def two_models(tiny: Path, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for model in ("matrrec", "gru4rec"):
        assert _run(["train", "--model", model, "--seeds", "2", *_common(tiny, results),
                     *(SMALL if model == "matrrec" else [])]) == 0
    return results


def _user_ranks(results: Path, model: str) -> pd.DataFrame:
    frames = []
    for run in sorted((results / "runs" / "cyc" / model).iterdir()):
        r = pd.read_parquet(run / "ranks.parquet")
        seed = json.loads((run / "config.json").read_text())["seed"]
        frames.append(r[r["split"] == "test"].set_index("user")["rank"].rename(seed))
    return pd.concat(frames, axis=1)


def test_significance_equals_scipy_on_the_per_user_outcomes(two_models: Path, capsys) -> None:
    # the fixture's runs are 2-epoch smoke runs: left out unless asked for
    assert _run(["report", "significance", "--results-dir", str(two_models)]) == 1
    assert _run(["report", "significance", "--results-dir", str(two_models),
                 "--include-capped"]) == 0
    df = pd.read_csv(two_models / "significance.csv")
    ours, base = _user_ranks(two_models, "matrrec"), _user_ranks(two_models, "gru4rec")

    def ndcg(r: pd.DataFrame) -> pd.Series:  # closed form per user, averaged over seeds
        return (r.map(lambda x: 1 / np.log2(x + 1) if x <= 10 else 0.0)).mean(axis=1)

    row = df[(df["test"] == "t-test")].iloc[0]
    assert row["p"] == pytest.approx(stats.ttest_rel(ndcg(ours), ndcg(base)).pvalue, rel=1e-9)
    hit_o, hit_b = ours[2020] <= 10, base[2020] <= 10
    b, c = int((hit_o & ~hit_b).sum()), int((~hit_o & hit_b).sum())
    mc = df[(df["test"] == "mcnemar") & (df["metric"] == "recall@10")].iloc[0]
    assert mc["p"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
    assert list(df["p_bh"]) == pytest.approx(list(stats.false_discovery_control(df["p"])))
    assert (df["p_bh"] >= df["p"] - 1e-12).all()
    assert _run(["report", "table2", "--results-dir", str(two_models), "--include-capped"]) == 0
    assert "significant at p < 0.01" in capsys.readouterr().out


def test_table2_names_every_value_a_column_was_given(two_models: Path, capsys) -> None:
    """Under the table, each column's line names the settings that depart from the protocol,
    with their values, so a tagged recipe's column says what it is."""
    assert _run(["report", "table2", "--results-dir", str(two_models), "--include-capped"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    line = out[out.index("cyc/matrrec:"):out.index("cyc/matrrec:") + 400]
    given = dict(p.split("=") for p in SMALL[1::2])
    # sources are recorded in key order: the trainer's batch_size, then model.* (all of SMALL)
    expected = ", ".join(f"{k} {v}" for k, v in sorted(given.items()))
    assert line.split("set: ")[1].startswith(expected)
    gru = out[out.index("cyc/gru4rec:"):out.index("cyc/gru4rec:") + 200]
    assert "set:" not in gru.split("cyc/")[1]


def test_table2_marks_which_side_is_significantly_better() -> None:
    """The improvement columns' * when MaTrRec wins significantly, and per model cell ▲ / ▼
    when that model is significantly above / below MaTrRec (Table 2's simple block)."""
    from matrrec_cli.experiments import table2

    sig = pd.DataFrame([
        {"dataset": "d", "baseline": b, "metric": "ndcg@10", "test": "wilcoxon", "p": p,
         "p_bh": p, "significant": p < 0.01, "better": better}
        for b, p, better in (("sasrec", 0.001, "matrrec"), ("sr", 0.002, "baseline"),
                             ("mamba4rec", 0.2, "matrrec"), ("pop", 0.0, "tie"))])
    marks = significance.marks(sig)
    assert marks == {("d", "sasrec", "ndcg@10"): "matrrec", ("d", "sr", "ndcg@10"): "baseline",
                     ("d", "mamba4rec", "ndcg@10"): None, ("d", "pop", "ndcg@10"): None}
    long = pd.DataFrame([{"dataset": "d", "model": m, "metric": "ndcg@10", "mean": v,
                          "std": None} for m, v in (("matrrec", 0.05), ("sasrec", 0.04),
                                                    ("sr", 0.07), ("mamba4rec", 0.049),
                                                    ("pop", 0.05))])
    row = table2.table2(long, sig_marks=marks).set_index("metric").loc["ndcg@10"]
    assert row["improvement_vs_sasrec_significant"] is True
    assert row["improvement_vs_mamba4rec_significant"] is False
    assert (row["sasrec_vs_matrrec"], row["sr_vs_matrrec"]) == ("below", "above")
    assert pd.isna(row["mamba4rec_vs_matrrec"])  # a DataFrame keeps None as NaN
    assert pd.isna(row["pop_vs_matrrec"])
    assert "matrrec_vs_matrrec" not in row


def test_report_runs_reads_the_real_run_records(two_models: Path) -> None:
    assert _run(["report", "runs", "--results-dir", str(two_models), "--include-capped"]) == 0
    df = pd.read_csv(two_models / "runs.csv", dtype=str).set_index("model")
    assert set(df["chosen"]) == {"True"}
    assert list(df.index) == ["gru4rec", "matrrec"]  # Table 2's column order
    for model in df.index:
        runs = sorted((two_models / "runs" / "cyc" / model).iterdir())
        metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
        seeds = [json.loads((r / "config.json").read_text())["seed"] for r in runs]
        epochs = [m["epochs"] for _, m in sorted(zip(seeds, metrics, strict=True))]
        assert df.loc[model, "epochs"] == " ".join(map(str, epochs))
        threads = {json.loads((r / "env.json").read_text())["torch_threads"] for r in runs}
        assert df.loc[model, "threads"] == " ".join(map(str, threads))


def test_identical_outcomes_are_never_significant() -> None:
    nd = pd.DataFrame({"ours": [0.5, 0.0, 1.0], "base": [0.5, 0.0, 1.0]})
    rk = pd.DataFrame({"ours": [3, 40, 1], "base": [3, 40, 1]})
    rows = significance._tests(nd, rk)
    assert all(r["p"] == 1.0 for r in rows)


def test_breakdown_matches_a_brute_force_grouping(two_models: Path, tiny: Path) -> None:
    assert _run(["report", "breakdown", "--dataset", "cyc", "--results-dir",
                 str(two_models), "--include-capped"]) == 0
    df = pd.read_csv(two_models / "breakdown_cyc.csv")
    assert (two_models / "breakdown_cyc.png").read_bytes()[:4] == b"\x89PNG"
    inter = pd.read_parquet(tiny / "cyc" / "interactions.parquet")
    hist = inter.groupby("user").size() - 1  # items before the test item
    ranks = _user_ranks(two_models, "gru4rec")
    bucket, labels = breakdown.length_buckets(hist)  # quantile buckets (40 users: one)
    for i, label in enumerate(labels):
        users = bucket.index[bucket == i]
        row = df[(df["by"] == "history_length") & (df["bucket"] == label)
                 & (df["model"] == "gru4rec")]
        per_seed = (ranks.loc[users] <= 10).mean(axis=0)  # each seed's bucket mean
        assert row["recall@10"].iloc[0] == pytest.approx(per_seed.mean(), rel=1e-9)
        assert row["recall@10_std"].iloc[0] == pytest.approx(per_seed.std(ddof=1), rel=1e-9)
        assert row["n_users"].iloc[0] == len(users)
    assert df[(df["by"] == "history_length") & (df["model"] == "gru4rec")]["n_users"].sum() \
        == len(hist)
    pop = df[(df["by"] == "target_popularity") & (df["model"] == "gru4rec")]
    assert pop["n_users"].sum() == len(hist)
    feats = breakdown.user_features("cyc", tiny)
    # popularity counts exclude each user's last two items (valid and test are not training)
    last = inter.groupby("user").tail(2).index
    counts = inter.drop(last)["item"].value_counts()
    test_item = inter.groupby("user")["item"].last()
    assert (feats["target_popularity"] == test_item.map(counts).fillna(0).astype(int)).all()


def test_synthetic_sequences_have_the_requested_statistics() -> None:
    seqs = synthetic.synthetic_sequences(2000, 500, 2000 * 12, seed=1)
    lengths = seqs.lengths
    assert len(lengths) == 2000
    assert lengths.min() >= synthetic.MIN_LEN
    assert abs(lengths.mean() - 12) < 0.5
    assert seqs.items.min() >= 1
    assert seqs.items.max() <= 500
    assert seqs.n_items == 501
    assert synthetic.table1_counts("musical") == (1429, 900, 10261)  # padding removed


def test_synthetic_item_floor_keeps_every_item_through_the_5_core() -> None:
    seqs = synthetic.synthetic_sequences(300, 400, 300 * 8, seed=2, item_floor=5)
    counts = np.bincount(seqs.items, minlength=401)[1:]
    assert counts.min() >= 5  # a 5-core filter drops nothing: the catalog keeps its 400 items
    assert counts.sum() == seqs.lengths.sum()
    with pytest.raises(MatrrecError, match="interactions"):
        synthetic.synthetic_sequences(10, 400, 60, item_floor=5)


def test_profile_cell_budget_times_fewer_batches_and_still_scales(tiny: Path) -> None:
    from matrrec_cli.experiments import profile

    cell = {"dataset": "cyc", "model": "gru4rec", "device": "cpu", "data_dir": str(tiny),
            "sets": ["batch_size=8", "eval_batch_size=8", "hidden_size=8"], "preset": None,
            "max_len": 5, "synthetic": True, "max_batches": 3, "warmup": 1, "repeats": 1}
    free = profile.measure(cell)
    assert free["n_batches"] > 3
    assert (free["timed_batches"], free["timed_eval_batches"]) == (3, 3)
    tight = profile.measure({**cell, "budget_s": 1e-9})  # no time at all: one batch of each
    assert (tight["timed_batches"], tight["timed_eval_batches"]) == (1, 1)
    assert tight["n_batches"] == free["n_batches"]
    assert tight["train_s_per_epoch"] > 0
    whole = profile.measure({**cell, "max_batches": None, "budget_s": 1e-9})  # 'all' wins
    assert whole["timed_batches"] == whole["n_batches"]


def test_profile_cell_trains_the_objective_and_loss_it_names(tiny: Path, monkeypatch) -> None:
    """A cell with objective `all` and loss=sampled times exactly that: per-position targets
    and the sampled softmax (the cell's batches and loss are the trainer's)."""
    from matrrec_cli.experiments import profile
    from matrrec_cli.models.base import SequentialRecommender

    seen: dict[str, list] = {"targets": [], "sampled": []}
    make_batch, calculate_loss = profile.make_batch, SequentialRecommender.calculate_loss

    def spy_batch(*args, **kwargs):
        batch = make_batch(*args, **kwargs)
        seen["targets"].append(batch.targets is not None)
        return batch

    def spy_loss(self, batch):
        seen["sampled"].append(getattr(self, "sampled_softmax", None) is not None)
        return calculate_loss(self, batch)

    monkeypatch.setattr(profile, "make_batch", spy_batch)
    monkeypatch.setattr(SequentialRecommender, "calculate_loss", spy_loss)
    cell = {"dataset": "cyc", "model": "sasrec", "device": "cpu", "data_dir": str(tiny),
            "sets": ["batch_size=8", "hidden_size=8", "loss=sampled", "negatives=4"],
            "preset": None, "max_len": 5, "synthetic": True, "max_batches": 2, "warmup": 1,
            "repeats": 1, "objective": "all"}
    row = profile.measure(cell)
    assert row["objective"] == "all"
    assert seen["targets"]
    assert all(seen["targets"])
    assert seen["sampled"]
    assert all(seen["sampled"])


def test_profile_writes_tables_4_and_5(tiny: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert _run(["profile", "--dataset", "cyc", "--synthetic-like", "cyc", "--max-len", "5,10",
                 "--models", "gru4rec,markov", "--repeats", "1", "--warmup", "1",
                 "--max-batches", "1", "--device", "cpu", "--data-dir", str(tiny),
                 "--results-dir", str(tmp_path), "--markdown"]) == 0
    measured = capsys.readouterr().out
    # the same tables again from the rows, published or not, without timing anything
    assert _run(["report", "profile", "--dataset", "cyc", "--results-dir", str(tmp_path),
                 "--markdown"]) == 0
    assert capsys.readouterr().out == measured
    clone = tmp_path / "clone" / "published"
    clone.mkdir(parents=True)
    for name in ("table4_max_len.csv", "table5_complexity.csv"):
        (clone / name).write_bytes((tmp_path / name).read_bytes())
    assert _run(["report", "profile", "--results-dir", str(clone.parent), "--markdown"]) == 0
    assert capsys.readouterr().out == measured
    assert _run(["report", "profile", "--dataset", "musical", "--results-dir",
                 str(clone.parent)]) == 1
    assert "no profile rows of musical" in capsys.readouterr().err
    t4 = pd.read_csv(tmp_path / "table4_max_len.csv")
    t5 = pd.read_csv(tmp_path / "table5_complexity.csv")
    assert list(t4["max_len"]) == [5, 10, 5, 10]
    assert set(t4["model"]) == {"matrrec"}
    assert list(t5["model"]) == ["gru4rec", "markov"] * 2
    assert list(t5["max_len"]) == [10] * 4  # the imported dataset's default L
    for df in (t4, t5):
        assert (df["memory_gb"] > 0.05).all()
        assert (df["train_s_per_epoch"] > 0).all()
        assert (df["inference_s"] > 0).all()
        assert set(df["memory_kind"]) == {"cpu peak RSS (process)"}
    assert _run(["profile", "--dataset", "cyc", "--models", "nosuch"]) == 2


def test_profile_times_a_sample_of_batches_by_default_and_says_so(tiny: Path, tmp_path: Path,
                                                                   capsys) -> None:
    """A cell of any size finishes: 10 timed batches scaled to the epoch unless --max-batches
    all; the CSV and the output say how many were timed."""
    common = ["profile", "--dataset", "cyc", "--models", "gru4rec", "--repeats", "1",
              "--warmup", "0", "--device", "cpu", "--set", "batch_size=8", "--data-dir",
              str(tiny), "--results-dir", str(tmp_path)]
    assert _run(common) == 0
    row = pd.read_csv(tmp_path / "table5_complexity.csv").iloc[0]
    assert row["n_batches"] > 10
    assert row["timed_batches"] == 10
    assert "scaled from the timed batches" in capsys.readouterr().err
    assert _run([*common, "--max-batches", "all"]) == 0
    row = pd.read_csv(tmp_path / "table5_complexity.csv").iloc[0]
    assert row["timed_batches"] == row["n_batches"]
    for bad in ("0", "x"):
        assert _run([*common, "--max-batches", bad]) == 2
        assert "--max-batches must be" in capsys.readouterr().err


def test_a_figures_setting_note_spells_values_as_set_takes_them(tmp_path: Path) -> None:
    """The note under a figure names what someone chose apart from the swept value, as
    `--set` takes it (true, not Python's True), speed options apart."""
    from matrrec_cli.experiments import sweep

    (tmp_path / "config.json").write_text(json.dumps({
        "objective": "prefix", "preset": "paper", "dropout": 0.2, "lr": 0.003,
        "model_config": {"skip_padding": True},
        "sources": {"dropout": "sweep dropout", "lr": "command line --set",
                    "model.skip_padding": "command line --set", "seed": "command line --seeds"}}))
    spec = RunSpec(RunOptions(model="matrrec", dataset="d"), "0.2")
    result = RunResult(spec, 2020, tmp_path, {}, False)
    assert sweep.setting_note("dropout", [result]) == (
        "prefix objective, paper preset; set lr=0.003; speed options skip_padding=true")
