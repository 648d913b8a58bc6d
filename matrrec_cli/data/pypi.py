"""The offline mirror: one member of a PyPI wheel, fetched with pip's own download machinery.

pip uses whatever index the user's pip is configured for, so no host is named here (protocol §1.2:
recbole==1.2.1 ships ml-100k.inter in recbole/dataset_example/). The requirement comes from
datasets.toml, which may be someone else's: registry.Source only admits `name==version`, and pip
gets it after `--`, so it can never be read as an option (`-r URL` would switch the index).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from matrrec_cli.data.registry import Source
from matrrec_cli.data.verify import SourceFailed
from matrrec_cli.io import atomic_path

PIP_TIMEOUT_S = 600


def pip_command(requirement: str, dest_dir: str) -> list[str]:
    """The pip download command line for one wheel; the requirement only after `--`."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "-d", dest_dir, "--", requirement]


def fetch_wheel_member(src: Source, dest: Path) -> None:
    """pip download the wheel into a temp dir, extract `src.member` to dest (atomic); the caller
    verifies it, as every fetched file (data/verify.py)."""
    with tempfile.TemporaryDirectory(prefix="matrrec-wheel-") as tmp:
        try:
            proc = subprocess.run(pip_command(str(src.requirement), tmp), capture_output=True,
                                  text=True, timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise SourceFailed(f"pip download took more than {PIP_TIMEOUT_S} s") from None
        except OSError as exc:
            raise SourceFailed(f"cannot run pip ({exc.strerror})") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise SourceFailed(f"pip download failed: {last}")
        with atomic_path(dest) as part:
            try:
                # reading the member to its end makes zipfile check its size and CRC-32
                with zipfile.ZipFile(wheels[0]) as zf, zf.open(str(src.member)) as fin, \
                        part.open("wb") as fout:
                    while chunk := fin.read(1 << 20):
                        fout.write(chunk)
            except (KeyError, zipfile.BadZipFile, EOFError) as exc:
                raise SourceFailed(f"wheel has no usable {src.member}: {exc}") from None
