"""The published evidence (results/published) and the documents generated from it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import SMALL
from helpers import run_cli as _run

from matrrec_cli.errors import MatrrecError
from matrrec_cli.experiments import documents as doc
from matrrec_cli.experiments import publish as pub

REPO = Path(__file__).resolve().parent.parent


def _common(tiny: Path, results: Path) -> list[str]:
    return ["--dataset", "cyc", "--device", "cpu", "--data-dir", str(tiny),
            "--results-dir", str(results)]


def _table2(results: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert _run(["report", "table2", "--results-dir", str(results), "--include-capped",
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def own_runs(tiny: Path, tmp_path_factory) -> Path:
    """A results directory with this machine's runs only: markov (counted) and two seeds of a
    small MaTrRec cut short by --epochs (smoke runs)."""
    results = tmp_path_factory.mktemp("results")
    assert _run(["train", "--model", "markov", *_common(tiny, results)]) == 0
    assert _run(["train", "--model", "matrrec", "--seeds", "2", "--epochs", "2",
                 *_common(tiny, results), *SMALL]) == 0
    return results


def test_publish_copies_whole_runs_and_reports_read_them_without_the_originals(
        own_runs: Path, tiny: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    before = _table2(results, capsys)
    # smoke runs are not evidence unless asked for
    out = pub.publish(results)
    assert sorted(o.run.parts[-2] for o in out if o.published) == ["markov"]
    assert all("--epochs" in o.why for o in out if o.run.parts[-2] == "matrrec")
    assert _run(["publish", "--results-dir", str(results), "--data-dir", str(tiny),
                 "--include-capped", "--checkpoints"]) == 0
    store = results / "published" / "runs" / "cyc"
    for own in (results / "runs" / "cyc").glob("*/*"):
        copy = store / own.parts[-2] / own.name
        assert (copy / "metrics.json").read_bytes() == (own / "metrics.json").read_bytes()
        assert (copy / "ranks.parquet").read_bytes() == (own / "ranks.parquet").read_bytes()
        # checkpoints with --checkpoints (the markov run went out before, without them)
        assert (copy / "best.pt").exists() == (own.parts[-2] == "matrrec")
        assert not (copy / "last.pt").exists()
        cfg, orig = (json.loads((p / "config.json").read_text()) for p in (copy, own))
        assert (cfg["data_dir"], cfg["results_dir"]) == ("data", "results")  # no machine paths
        assert cfg["config_hash"] == orig["config_hash"]
    assert not (results / "published" / "runs" / ".staging").exists()
    assert (results / "published" / "users" / "cyc.parquet").is_file()
    # published once: a run published twice, and another run of its configuration and seed,
    # are left out with the reason
    again = pub.publish(results, include_capped=True)
    assert {o.why for o in again} == {"already published"}
    # the reports count a published run once, and need nothing of this machine's runs
    assert _table2(results, capsys) == before
    shutil.rmtree(results / "runs")
    assert _table2(results, capsys) == before


def test_a_rerun_of_a_published_configuration_is_left_out(own_runs: Path, tiny: Path,
                                                           tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    pub.publish(results, models=["markov"])
    assert _run(["train", "--model", "markov", *_common(tiny, results)]) == 0  # a second run
    second = [o for o in pub.publish(results, models=["markov"]) if o.published is None]
    assert any("same configuration and seed is published" in o.why for o in second)


def test_experiment_commands_reuse_published_runs_instead_of_training(
        own_runs: Path, tiny: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    pub.publish(results, include_capped=True)
    shutil.rmtree(results / "runs")  # a fresh clone: the published evidence only
    capsys.readouterr()
    assert _run(["train", "--model", "matrrec", "--seeds", "2", "--epochs", "2",
                 *_common(tiny, results), *SMALL]) == 0
    err = capsys.readouterr().err
    assert err.count("reusing") == 2
    assert "published" in err
    assert not list((results / "runs").glob("cyc/*/*/config.json"))  # nothing trained


def test_breakdown_reads_published_user_features_without_the_data(
        own_runs: Path, tiny: Path, tmp_path: Path) -> None:
    from matrrec_cli.experiments import breakdown as bd

    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    assert pub.publish_users(results, "cyc", tiny) is not None
    with_data = bd.features("cyc", tiny, results)
    without = bd.features("cyc", tmp_path / "no-data", results)
    assert without.equals(with_data)
    with pytest.raises(MatrrecError):  # neither the data nor the published features
        bd.features("cyc", tmp_path / "no-data", tmp_path / "elsewhere")


def _document(tmp_path: Path, command: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(f"# Results\n\nintro\n\n<!-- generated by: {command} -->\nstale\n"
                    f"<!-- end generated -->\n\nafter\n")
    return path


def test_docs_render_then_check_and_name_the_first_differing_line(
        own_runs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    pub.publish(results, include_capped=True)
    shutil.rmtree(results / "runs")
    command = "matrrec report table2 --dataset cyc --include-capped --markdown"
    path = _document(tmp_path, command)
    monkeypatch.chdir(tmp_path)
    assert _run(["docs", "--check", "--results-dir", str(results), str(path)]) == 1
    assert "README.md:5: block" in capsys.readouterr().err
    assert _run(["docs", "--results-dir", str(results), str(path)]) == 0
    (kept,) = (results / "published" / "tables").rglob("table2_overall.csv")  # the block's CSV
    assert "cyc" in kept.read_text()
    text = path.read_text()
    assert text.startswith("# Results\n\nintro\n\n")
    assert text.endswith("\n\nafter\n")
    body = doc.blocks(path)[0].body
    capsys.readouterr()
    assert _run(["report", "table2", "--dataset", "cyc", "--include-capped", "--markdown",
                 "--results-dir", str(results)]) == 0
    assert body == capsys.readouterr().out.strip().splitlines()  # the command's own output
    assert _run(["docs", "--check", "--results-dir", str(results), str(path)]) == 0
    # one changed digit is found, with the block and the line named
    row = next(i for i, line in enumerate(body) if "ndcg@10" in line)
    path.write_text(text.replace(body[row], body[row].replace("0.", "9.", 1)))
    capsys.readouterr()
    assert _run(["docs", "--check", "--results-dir", str(results), str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[-1].startswith("matrrec: error: ")
    assert f"README.md:5: block '{command}'" in err[-1]
    assert f"line {row + 1}:" in err[-1]
    # the tables of a command no block names any more: reported by a whole check, removed
    # by a whole render, the named block's tables kept
    path.write_text(text)
    stale = results / "published" / "tables" / "report-table2---dataset-gone"
    stale.mkdir()
    (stale / "table2_overall.csv").write_text("dataset\ngone\n")
    assert _run(["docs", "--check", "--results-dir", str(results)]) == 1
    assert "report-table2---dataset-gone" in capsys.readouterr().err
    assert _run(["docs", "--results-dir", str(results)]) == 0
    assert not stale.exists()
    assert kept.exists()
    assert _run(["docs", "--check", "--results-dir", str(results)]) == 0


def test_docs_refuse_a_block_without_its_end(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("<!-- generated by: matrrec report table2 --markdown -->\nx\n")
    with pytest.raises(MatrrecError, match=r"README.md:1: block .* has no"):
        doc.blocks(path)
    path.write_text("<!-- generated by: report table2 -->\n<!-- end generated -->\n")
    with pytest.raises(MatrrecError, match="not '<!-- generated by: matrrec"):
        doc.blocks(path)


def test_the_repository_documents_are_what_the_published_records_give(monkeypatch) -> None:
    """The README's and docs' tables re-rendered from results/published, as CI checks them."""
    paths = doc.documents(REPO)
    assert any(doc.blocks(p) for p in paths), "no generated block in README.md or docs/"
    monkeypatch.chdir(REPO)
    problems = doc.process(paths, REPO / "results" / "published", check=True, root=REPO,
                           say=lambda _: None, every=True)
    assert not problems, "\n".join(problems)


def test_git_tracks_the_published_evidence_and_nothing_else_under_results() -> None:
    """What a user's commands write under results/ (runs, tune's study, tables, figures,
    fusions) never shows in `git status`; the published evidence does."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    own = ["results/runs/musical/sr/x/metrics.json", "results/tune.sqlite3", "results/grid.csv",
           "results/fig2_dropout_musical_matrrec.png", "results/fusions/musical/a/fusion.json",
           "results/mlruns/0/meta.yaml"]
    published = ["results/published/runs/musical/sr/x/metrics.json",
                 "results/published/table4_max_len.csv"]
    proc = subprocess.run([git, "check-ignore", "--no-index", *own, *published], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.stdout.split() == own


def test_a_figure_block_checks_its_data_and_render_draws_the_png(
        own_runs: Path, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    """A sweep re-rendered from published runs alone (--finished-only trains nothing): check
    compares the printed points; render writes them and draws the PNG at the named path. (An
    imported dataset's defaults live in its data directory, hence --data-dir here; a
    registered one's are in datasets.toml and need none.)"""
    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    pub.publish(results, include_capped=True)
    shutil.rmtree(results / "runs")
    command = ("matrrec sweep dropout 0.1,0.3 --dataset cyc --seeds 2 --epochs 2 --device cpu "
               f"--data-dir {tiny} {' '.join(SMALL)} --finished-only --markdown ; "
               "figure figs/fig2.png")
    path = _document(tmp_path, command)
    monkeypatch.chdir(tmp_path)
    assert _run(["docs", "--results-dir", str(results), str(path)]) == 0
    assert (tmp_path / "figs" / "fig2.png").read_bytes()[:4] == b"\x89PNG"
    body = doc.blocks(path)[0].body
    assert any(line.startswith("| cyc | 0.1 |") and line.endswith("| 2 |") for line in body), body
    assert "| cyc | 0.3 | - | - | - | 0 |" in body  # a point not run yet: shown, with 0 seeds
    assert not list((results / "published").glob("*.png"))  # nothing written into the store
    assert _run(["docs", "--check", "--results-dir", str(results), str(path)]) == 0
    (tmp_path / "figs" / "fig2.png").unlink()
    assert _run(["docs", "--check", "--results-dir", str(results), str(path)]) == 1


def test_a_published_run_without_checkpoints_says_so_when_asked_to_score(
        own_runs: Path, tmp_path: Path, capsys) -> None:
    from matrrec_cli.api import load_run

    results = tmp_path / "results"
    shutil.copytree(own_runs, results)
    pub.publish(results, models=["markov"])
    run = next((results / "published" / "runs" / "cyc" / "markov").iterdir())
    with pytest.raises(MatrrecError, match="published without its checkpoints"):
        load_run(run)
    capsys.readouterr()
    assert _run(["evaluate", str(run)]) == 1
    assert "published without its checkpoints" in capsys.readouterr().err
