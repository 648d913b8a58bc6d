"""What a new user meets first: checks before work starts, catalogues, messages that name real
commands, progress, Ctrl-C and --resume, --version, choices in help, --json everywhere."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from helpers import import_synthetic
from test_train_cli import SMALL, _train

from matrrec_cli.cli import app, main, resume_hint
from matrrec_cli.train.progress import Reporter

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return import_synthetic(tmp_path_factory.mktemp("data"))


# --- checked before anything is printed or written -------------------------------------------
@pytest.mark.parametrize(("args", "code", "says"), [
    (["--dataset", "office"], 1, "run `matrrec download office"),
    (["--dataset", "nosuch"], 1, "see `matrrec datasets`"),
    (["--dataset", "../evil"], 2, "use letters, digits"),
    (["--dataset", "a" * 300], 2, "at most 64"),
    (["--dataset", "cyc", "--device", "cuda"], 2, "torch sees no CUDA GPU"),
    (["--dataset", "cyc", "--device", "gpu"], 2, "--device must be"),
    (["--dataset", "cyc", "--objective", "every"], 2, "every"),
])
def test_bad_train_options_fail_before_the_configuration_table(
        tiny: Path, tmp_path: Path, capsys, args: list[str], code: int, says: str) -> None:
    if "--device" in args and "cuda" in args:
        pytest.importorskip("torch")
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    rc, _, err = _run(["train", *args, "--data-dir", str(tiny), "--results-dir",
                         str(tmp_path)], capsys)
    assert rc == code
    assert says in err
    assert "config " not in err  # the configuration table was never printed
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


def test_an_imported_dataset_names_import_not_download(tiny: Path, capsys) -> None:
    (tiny / "cyc" / "interactions.parquet").rename(tiny / "cyc" / "moved.parquet")
    try:
        rc, _, err = _run(["train", "--dataset", "cyc", "--data-dir", str(tiny)], capsys)
    finally:
        (tiny / "cyc" / "moved.parquet").rename(tiny / "cyc" / "interactions.parquet")
    assert rc == 1
    assert f"run `matrrec import cyc --from-file {tiny / 'i.csv'} --format table" in err


def test_a_run_that_never_started_leaves_no_run_directory(tiny: Path, tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    from matrrec_cli.train import pipeline

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "fit", boom)
    rc, _, err = _run(["train", "--dataset", "cyc", "--model", "gru4rec", "--data-dir", str(tiny),
                       "--results-dir", str(tmp_path), "--epochs", "2"], capsys)
    assert rc == 130
    assert not list((tmp_path / "runs").rglob("config.json"))
    assert "continue from the last finished epoch with: matrrec train --dataset cyc" in err
    assert err.rstrip().endswith("--epochs 2 --resume")


def test_resume_hint() -> None:
    assert resume_hint(["train", "--dataset", "x"]) == "matrrec train --dataset x --resume"
    assert resume_hint(["train", "--dataset", "x", "--resume"]) == \
        "matrrec train --dataset x --resume"
    assert resume_hint(["sweep", "dropout", "0.1", "--dataset", "my data"]) == \
        "matrrec sweep dropout 0.1 --dataset 'my data'"


# --- --resume of a finished run --------------------------------------------------------------
def test_resume_of_a_finished_run_says_so_and_trains_nothing(fake_data, capsys,
                                                             tmp_path: Path) -> None:
    first = _train(capsys, tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "synthetic", "--epochs", "2", "--device", "cpu",
              "--results-dir", str(tmp_path), "--json", *SMALL, "--resume"])
    out = capsys.readouterr()
    again = json.loads(out.out)
    assert again["run_dir"] == first["run_dir"]
    assert again["test"] == first["test"]
    assert "already finished this configuration and seed; nothing to resume" in out.err
    assert not re.search(r"^epoch +\d+/", out.err, re.M)  # no epoch trained
    assert len(list((tmp_path / "runs").rglob("config.json"))) == 1


# --- progress --------------------------------------------------------------------------------
def test_rich_progress_keeps_every_epoch_line_and_counts_right(fake_data, capsys,
                                                               tmp_path: Path,
                                                               monkeypatch) -> None:
    from matrrec_cli.commands import train as train_cmd

    monkeypatch.setattr(train_cmd, "Reporter", lambda: Reporter(rich=True), raising=False)
    import matrrec_cli.train.progress as progress
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "synthetic", "--epochs", "3", "--device", "cpu",
              "--results-dir", str(tmp_path), *SMALL])
    err = capsys.readouterr().err
    for k in (1, 2, 3):
        assert re.search(rf"epoch +{k}/3 +loss", err), k
    assert "epoch 4" not in err
    assert "4/3" not in err


def test_reporter_never_shows_an_epoch_past_the_budget() -> None:
    rep = Reporter(rich=True)
    rep.start(total_epochs=2, n_batches=3, first_epoch=0)
    for e in (1, 2):
        for _ in range(3):
            rep.batch(loss=1.0)
        rep.epoch({"epoch": e, "loss": 1.0, "valid_score": 0.1, "improved": True, "bad": 0,
                   "valid": {"recall@10": 0.2}, "seconds": 0.1})
        tasks = {t.description.strip(): t for t in rep._progress.tasks}
        assert tasks["epochs"].completed == e
        assert all(not d.startswith("epoch 3") for d in tasks)
    rep.stop()


# --- catalogues, version, help ---------------------------------------------------------------
def test_datasets_lists_registered_and_imported_with_their_command(tiny: Path, capsys) -> None:
    rc, out, _ = _run(["datasets", "--data-dir", str(tiny), "--json"], capsys)
    assert rc == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ml-100k"]["kind"] == "registered"
    assert rows["ml-100k"]["command"].startswith("matrrec download ml-100k")
    assert rows["cyc"]["kind"] == "imported"
    assert rows["cyc"]["prepared"] is True
    assert rows["cyc"]["command"].startswith(f"matrrec import cyc --from-file {tiny / 'i.csv'}")


def test_models_lists_every_model_with_its_objectives(capsys) -> None:
    from matrrec_cli.models import model_names

    rc, out, _ = _run(["models", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rc == 0
    assert list(rows) == model_names()
    assert rows["matrrec"]["objectives"] == ["prefix", "all"]
    assert rows["narm"]["objectives"] == ["prefix"]
    assert rows["markov"]["kind"].startswith("count")


def test_version(capsys) -> None:
    import matrrec_cli

    rc, out, _ = _run(["--version"], capsys)
    assert rc == 0
    assert out.strip() == f"matrrec {matrrec_cli.__version__}"


def test_help_shows_choices_and_completion_is_on(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = _run(["train", "--help"], capsys)
    assert "prefix|all" in out
    assert "paper|recbole" in out
    _, out, _ = _run(["--help"], capsys)
    assert "--install-completion" in out


# --- one spelling per option, --json on every table command ----------------------------------
def _commands() -> dict[str, Any]:
    """Every command path ("report table2") -> its click command (typer's vendored click)."""
    root = typer.main.get_command(app)
    out: dict[str, Any] = {}

    def walk(cmd: Any, prefix: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])
        else:
            out[" ".join(prefix)] = cmd
    walk(root, [])
    return out


TABLE_COMMANDS = ("stats", "datasets", "models", "train", "evaluate", "ablate", "sweep",
                  "profile", "tune", "report table2", "report runs", "report significance",
                  "report breakdown")


def test_every_table_command_takes_json_and_options_are_spelled_once() -> None:
    commands = _commands()
    for path in TABLE_COMMANDS:
        opts = {o for p in commands[path].params for o in getattr(p, "opts", [])}
        assert "--json" in opts, path
    visible: dict[str, set[str]] = {}
    for path, cmd in commands.items():
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and not p.hidden:
                for o in p.opts:
                    visible.setdefault(o, set()).add(path)
    assert "--models" not in visible  # profile's old spelling is a hidden alias of --model
    assert "profile" in visible["--model"]


def _named_commands(text: str) -> list[str]:
    """Commands named as commands: in backticks, or after "run"/"see"/"Example:"."""
    return re.findall(r"(?:`|\brun |\bsee |Example: )matrrec ((?:report )?[a-z][a-z0-9-]*)",
                      text)


def _strings(path: Path) -> list[str]:
    """The string constants (docstrings and messages) of one source file."""
    tree = ast.parse(path.read_text())
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_every_command_a_message_docstring_or_the_readme_names_exists() -> None:
    commands = set(_commands())
    texts = [s for p in (REPO / "matrrec_cli").rglob("*.py") for s in _strings(p)]
    texts.append((REPO / "README.md").read_text())
    named = {c for t in texts for c in _named_commands(t)}
    missing = sorted(c for c in named if c not in commands and c.split()[0] not in commands
                     and c not in ("report",))
    assert not missing, missing
    assert "datasets" in named  # the message that used to name a missing command


def test_readme_commands_parse(capsys) -> None:
    """Every `matrrec ...` line in the README's code blocks parses: the command exists and
    every option it uses is one the command takes."""
    import shlex

    commands = _commands()
    fenced = re.findall(r"```(\w*)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    blocks = [body for lang, body in fenced if lang in ("", "bash", "sh")]  # not python
    lines = [ln.split("#")[0].strip() for b in blocks
             for ln in b.replace("\\\n", " ").splitlines()]
    checked = 0
    for line in lines:
        for part in re.split(r"&&|;|\|", line):
            words = shlex.split(part.strip()) if part.strip() else []
            if words[:1] != ["matrrec"]:
                continue
            path = " ".join(words[1:3]) if words[1:2] == ["report"] else words[1]
            args = words[3:] if words[1:2] == ["report"] else words[2:]
            cmd = commands[path]
            args = [a for a in args if not re.fullmatch(r"[A-Z]+|[A-Z]+…|\.\.\.", a)]
            cmd.make_context(path, [re.sub(r"[A-Z]\b", "x", a) if a.isupper() else a
                                    for a in args], resilient_parsing=True)
            checked += 1
    assert checked >= 5


def test_readme_is_for_users() -> None:
    text = (REPO / "README.md").read_text()
    assert "../shared" not in text
    assert not re.search(r"\bissue \d+", text, re.I)
    for path in (REPO / "matrrec_cli").rglob("*.py"):
        for s in _strings(path):
            assert "../shared" not in s, path
            assert not re.search(r"\bissue \d+", s, re.I), (path, s[:80])


def test_cli_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, matrrec_cli.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
