"""The offline mirror: one member of a PyPI wheel, fetched with pip's own download machinery.

pip uses whatever index the user's pip is configured for, so no host is named here (protocol §1.2:
recbole==1.2.1 ships ml-100k.inter in recbole/dataset_example/).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from matrrec_cli.data.download import SourceFailed, verify
from matrrec_cli.data.registry import Source


def fetch_wheel_member(src: Source, dest: Path) -> None:
    """pip download the wheel into a temp dir, extract `src.member` to dest (verified, atomic)."""
    with tempfile.TemporaryDirectory(prefix="matrrec-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", str(src.requirement), "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise SourceFailed(f"pip download failed: {last}")
        part = dest.with_name(dest.name + ".part")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(str(src.member)) as fin, \
                    part.open("wb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
        except (KeyError, zipfile.BadZipFile) as exc:
            part.unlink(missing_ok=True)
            raise SourceFailed(f"wheel has no usable {src.member}: {exc}") from None
        try:
            verify(part, src)
        except SourceFailed:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
