"""Raw dump -> <data-dir>/<name>/interactions.parquet + id maps + meta.json (protocol §2 steps 1-5).

Steps: read in file order; iterative k-core (users and items below the bound pruned in the same
pass, duplicates kept); ids remapped 1..n by first appearance in the filtered file (0 = padding);
rows sorted by (user, timestamp, source row). `timestamp_order="recbole"` sorts by the float32
timestamp instead, as RecBole's tensors do (protocol §2 step 4): ML-1M times (~1e9 < 2^30) round
to multiples of 64 s there, so ratings within one 64-s window fall back to file order.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matrrec_cli.data.readers import read_raw
from matrrec_cli.data.registry import DatasetSpec, Source, check_name
from matrrec_cli.errors import MatrrecError
from matrrec_cli.io import atomic_path, current_umask, exclusive_lock, sha256_file, write_json

TimestampOrder = Literal["exact", "recbole"]
META = "meta.json"


def kcore_mask(users: np.ndarray, items: np.ndarray, *, min_user: int, min_item: int) -> np.ndarray:
    """Rows kept by the iterative k-core on integer codes (§2 step 2; multi-edges counted)."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        u_cnt = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        i_cnt = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        # ban users and items below the bound in the same pass, as RecBole's _filter_by_inter_num
        banned = keep & ((u_cnt[users] < min_user) | (i_cnt[items] < min_item))
        if not banned.any():
            return keep
        keep &= ~banned


def order_key(timestamp: np.ndarray, order: TimestampOrder) -> np.ndarray:
    """The time sort key: exact int64, or RecBole's float32 (64-s steps for ML-1M)."""
    return timestamp.astype(np.float32) if order == "recbole" else timestamp


def preprocess(raw: pd.DataFrame, *, min_user: int = 5, min_item: int = 5,
               timestamp_order: TimestampOrder = "exact") -> tuple[pd.DataFrame, list, list]:
    """Filter, remap and sort. Returns (interactions, user tokens by id-1, item tokens by id-1)."""
    u_codes, _ = pd.factorize(raw["user"])
    i_codes, _ = pd.factorize(raw["item"])
    keep = kcore_mask(u_codes, i_codes, min_user=min_user, min_item=min_item)
    kept = raw[keep].reset_index(drop=True)  # file order kept (§2 step 2)
    users, user_tokens = pd.factorize(kept["user"])  # first appearance in the filtered file (§2.3)
    items, item_tokens = pd.factorize(kept["item"])
    ts = kept["timestamp"].to_numpy(np.int64)
    row = np.arange(len(kept))
    perm = np.lexsort((row, order_key(ts, timestamp_order), users))  # (user, ts, source row)
    df = pd.DataFrame({"user": (users[perm] + 1).astype(np.int32),
                       "item": (items[perm] + 1).astype(np.int32),
                       "timestamp": ts[perm]})
    return df, list(user_tokens), list(item_tokens)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


# A dataset directory is replaced, never edited: the new one is built in
# <data>/.staging/<name>/build-*, then swapped in with two renames (old -> old-*, build -> live)
# and the old one removed. Staging lives one level down so `<data>/*/meta.json` (how imported
# datasets are found) never sees a half-built or outgoing copy. One process per dataset at a
# time: an OS lock (flock) on <data>/.locks/<name>.lock, so a killed process never leaves it held.
STAGING = ".staging"
LOCKS = ".locks"
_held: set[Path] = set()  # locks this process holds: a nested dataset_lock is a no-op


class DatasetBusy(MatrrecError):
    """Another process is downloading, preparing or importing the same dataset."""


@contextlib.contextmanager
def dataset_lock(data_dir: Path, name: str) -> Iterator[None]:
    """Hold `<data_dir>/.locks/<name>.lock` while the dataset's files change; a second process
    gets DatasetBusy at once (no waiting: a download can take an hour). Entering it also
    recovers from a run killed mid-swap (see recover_staging)."""
    check_name(name)
    locks = Path(data_dir) / LOCKS
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MatrrecError(f"--data-dir {data_dir}: cannot create {locks} ({exc.strerror}); "
                           "choose a writable data directory") from None
    path = (locks / f"{name}.lock").resolve()
    if path in _held:
        yield
        return
    busy = DatasetBusy(f"dataset '{name}' is being downloaded, prepared or imported by another "
                       f"process (lock {locks / (name + '.lock')}); wait for it to finish, then "
                       "run the command again")
    with exclusive_lock(path, busy):
        _held.add(path)
        try:
            recover_staging(data_dir, name)
            yield
        finally:
            _held.discard(path)


def recover_staging(data_dir: Path, name: str) -> None:
    """Clean what a killed run left in `<data>/.staging/<name>/`: a build is dropped; an old
    directory renamed aside is put back when the live one is missing (killed between the two
    renames of a swap), else removed. Call with the dataset's lock held."""
    area = Path(data_dir) / STAGING / name
    if not area.is_dir():
        return
    live = Path(data_dir) / name
    olds = sorted(area.glob("old-*"), key=lambda p: p.lstat().st_mtime)
    if olds and not os.path.lexists(live):
        os.rename(olds[-1], live)
    for path in area.iterdir():
        _remove(path)
    _rmdirs(area)


def _rmdirs(area: Path) -> None:
    """Remove <data>/.staging/<name> and <data>/.staging when empty (another dataset's build
    may be in .staging: then it stays)."""
    for d in (area, area.parent):
        with contextlib.suppress(OSError):
            d.rmdir()


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def building(data_dir: Path, name: str, *, keep_raw: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory for `<data_dir>/<name>`; when the block ends normally it
    replaces the live directory (which is renamed aside, then removed); when it raises, the
    staging directory is removed and the live directory is exactly as it was. `keep_raw`: start
    from (hard links to) the live raw/ files."""
    with dataset_lock(data_dir, name):
        area = Path(data_dir) / STAGING / name
        area.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="build-", dir=area))
        os.chmod(build, 0o777 & ~current_umask())  # mkdtemp's 0700 would become the dataset's
        live = Path(data_dir) / name
        try:
            if keep_raw and (live / "raw").is_dir():
                for f in (live / "raw").iterdir():
                    if f.is_file():
                        link_or_copy(f, build / "raw" / f.name)
            yield build
            swap_in(build, live)
        except OSError as exc:  # a full disk, a read-only directory: the old one is intact
            where = f": {exc.filename}" if exc.filename else ""
            raise MatrrecError(f"{live}: could not build the new dataset ({exc.strerror or exc}"
                               f"{where}); the existing one is unchanged; free space or fix "
                               "permissions, then run the command again") from None
        finally:
            _remove(build)
            _rmdirs(area)


def link_or_copy(src: Path, dest: Path) -> None:
    """`dest` gets `src`'s bytes: a hard link where the file system allows, else a copy (via a
    temporary name, so `dest` never holds part of the file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)


def swap_in(build: Path, live: Path) -> None:
    """Rename `build` onto `live`; the old `live` is first renamed aside (beside `build`) and
    removed only once the new one is in place; if the second rename fails it is put back."""
    old = None
    if os.path.lexists(live):
        old = build.parent / f"old-{secrets.token_hex(6)}"
        os.rename(live, old)
    try:
        os.rename(build, live)
    except BaseException:
        if old is not None:
            os.rename(old, live)
        raise
    if old is not None:
        _remove(old)


def prepare(spec: DatasetSpec, src: Source, raw_path: Path, data_dir: Path, *,
            timestamp_order: TimestampOrder = "exact", out: Path | None = None,
            digest: str | None = None) -> dict:
    """Read a registered dataset's raw dump and write its prepared form (see write_prepared).
    `digest`: the raw file's sha256 when the caller has already checked it (default: hash now)."""
    raw = read_raw(raw_path, src.format)
    digest = digest or sha256_file(raw_path)
    return write_prepared(
        spec.name, raw, data_dir, min_user=spec.kcore.user, min_item=spec.kcore.item,
        sources=[{"file": src.file, "format": src.format, "origin": src.label,
                  "sha256": digest,
                  "verified": src.sha256 == digest}],
        training={"max_len": spec.training.max_len, "dropout": spec.training.dropout},
        where=str(raw_path), timestamp_order=timestamp_order, out=out)


def write_prepared(name: str, raw: pd.DataFrame, data_dir: Path, *, min_user: int,
                   min_item: int, sources: list[dict], training: dict, where: str,
                   timestamp_order: TimestampOrder = "exact", extra: dict | None = None,
                   out: Path | None = None) -> dict:
    """Filter, remap, sort and write `<data_dir>/<name>/`, built beside it and swapped in only
    when complete (see building): a failure or Ctrl-C leaves an existing dataset as it was.
    `out`: a staging directory the caller got from building() (and has put raw/ into); the
    caller's block swaps it in."""
    if out is None:
        with building(data_dir, name, keep_raw=True) as build:
            return write_prepared(name, raw, data_dir, min_user=min_user, min_item=min_item,
                                  sources=sources, training=training, where=where,
                                  timestamp_order=timestamp_order, extra=extra, out=build)
    out = Path(out)
    df, user_tokens, item_tokens = preprocess(raw, min_user=min_user, min_item=min_item,
                                              timestamp_order=timestamp_order)
    if df.empty:
        raise MatrrecError(f"{where}: no interactions left after the {min_user}/"
                           f"{min_item}-core filter ({len(raw)} read)")
    _write_parquet(df, out / "interactions.parquet")
    for path, tokens in zip((out / "user_map.parquet", out / "item_map.parquet"),
                            (user_tokens, item_tokens), strict=True):
        _write_parquet(pd.DataFrame({"id": np.arange(1, len(tokens) + 1, dtype=np.int32),
                                     "token": pd.Series(tokens, dtype=str)}), path)
    meta = {
        "name": name,
        "n_users": len(user_tokens), "n_items": len(item_tokens), "n_interactions": len(df),
        "n_raw_interactions": len(raw),
        "sources": sources,
        "filter": {"kcore_user": min_user, "kcore_item": min_item,
                   "duplicates": "kept", "timestamp_order": timestamp_order},
        "training": training,
        "versions": {"python": platform.python_version(), "pandas": pd.__version__,
                     "pyarrow": pa.__version__, "numpy": np.__version__},
        **(extra or {}),
    }
    write_json(out / META, meta)  # last: its presence marks a complete prepare
    return meta
