"""The paper's published numbers and where the reports print them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from matrrec_cli.experiments import ablation, paper
from matrrec_cli.experiments import table2 as report
from matrrec_cli.experiments.runner import RunResult, RunSpec
from matrrec_cli.train.config import RunOptions

DATASETS = ("ml-1m", "musical", "health", "electronics", "office")


def test_table2_has_every_cell_and_matches_the_data_readme() -> None:
    for ds, model, metric in itertools.product(DATASETS, report.MODEL_ORDER, report.METRICS):
        assert paper.table2_value(ds, model, metric) is not None, (ds, model, metric)
    # an independent transcription: ../shared/data/README.md quotes the Musical row
    quoted = {"matrrec": (0.0700, 0.1085, 0.1554, 0.0560),
              "sasrec": (0.0700, 0.1029, 0.1456, 0.0516),
              "mamba4rec": (0.0525, 0.084, 0.1204, 0.0439)}
    for model, values in quoted.items():
        got = tuple(paper.table2_value("musical", model, m) for m in report.METRICS)
        assert got == values, model
    assert paper.table2_value("ml-100k", "matrrec", "ndcg@10") is None


@pytest.mark.parametrize(("ds", "metric", "vs_sasrec", "vs_mamba4rec"), [
    ("ml-1m", "ndcg@10", 16.82, 2.01), ("musical", "recall@5", 0.00, 33.33),
    ("health", "recall@10", 10.15, 19.71), ("office", "recall@20", 5.90, 18.55),
])
def test_table2_values_reproduce_the_papers_own_improvement_columns(
        ds: str, metric: str, vs_sasrec: float, vs_mamba4rec: float) -> None:
    ours = paper.table2_value(ds, "matrrec", metric)
    for base, printed in (("sasrec", vs_sasrec), ("mamba4rec", vs_mamba4rec)):
        b = paper.table2_value(ds, base, metric)
        assert abs(100 * (ours - b) / b - printed) < 0.01, (ds, metric, base)


def test_table3_rows_use_the_ablation_labels() -> None:
    labels = [label for label, _ in ablation.variants(remove=[], add=[], heads=[], layers=[],
                                                       all_=True)]
    for ds, label in itertools.product(DATASETS, labels):
        assert paper.table3_value(ds, label, "ndcg@10") is not None, (ds, label)
    assert paper.table3_value("musical", "Remove RC", "recall@10") == 0.0763
    # the default row is Table 2's MaTrRec
    assert paper.table3_value("office", "L=1,H=1", "ndcg@10") == paper.table2_value(
        "office", "matrrec", "ndcg@10")


def test_outside_two_std() -> None:
    assert paper.outside(0.050, 0.002, 0.0560) is True  # 0.006 > 0.004
    assert paper.outside(0.053, 0.002, 0.0560) is False  # 0.003 <= 0.004
    assert paper.outside(0.050, None, 0.0560) is None  # one seed: no claim
    assert paper.outside(0.050, 0.002, None) is None  # no paper value


def _fake_run(root: Path, model: str, seed: int, ndcg: float, tag: str = "") -> None:
    run = root / "runs" / "musical" / model / f"20260101-00000{seed}-abc{tag}"
    run.mkdir(parents=True)
    cfg = {"dataset": "musical", "model": model, "seed": seed, "preset": "paper",
           "objective": "prefix", "max_len": 50, "epochs": 300, "sources": {}, "tag": tag}
    test = dict.fromkeys(report.METRICS, ndcg)
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.json").write_text(json.dumps({"test": test, "valid": test}))


def test_report_table2_puts_the_paper_beside_ours(tmp_path: Path) -> None:
    for seed, v in ((1, 0.050), (2, 0.052)):  # mean 0.051, std 0.0014: paper 0.0560 is outside
        _fake_run(tmp_path, "matrrec", seed, v)
    for seed, v in ((1, 0.051), (2, 0.053)):  # mean 0.052, paper SASRec NDCG 0.0516 inside
        _fake_run(tmp_path, "sasrec", seed, v)
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "matrrec_paper"] == 0.0560
    assert wide.loc["ndcg@10", "matrrec_outside_2std"]
    assert not wide.loc["ndcg@10", "sasrec_outside_2std"]
    assert wide.loc["ndcg@10", "improvement_vs_sasrec_pct_paper"] == 8.53  # the paper's column
    gain = round(100 * (0.051 - 0.052) / 0.052, 2)  # ours, from the two means
    assert wide.loc["ndcg@10", "improvement_vs_sasrec_pct"] == gain


def test_table3_carries_the_paper_value() -> None:
    def res(label: str) -> RunResult:
        metrics = {"test": {"recall@10": 0.1, "ndcg@10": 0.05}, "epochs": 3, "wall_seconds": 1.0}
        return RunResult(RunSpec(RunOptions("musical"), label=label), 1, Path("."), metrics, False)

    df = ablation.table3([res("L=1,H=1"), res("Remove RC")]).set_index("label")
    assert df.loc["Remove RC", "ndcg@10_paper"] == 0.0419
    assert df.loc["L=1,H=1", "recall@10_paper"] == 0.1085


def test_table3_tests_each_variant_against_the_default_over_seeds() -> None:
    from scipy import stats

    def res(label: str, seed: int, ndcg: float) -> RunResult:
        metrics = {"test": {"recall@10": 0.1, "ndcg@10": ndcg}, "epochs": 3, "wall_seconds": 1.0}
        return RunResult(RunSpec(RunOptions("musical"), label=label), seed, Path("."), metrics,
                         False)

    default, pe, ffn = [0.055, 0.056, 0.058], [0.049, 0.050, 0.052], [0.054, 0.057, 0.059]
    results = [res(label, seed, v) for label, values in
               (("L=1,H=1", default), ("Add PE", pe), ("Remove FFN", ffn))
               for seed, v in enumerate(values)]
    df = ablation.table3(results).set_index("label")
    expected = stats.ttest_ind(pe, default, equal_var=False).pvalue
    assert df.loc["Add PE", "ndcg@10_p"] == pytest.approx(expected)
    assert df.loc["Add PE", "ndcg@10_p"] < ablation.ALPHA < df.loc["Remove FFN", "ndcg@10_p"]
    assert pd.isna(df.loc["Add PE", "recall@10_p"])  # no spread on either side: undefined
    assert pd.isna(df.loc["L=1,H=1", "ndcg@10_p"])


def test_a_tagged_recipe_is_its_own_column(tmp_path: Path) -> None:
    _fake_run(tmp_path, "matrrec", 1, 0.050)
    _fake_run(tmp_path, "matrrec", 1, 0.070, tag="tuned")
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "matrrec"] == 0.050
    assert wide.loc["ndcg@10", "matrrec (tuned)"] == 0.070


def test_speed_options_do_not_demote_a_configuration(tmp_path: Path) -> None:
    """Table 2 prefers the preset's own model over ablations; a speed `--set` is not one."""
    _fake_run(tmp_path, "matrrec", 1, 0.050)  # plain, one seed, older
    for seed in (2, 3):
        _fake_run(tmp_path, "matrrec", seed, 0.060)
    for seed in (2, 3):  # mark the two-seed configuration as run with a speed option
        run = tmp_path / "runs" / "musical" / "matrrec" / f"20260101-00000{seed}-abc"
        cfg = json.loads((run / "config.json").read_text())
        cfg["sources"] = {"model.skip_padding": "command line --set"}
        cfg["model_config"] = {"skip_padding": True}
        (run / "config.json").write_text(json.dumps(cfg))
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "matrrec"] == 0.060  # more seeds wins: both count as plain


@pytest.mark.parametrize(("key", "value"), [("bucket_by_length", True), ("lr", 0.01)])
def test_a_trainer_set_demotes_a_configuration(tmp_path: Path, key: str, value) -> None:
    """bucket_by_length changes which samples share a batch, lr the optimiser: not the paper's."""
    _fake_run(tmp_path, "matrrec", 1, 0.050)  # plain, one seed
    for seed in (2, 3):
        _fake_run(tmp_path, "matrrec", seed, 0.060)
        run = tmp_path / "runs" / "musical" / "matrrec" / f"20260101-00000{seed}-abc"
        cfg = json.loads((run / "config.json").read_text())
        cfg["sources"] = {key: "command line --set"}
        cfg[key] = value
        (run / "config.json").write_text(json.dumps(cfg))
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "matrrec"] == 0.050  # the plain run wins despite fewer seeds


def test_fewer_departures_from_the_protocol_win(tmp_path: Path) -> None:
    """With only `all` runs, the one at the dataset's max_len beats a newer one at --max-len 200."""
    for seed, ndcg, max_len in ((1, 0.050, 50), (2, 0.060, 200)):  # Musical's own L is 50
        _fake_run(tmp_path, "matrrec", seed, ndcg)
        run = tmp_path / "runs" / "musical" / "matrrec" / f"20260101-00000{seed}-abc"
        cfg = json.loads((run / "config.json").read_text())
        cfg.update(objective="all", seed=1, max_len=max_len, sources={"max_len": "command line"})
        (run / "config.json").write_text(json.dumps(cfg))
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "matrrec"] == 0.050


@pytest.mark.parametrize(("sources", "values", "departs"), [
    ({"model.use_position_embedding": "ablate Add PE"},
     {"model_config": {"use_position_embedding": True}}, ["use_position_embedding true"]),
    ({"model.hidden_size": "config file run.toml"}, {"model_config": {"hidden_size": 128}},
     ["hidden_size 128"]),
    ({"lr": "tune trial 3: lr=0.003"}, {"lr": 0.003}, ["lr 0.003"]),
    ({"dropout": "sweep dropout", "model.dropout_prob": "sweep dropout"}, {"dropout": 0.1},
     ["dropout 0.1"]),
    ({"dropout": "sweep dropout", "model.dropout_prob": "sweep dropout"}, {"dropout": 0.4}, []),
    ({"max_len": "sweep max_len"}, {"max_len": 70}, ["max_len 70"]),
    ({"model.dropout_prob": "datasets.toml", "model.hidden_size": "preset paper",
      "seed": "command line --seeds", "epochs": "command line", "tag": "command line --set",
      "model.skip_padding": "command line --set", "data_dir": "$MATRREC_DATA_DIR"}, {}, []),
    # a model dropout set apart from the dropout option is the model's own departure
    ({"dropout": "datasets.toml", "model.attn_dropout_prob": "command line --set"},
     {"model_config": {"attn_dropout_prob": 0.1}}, ["attn_dropout_prob 0.1"]),
    ({"preset": "command line"}, {"preset": "recbole"}, ["preset recbole"]),
])
def test_a_departure_is_a_value_someone_chose(sources: dict, values: dict, departs: list) -> None:
    """Values chosen by an experiment (ablate, sweep, tune) or a run file depart from the
    protocol like a --set does; derived ones (defaults, datasets.toml, the preset), speed
    options and neutral knobs do not; a dropout or max_len at the dataset's own value does not.
    Each departure names its value, as Table 2 prints it under the table."""
    cfg = {"dataset": "musical", "model": "matrrec", "objective": "prefix", "dropout": 0.4,
           "max_len": 50, "sources": sources, **values}
    assert report.departures(cfg) == departs


def test_report_runs_lists_cost_and_provenance_per_cell(tmp_path: Path) -> None:
    for seed, wall, epochs, threads in ((2, 90.0, 30, 1), (1, 40.0, 10, None)):
        _fake_run(tmp_path, "sasrec", seed, 0.05 + seed / 100)
        run = tmp_path / "runs" / "musical" / "sasrec" / f"20260101-00000{seed}-abc"
        metrics = json.loads((run / "metrics.json").read_text())
        metrics.update(wall_seconds=wall, epochs=epochs, best_epoch=epochs - 11)
        (run / "metrics.json").write_text(json.dumps(metrics))
        env = {"device": "cpu", "git_revision": "abc1234"}
        if threads is not None:  # older runs did not record it
            env["torch_threads"] = threads
        (run / "env.json").write_text(json.dumps(env))
        (run / "history.jsonl").write_text("".join(  # one slow epoch per run: shared CPU
            json.dumps({"epoch": e + 1, "seconds": 50.0 if e == 0 else 2.0 + seed}) + "\n"
            for e in range(epochs)))
    row = report.runs(tmp_path).iloc[0]
    assert (row["seeds"], row["epochs"], row["best_epoch"]) == ("1 2", "10 30", "-1 19")
    assert row["wall_s_mean"] == 65.0
    assert row["epoch_s_median"] == 4.0  # 9 epochs of 3 s, 29 of 4 s, two slow ones
    assert (row["threads"], row["git"]) == ("? 1", "abc1234")
    assert row["test_ndcg@10"] == 0.065


def _smoke(root: Path, model: str, seed: int, ndcg: float, name: str, epochs: int = 2,
           stopped: bool = False, tag: str = "") -> None:
    """A run made with `--epochs N`: capped unless it stopped early."""
    run = root / "runs" / "musical" / model / name
    run.mkdir(parents=True)
    cfg = {"dataset": "musical", "model": model, "seed": seed, "preset": "paper",
           "objective": "prefix", "max_len": 50, "epochs": epochs,
           "sources": {"epochs": "command line"}, "tag": tag}
    test = dict.fromkeys(report.METRICS, ndcg)
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.json").write_text(json.dumps({"test": test, "valid": test, "epochs": epochs,
                                                  "stopped_early": stopped}))


def test_a_capped_run_made_after_five_seeds_changes_no_cell(tmp_path: Path) -> None:
    for seed in range(1, 6):
        _fake_run(tmp_path, "sasrec", seed, 0.05)
    before = report.table2(report.collect(tmp_path))
    _smoke(tmp_path, "sasrec", 1, 0.01, "20991231-000000-smoke")  # newest, one epoch
    _smoke(tmp_path, "matrrec", 1, 0.02, "20991231-000001-smoke")  # the only matrrec run
    after = report.table2(report.collect(tmp_path))
    pd.testing.assert_frame_equal(before, after)
    runs = report.runs(tmp_path)
    smoke = runs[runs["run_dirs"].str.contains("smoke")]
    assert len(smoke) == 2
    # named from the results directory, so the CSV is the same wherever the directory lies
    assert set(smoke["run_dirs"]) == {"runs/musical/sasrec/20991231-000000-smoke",
                                      "runs/musical/matrrec/20991231-000001-smoke"}
    assert not smoke["chosen"].any()
    assert smoke["why"].str.contains("capped by --epochs 2").all()
    # asked for: by flag, or by the run's tag
    assert "matrrec" in report.collect(
        tmp_path, selection=report.Selection(include_capped=True))["model"].tolist()
    _smoke(tmp_path, "matrrec", 1, 0.03, "20991231-000002-tagged", tag="smoke")
    named = report.collect(tmp_path, selection=report.Selection(tags=("smoke",)))
    assert set(named["model"]) == {"sasrec", "matrrec (smoke)"}
    # a capped run that stopped early did end by its rule
    _smoke(tmp_path, "gru4rec", 1, 0.04, "20991231-000003-early", epochs=50, stopped=True)
    assert "gru4rec" in report.collect(tmp_path)["model"].tolist()


def test_a_later_equal_configuration_does_not_move_a_cell(tmp_path: Path) -> None:
    """Two configurations with one departure each: the one made first keeps the cell, and
    report runs says why the other was not chosen."""
    for name, lr, ndcg in (("20260101-000001-a", "0.002", 0.05), ("20260102-000001-b", "0.003",
                                                                    0.07)):
        run = tmp_path / "runs" / "musical" / "sasrec" / name
        run.mkdir(parents=True)
        cfg = {"dataset": "musical", "model": "sasrec", "seed": 1, "preset": "paper",
               "objective": "prefix", "max_len": 50, "epochs": 300, "lr": float(lr),
               "sources": {"lr": "command line --set"}}
        test = dict.fromkeys(report.METRICS, ndcg)
        (run / "config.json").write_text(json.dumps(cfg))
        (run / "metrics.json").write_text(json.dumps({"test": test, "valid": test}))
    wide = report.table2(report.collect(tmp_path)).set_index("metric")
    assert wide.loc["ndcg@10", "sasrec"] == 0.05
    rows = report.runs(tmp_path).set_index("chosen")
    assert "made first" in rows.loc[False, "why"]


def _grid_run(root: Path, name: str, window: int, valid: float, test: float, *,
              given: dict[str, str] | None = None, tag: str = "") -> None:
    run = root / "runs" / "musical" / "sr" / name
    run.mkdir(parents=True)
    sources = {"model.window": "default" if window == 10 else "command line", **(given or {})}
    cfg = {"dataset": "musical", "model": "sr", "seed": 2020, "preset": "paper",
           "objective": "prefix", "max_len": 50, "epochs": 300, "sources": sources, "tag": tag,
           "mask_history": "mask_history" in sources, "model_config": {"window": window}}
    full = {"valid_full": dict.fromkeys(report.METRICS, valid),
            "test_full": dict.fromkeys(report.METRICS, test)}
    rounded = {k.removesuffix("_full"): {m: round(v, 4) for m, v in d.items()}
               for k, d in full.items()}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.json").write_text(json.dumps({**rounded, **full, "stop_reason": "counted"}))


def test_report_grid_marks_the_default_and_picks_on_unrounded_validation(tmp_path: Path) -> None:
    _grid_run(tmp_path, "20260101-000001-a", 10, 0.0500, 0.0700)  # the default
    _grid_run(tmp_path, "20260101-000002-b", 2, 0.05871, 0.0650)  # ties window 1 at 4 digits
    _grid_run(tmp_path, "20260101-000003-c", 1, 0.05869, 0.0600)  # ... and loses unrounded
    # not grid points: another departure beside the grid's key, a tagged recipe
    _grid_run(tmp_path, "20260101-000004-d", 3, 0.0900, 0.0900, given={"mask_history": "--set"})
    _grid_run(tmp_path, "20260101-000005-e", 5, 0.0900, 0.0900, tag="x")
    df = report.grids(tmp_path, ["musical"])
    assert df["setting"].tolist() == ["window 1", "window 2", "window 10"]  # the grid's order
    assert df.set_index("setting")["default"].to_dict() == {
        "window 1": False, "window 2": False, "window 10": True}
    assert df.loc[df["picked"], "setting"].tolist() == ["window 2"]
    assert df.loc[df["picked"], "test_ndcg@10"].tolist() == [0.065]
    # an all-equal grid keeps the default: a tie never moves the choice off the protocol
    tie = tmp_path / "tie"
    for name, window in (("20260101-000001-a", 10), ("20260101-000002-b", 1)):
        _grid_run(tie, name, window, 0.05, 0.05)
    assert report.grids(tie)["picked"].tolist() == [False, True]  # window 1 row, window 10 row


def test_a_set_of_the_value_the_model_has_anyway_departs_from_nothing(tmp_path: Path) -> None:
    """tune's faithful trial passes the default explicitly (--set window=10): the run is the
    default configuration, so it is Table 2's cell and the grid's default, whatever was made
    first."""
    _grid_run(tmp_path, "20260101-000001-a", 3, 0.05, 0.05)
    _grid_run(tmp_path, "20260101-000002-b", 10, 0.04, 0.04,
              given={"model.window": "command line --set"})
    (chosen,) = [c for c in report.candidates(tmp_path, ["musical"]) if c.chosen]
    assert chosen.departures == []
    assert chosen.members[0][0].name == "20260101-000002-b"
    assert report.grids(tmp_path).set_index("setting")["default"].to_dict() == {
        "window 3": False, "window 10": True}


def test_a_family_does_not_depart_by_the_setting_it_varies() -> None:
    """The claims' dropout family ignores the dropout it varies (top-level and model keys),
    but still names what else departs, in the same "key value" words as Table 2."""
    cfg = {"dataset": "musical", "model": "matrrec", "objective": "all", "dropout": 0.1,
           "max_len": 50, "model_config": {"dropout_prob": 0.1, "n_heads": 2},
           "sources": {"dropout": "sweep dropout", "model.dropout_prob": "sweep dropout",
                       "model.n_heads": "command line --set"}}
    assert report.departures(cfg) == ["n_heads 2", "dropout 0.1", "objective all"]
    assert report.departures(cfg, ("dropout", "dropout_prob")) == ["n_heads 2", "objective all"]
