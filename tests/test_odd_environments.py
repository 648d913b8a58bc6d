"""The toolkit in environments a cluster job or a CI runner gives it: no HOME, a C locale
without UTF-8, no terminal, a unicode path. Each run is a fresh process on the published
evidence (reports need no data and no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "results" / "published"


def _report(results: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matrrec_cli", "report", "table2",
                           "--dataset", "musical", "--results-dir", str(results), *extra],
                          env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    if not (PUBLISHED / "runs" / "musical").is_dir():
        pytest.skip("no published Musical runs")
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(PUBLISHED, root / "plain" / "published")
    shutil.copytree(PUBLISHED, root / "résultats ü" / "published")
    return root


@pytest.mark.parametrize("case", ["C locale", "no HOME", "C locale, no HOME", "unicode path"])
def test_reports_print_their_symbols_under_odd_environments(published: Path, case: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LANG", "PYTHONUTF8")}
    if "C locale" in case:
        env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONIOENCODING="")
    else:
        env.update(LC_ALL="C.UTF-8")
    if "no HOME" in case:
        env.pop("HOME", None)
    results = published / ("résultats ü" if case == "unicode path" else "plain")
    for extra in ((), ("--markdown",)):
        proc = _report(results, env, *extra)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert "warning" not in err, err
        assert "±" in proc.stdout.decode("utf-8")  # written as UTF-8 whatever the locale
