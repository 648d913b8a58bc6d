"""`--config run.toml`: the same typed schema as `--set`, flags over the file, every value's
source recorded; the run files in configs/ load, and the faithful ones are the faithful run."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrrec_cli.commands.tables import run_options
from matrrec_cli.errors import UsageError
from matrrec_cli.train.config import RunOptions, resolve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _resolve(path: Path | None, dataset: str | None = "musical", **flags):
    opts = run_options(dataset, config=path, **flags)
    return resolve(opts, prepared=False)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_every_shipped_run_file_resolves(name: str) -> None:
    cfg = _resolve(CONFIGS / name)
    assert cfg.dataset == "musical"
    assert any(src.startswith("config file") for src in cfg.sources.values())


@pytest.mark.parametrize("name", ["paper.toml", "table2-musical.toml", "table3-musical.toml"])
def test_the_faithful_run_files_name_the_faithful_configuration(name: str) -> None:
    faithful = resolve(RunOptions("musical"), prepared=False)
    assert _resolve(CONFIGS / name).config_hash() == faithful.config_hash()


@pytest.mark.parametrize(("name", "dataset", "objective", "sets"), [
    ("refit-musical.toml", "musical", None, ("tag=refit",)),
    ("refit-ml-100k.toml", "ml-100k", "all", ("batch_size=256", "stopping_step=30",
                                            "tag=refit-b256-p30")),
])
def test_the_refit_run_files_are_the_refit_command(name: str, dataset: str,
                                                   objective: str | None,
                                                   sets: tuple[str, ...]) -> None:
    """Each configs/refit-<dataset>.toml and its `--set refit=true --set skip_padding=true ...`
    command are one configuration (its finished runs are the same cell)."""
    by_file = _resolve(CONFIGS / name, dataset=None)
    by_flags = resolve(RunOptions(dataset, objective=objective,
                                  sets=("refit=true", "skip_padding=true", *sets)),
                       prepared=False)
    assert (by_file.dataset, by_file.refit) == (dataset, True)
    assert by_file.tag == sets[-1].partition("=")[2]
    assert by_file.config_hash() == by_flags.config_hash()


def test_flags_override_the_file_and_each_value_names_its_source(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text('dataset = "ml-100k"\nmodel = "sasrec"\n[trainer]\nepochs = 7\nlr = 0.002\n'
                   'seed = 11\n[model_config]\nhidden_size = 32\nn_heads = 2\n')
    cfg = _resolve(run, dataset=None, epochs=9, sets=["n_heads=4"])
    src = cfg.sources
    file = f"config file {run}"
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.lr, cfg.seed) == ("ml-100k", "sasrec", 9,
                                                                     0.002, 11)
    assert (cfg.model_config["hidden_size"], cfg.model_config["n_heads"]) == (32, 4)
    assert (src["dataset"], src["model"], src["lr"], src["seed"]) == (file,) * 4
    assert src["model.hidden_size"] == file
    assert (src["epochs"], src["model.n_heads"]) == ("command line", "command line --set")
    # --dataset on the command line wins over the file's, and says so
    assert _resolve(run, dataset="musical").sources["dataset"] == "command line"


@pytest.mark.parametrize(("text", "message"), [
    ('[trainer]\nlr = "fast"\n', r"run\.toml lr=fast: expected a float"),
    ("[trainer]\nepochs = 2.5\n", r"run\.toml: \[trainer\] epochs = 2\.5: expected an int"),
    ("[trainer]\nhidden_size = 8\n", r"\[trainer\] hidden_size: not a trainer setting"),
    ("[model_config]\nlr = 0.1\n", r"lr is a trainer setting; put it under \[trainer\]"),
    ("[model_config]\nwidth = 8\n", r"run\.toml width: unknown key"),
    ("[model_config]\nhidden_size = [1, 2]\n", r"hidden_size = \[1, 2\]: expected one value"),
    ("[optimiser]\nlr = 1\n", r"unknown key or section 'optimiser'"),
    ("epochs = 3\n", r"unknown key or section 'epochs'"),
    ("[trainer\n", r"not a readable TOML file"),
])
def test_a_bad_run_file_is_one_line_naming_the_key_and_the_file(tmp_path: Path, text: str,
                                                                 message: str) -> None:
    run = tmp_path / "run.toml"
    run.write_text(text)
    with pytest.raises(UsageError, match=message):
        _resolve(run)


def test_a_missing_run_file_is_named(tmp_path: Path, capsys) -> None:
    from matrrec_cli.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep", "dropout", "0.1", "--config", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"--config {tmp_path / 'nope.toml'}: no such file" in err
    assert "Traceback" not in err
