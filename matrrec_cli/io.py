"""Atomic file writes and checksums: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from matrrec_cli.errors import MatrrecError, warn


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask can only be
    read by setting it, which races with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The file gets the mode a plain open() would give it (0666 less the umask): mkstemp creates
    0600, which a group sharing a results directory could not read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        if is_disk_full(exc):
            written = tmp_path.stat().st_size if tmp_path.exists() else 0
            raise disk_full(path, written) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT however the writer wrapped it: an OSError, pyarrow's ArrowInvalid around
    "[Errno 28]", or torch's zip writer ("unexpected pos", which never says the disk is full)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "[Errno 28]" in text or (
        "unexpected pos" in text and "inline_container" in text)


def disk_full(path: Path, written: int = 0) -> MatrrecError:
    """The one-line error for a full disk, with how much space the file needed at least."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    need = f"needed more than {max(written, 1) / 2**20:.1f} MB" if written else "needed more"
    return MatrrecError(f"no space left on the device of {path.parent} writing {path.name} "
                        f"({free / 2**20:.1f} MB free, {need}); free some space and run the "
                        "command again")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """open() that writes to a temporary file and renames it into place on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_csv(df: Any, path: str | os.PathLike[str]) -> None:
    """A DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def merge_csv(df: Any, path: str | os.PathLike[str], *, key: list[str]) -> None:
    """Write `df` into the CSV at `path`, replacing the rows whose `key` values `df` also has
    and keeping the others (their columns too). An unreadable old file is replaced, with a
    warning: the new rows are what was asked for."""
    import pandas as pd

    path = Path(path)
    merged = df
    if path.exists():
        try:
            old = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            warn(f"{path} is unreadable ({exc}); writing it anew")
        else:
            if set(key) <= set(old.columns):
                new_keys = set(df[key].astype(str).itertuples(index=False, name=None))
                keep = [tuple(k) not in new_keys
                        for k in old[key].astype(str).itertuples(index=False, name=None)]
                merged = pd.concat([old[keep], df], ignore_index=True)
                merged = merged.sort_values(key, kind="stable", ignore_index=True)
    write_csv(merged, path)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: MatrrecError) -> Iterator[None]:
    """Hold an OS lock (flock) on `path` for the block, or raise `busy` at once when another
    process holds it. A killed process never leaves it held. Where flock does not exist
    (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
