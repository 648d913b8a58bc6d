"""What a failed or hostile download/import must not do: destroy a working dataset (item 1),
record unverified bytes as verified (item 2), or reach outside its directory (item 6)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import data_dumps as dumps
import pytest
from httpserver import Site, etag, serve
from test_data_download import PAYLOADS, _source, registry, run

from matrrec_cli.data.prepared import load_interactions, load_meta

ROWS = dumps.interactions()
BODY = dumps.inter(ROWS)  # a RecBole .inter: plain text, so a cut file still parses
FILE = "tiny.inter"
DEAD = "http://127.0.0.1:9/"  # nothing listens: any request to it fails at once


def _use(env: Path, monkeypatch, sources: list[str]) -> None:
    monkeypatch.setenv("MATRREC_DATASETS_TOML", str(registry(env, {"tiny": sources})))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root (lock files aside) with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.parent.name != ".locks"}


def _one_error(code: int, err: str, want: int = 1) -> str:
    lines = err.strip().splitlines()
    assert code == want, err
    assert len(lines) == 1, err
    assert lines[0].startswith("matrrec: error: "), err
    return lines[0]


def _prepared_from_file(env, capsys, monkeypatch, *, checks: bool = False) -> Path:
    """`tiny` prepared from a hand-fetched file; its only URL is dead."""
    _use(env, monkeypatch, [_source(DEAD + FILE, FILE, "inter", BODY, checks=checks)])
    good = env / FILE
    good.write_bytes(BODY)
    code, err = run(["download", "tiny", "--from-file", str(good)], capsys)
    assert code == 0, err
    return env / "data"


# --- item 1: a failed re-preparation keeps the working dataset ---------------------------------

THREE_LINES = dumps.inter([(1, 1, 5), (2, 2, 6), (3, 3, 7)])


@pytest.mark.parametrize("bad", ["kcore", "malformed", "interrupt", "swap"])
def test_failed_reprepare_keeps_the_working_dataset(env, capsys, monkeypatch, bad):
    data = _prepared_from_file(env, capsys, monkeypatch)
    before = _snapshot(data)
    n = load_meta("tiny", data)["n_interactions"]
    other = env / "other" / FILE
    other.parent.mkdir()
    other.write_bytes(THREE_LINES if bad == "kcore" else
                      BODY + b"7\t8\toops\n" if bad == "malformed" else BODY[:-40])
    if bad == "interrupt":  # Ctrl-C while the new Parquet files are written
        import matrrec_cli.data.preprocess as pp

        def boom(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(pp.pq, "write_table", boom)
    if bad == "swap":  # the rename that puts the new directory in place fails
        import matrrec_cli.data.preprocess as pp
        real = os.rename

        def rename(a, b):
            if Path(a).name.startswith("build-"):
                raise OSError(28, "No space left on device")
            real(a, b)
        monkeypatch.setattr(pp.os, "rename", rename)
    code, err = run(["download", "tiny", "--from-file", str(other)], capsys)
    monkeypatch.undo()
    _use(env, monkeypatch, [_source(DEAD + FILE, FILE, "inter", BODY, checks=False)])
    monkeypatch.setenv("MATRREC_DATA_DIR", str(data))
    if bad == "interrupt":
        assert code == 130, err
    elif bad != "swap":
        line = _one_error(code, err)
        assert str(other) in line, line  # the user's file is named, not a staging copy
        assert ".staging" not in line
    else:
        assert "the existing one is unchanged" in _one_error(code, err)
        assert "No space left on device" in err
    assert _snapshot(data) == before  # meta.json, Parquet, raw file and record: all as they were
    assert load_meta("tiny", data)["n_interactions"] == n
    assert not (data / ".staging").exists()
    # and the next plain download reuses the good raw file (the URL is dead: no fetch possible)
    code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert "already prepared" in err


@pytest.mark.parametrize("fault", ["wrong", "html", "cut"])
def test_failed_download_keeps_the_prepared_dataset(env, capsys, monkeypatch, fault):
    """raw/ lost its file, so the next download fetches again, and that fails: the prepared
    dataset (meta.json, Parquet) is untouched and still loads."""
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=True, site=site)
        assert run(["download", "tiny"], capsys)[0] == 0
        data = env / "data"
        (data / "tiny/raw" / FILE).unlink()
        before = _snapshot(data)
        site.faults[f"/{FILE}"] = [fault] * 3
        _one_error(*run(["download", "tiny", "--timestamp-order", "recbole"], capsys))
    after = {k: v for k, v in _snapshot(data).items() if not k.endswith((".part", ".part.json"))}
    assert after == before
    assert len(load_interactions("tiny", data)) == load_meta("tiny", data)["n_interactions"]


def test_successful_reprepare_replaces_and_keeps_raw(env, capsys, monkeypatch):
    data = _prepared_from_file(env, capsys, monkeypatch)
    code, err = run(["download", "tiny", "--timestamp-order", "recbole"], capsys)
    assert code == 0, err
    assert load_meta("tiny", data)["filter"]["timestamp_order"] == "recbole"
    assert (data / "tiny/raw" / FILE).read_bytes() == BODY
    assert (data / "tiny/raw" / f"{FILE}.sha256").read_text().split()[0] == \
        hashlib.sha256(BODY).hexdigest()
    assert not (data / ".staging").exists()
    # the dataset directory gets ordinary permissions, not a temporary directory's 0700
    assert (data / "tiny").stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_killed_mid_swap_is_recovered(env, capsys, monkeypatch):
    """Killed between the two renames: the live directory is aside in .staging; the next run
    puts it back (and drops the half-built one) before looking at it."""
    data = _prepared_from_file(env, capsys, monkeypatch)
    before = _snapshot(data)
    area = data / ".staging" / "tiny"
    area.mkdir(parents=True)
    os.rename(data / "tiny", area / "old-abc")
    (area / "build-xyz").mkdir()
    (area / "build-xyz" / "meta.json").write_text("{}")
    code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert "already prepared" in err
    assert _snapshot(data) == before
    assert not (data / ".staging" / "tiny").exists()


def test_staging_is_invisible_to_the_dataset_list(env, capsys, monkeypatch):
    from matrrec_cli.data.catalog import dataset_rows

    data = _prepared_from_file(env, capsys, monkeypatch)
    (data / ".staging/x/build-1").mkdir(parents=True)
    (data / ".staging/x/build-1/meta.json").write_text("{}")
    assert [r["name"] for r in dataset_rows(data)] == ["tiny"]


@pytest.mark.parametrize("fail", ["kcore", "interrupt"])
def test_failed_reimport_keeps_the_old_import(env, capsys, monkeypatch, fail):
    seq = env / "s.txt"
    seq.write_text("".join(f"u{u} " + " ".join(f"i{(u * 7 + k) % 13}" for k in range(9)) + "\n"
                           for u in range(12)))
    root = env / "data"
    code, err = run(["import", "mine", "--from-file", str(seq), "--format", "seq",
                     "--kcore", "2"], capsys)
    assert code == 0, err
    before = _snapshot(root)
    n = len(load_interactions("mine", root))
    if fail == "interrupt":
        import matrrec_cli.data.preprocess as pp

        monkeypatch.setattr(pp, "write_json", lambda *a, **k: (_ for _ in ()).throw(
            KeyboardInterrupt()))
    code, err = run(["import", "mine", "--from-file", str(seq), "--format", "seq",
                     "--kcore", "50" if fail == "kcore" else "1"], capsys)
    if fail == "kcore":
        assert "no interactions left after the 50/50-core filter" in _one_error(code, err)
    else:
        assert code == 130
    assert _snapshot(root) == before
    assert len(load_interactions("mine", root)) == n
    assert not (root / ".staging").exists()


def test_successful_reimport_replaces(env, capsys):
    seq = env / "s.txt"
    seq.write_text("u1 a b c\nu2 b c d\n")
    root = env / "data"
    assert run(["import", "mine", "--from-file", str(seq), "--format", "seq", "--kcore", "0"],
               capsys)[0] == 0
    seq.write_text("u1 a b\n")
    assert run(["import", "mine", "--from-file", str(seq), "--format", "seq", "--kcore", "0"],
               capsys)[0] == 0
    assert len(load_interactions("mine", root)) == 2


# --- item 2: only verified bytes are trusted ---------------------------------------------------

def _served(env, capsys, monkeypatch, *, checks: bool, site: Site | None = None):
    site = site or Site(files={f"/{FILE}": BODY})
    _use(env, monkeypatch, [_source(site.base + f"/{FILE}", FILE, "inter", BODY, checks=checks)])
    return site


def _half_at_line(body: bytes) -> bytes:
    cut = body.index(b"\n", len(body) // 2) + 1  # a clean line boundary: still parses
    return body[:cut]


@pytest.mark.parametrize("checks", [True, False])
def test_truncated_raw_is_fetched_again(env, capsys, monkeypatch, checks):
    """The issue's reproduction: raw file cut to half (at a line boundary), meta.json deleted."""
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=checks, site=site)
        assert run(["download", "tiny"], capsys)[0] == 0
        full = load_meta("tiny", env / "data")["n_interactions"]
        raw = env / "data/tiny/raw" / FILE
        raw.write_bytes(_half_at_line(BODY))
        (env / "data/tiny/meta.json").unlink()
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert len(site.log) == 2  # fetched again, not reused
    assert raw.read_bytes() == BODY
    assert load_meta("tiny", env / "data")["n_interactions"] == full


@pytest.mark.parametrize("record", ["", "\n", "zz  tiny.inter\n", "{}", "missing",
                                    "0" * 64 + "  other.inter\n"])
def test_bad_record_means_fetch_again_not_traceback(env, capsys, monkeypatch, record):
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=False, site=site)
        assert run(["download", "tiny"], capsys)[0] == 0
        rec = env / "data/tiny/raw" / f"{FILE}.sha256"
        if record == "missing":
            rec.unlink()
        else:
            rec.write_text(record)
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert len(site.log) == 2
    assert rec.read_text().split()[0] == hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize("meta", ["", "{", "[]", "null", '{"sources": []}', '{"sources": [{}]}',
                                  '{"sources": [{"sha256": 5, "file": 1}], "filter": {}}'])
def test_corrupt_meta_is_reprepared(env, capsys, monkeypatch, meta):
    data = _prepared_from_file(env, capsys, monkeypatch)
    good = load_meta("tiny", data)
    (data / "tiny/meta.json").write_text(meta)
    code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert load_meta("tiny", data)["n_interactions"] == good["n_interactions"]


def test_unverified_download_warns_once_and_verified_does_not(env, capsys, monkeypatch):
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=False, site=site)
        code, err = run(["download", "tiny"], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("matrrec: warning:")]
    assert code == 0
    assert len(warnings) == 1, err
    assert FILE in warnings[0]
    assert "unverified" in warnings[0]
    assert "--require-hash" in warnings[0]
    assert "incomplete" not in warnings[0]  # Content-Length was checked
    # the same with a sha256 in datasets.toml: silent
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=True, site=site)
        (env / "data/tiny/raw" / FILE).unlink()
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert "warning" not in err


def test_from_file_without_sha_warns(env, capsys, monkeypatch):
    _use(env, monkeypatch, [_source(DEAD + FILE, FILE, "inter", BODY, checks=False)])
    (env / FILE).write_bytes(BODY)
    code, err = run(["download", "tiny", "--from-file", str(env / FILE)], capsys)
    assert code == 0, err
    assert sum("unverified" in line for line in err.splitlines()) == 1


@pytest.mark.parametrize("fault", ["cutnolength", "nolength"])
def test_body_without_length_is_never_recorded(env, capsys, monkeypatch, fault):
    """Without Content-Length a cut body cannot be told from a whole one: it is used once with
    a warning that says so, never recorded as the file's sha256, and fetched again next time."""
    body = dumps.inter(dumps.interactions(n=3000))
    site = Site(files={f"/{FILE}": body}, faults={f"/{FILE}": [fault]})
    with serve(site):
        _use(env, monkeypatch, [_source(site.base + f"/{FILE}", FILE, "inter", body,
                                        checks=False)])
        code, err = run(["download", "tiny"], capsys)
        raw = env / "data/tiny/raw" / FILE
        if code == 0:  # a cut at a line boundary parses: then only the warning can tell
            assert "may be incomplete" in err
            assert not raw.with_name(FILE + ".sha256").exists()
        else:  # cut mid-line: a parse error, and nothing is kept to be reused
            _one_error(code, err)
            assert not list((env / "data").rglob(f"{FILE}*"))
        code, err = run(["download", "tiny"], capsys)  # no fault now: a whole, checked body
    assert code == 0, err
    assert len(site.log) == 2
    assert raw.read_bytes() == body
    assert raw.with_name(FILE + ".sha256").read_text().split()[0] == \
        hashlib.sha256(body).hexdigest()


def test_body_without_length_refused_under_require_hash(env, capsys, monkeypatch):
    site = Site(files={f"/{FILE}": BODY}, faults={f"/{FILE}": ["nolength"]})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=False, site=site)
        line = _one_error(*run(["download", "tiny", "--require-hash"], capsys))
    assert "--require-hash" in line
    assert site.log == []
    assert not (env / "data/tiny").exists()


def _part(env: Path, url: str, data: bytes, side: dict | str | None) -> Path:
    raw = env / "data/tiny/raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{FILE}.part").write_bytes(data)
    if side is not None:
        (raw / f"{FILE}.part.json").write_text(side if isinstance(side, str) else
                                               json.dumps({"url": url, **side}))
    return raw


BIG = dumps.inter(dumps.interactions(n=4000))


@pytest.mark.parametrize("case", ["no-sidecar", "other-url", "corrupt-sidecar", "garbage",
                                  "no-validator"])
def test_foreign_part_is_discarded(env, capsys, monkeypatch, case):
    """A .part is resumed only when its sidecar shows it is this URL's and a change of the file
    can be detected; else it is thrown away and the download starts at byte 0."""
    site = Site(files={f"/{FILE}": BIG})
    with serve(site):
        url = site.base + f"/{FILE}"
        _use(env, monkeypatch, [_source(url, FILE, "inter", BIG, checks=False)])
        side = {"no-sidecar": None, "other-url": json.dumps({"url": url + "x",
                                                             "total": len(BIG)}),
                "corrupt-sidecar": "{not json", "garbage": {"total": len(BIG)},
                "no-validator": {"total": len(BIG)}}[case]
        data = b"\x00garbage" * 100 if case == "garbage" else BIG[:800]
        # "garbage" has a valid sidecar but no validator and no sha256: not resumable either
        raw = _part(env, url, data, side)
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log == [(f"/{FILE}", None)]
    assert (raw / FILE).read_bytes() == BIG


def test_part_with_validator_resumes_with_if_range(env, capsys, monkeypatch):
    site = Site(files={f"/{FILE}": BIG}, validators=True)
    with serve(site):
        url = site.base + f"/{FILE}"
        _use(env, monkeypatch, [_source(url, FILE, "inter", BIG, checks=False)])
        raw = _part(env, url, BIG[:800], {"total": len(BIG), "etag": etag(BIG)})
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log == [(f"/{FILE}", "bytes=800-")]
    assert site.requests[0]["If-Range"] == etag(BIG)
    assert (raw / FILE).read_bytes() == BIG


def test_changed_file_is_not_spliced(env, capsys, monkeypatch):
    """The server's file changed since the .part was written: If-Range gets the whole new file
    (200), which replaces the .part instead of being appended to it."""
    old, new = BIG, dumps.inter(dumps.interactions(seed=5, n=4000))
    site = Site(files={f"/{FILE}": new}, validators=True)
    with serve(site):
        url = site.base + f"/{FILE}"
        _use(env, monkeypatch, [_source(url, FILE, "inter", new, checks=False)])
        raw = _part(env, url, old[:800], {"total": len(old), "etag": etag(old)})
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert (raw / FILE).read_bytes() == new


@pytest.mark.parametrize("checks", [True, False])
def test_206_must_start_where_the_part_ends(env, capsys, monkeypatch, checks):
    site = Site(files={f"/{FILE}": BIG}, validators=True, faults={f"/{FILE}": ["badrange"]})
    with serve(site):
        url = site.base + f"/{FILE}"
        _use(env, monkeypatch, [_source(url, FILE, "inter", BIG, checks=checks)])
        raw = _part(env, url, BIG[:800], {"total": len(BIG), "etag": etag(BIG)})
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log == [(f"/{FILE}", "bytes=800-"), (f"/{FILE}", None)]  # then from byte 0
    assert (raw / FILE).read_bytes() == BIG  # not the .part with the whole file appended


def test_416_on_resume_starts_over(env, capsys, monkeypatch):
    """The file shrank on the server since the .part was written."""
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        url = site.base + f"/{FILE}"
        _use(env, monkeypatch, [_source(url, FILE, "inter", BODY, checks=True)])
        raw = _part(env, url, BIG[: len(BODY) + 10], {"total": len(BIG)})
        # the registry's size would refuse that sidecar; drop it from this source
        _use(env, monkeypatch, ['[[{name}.sources]]\nkind = "url"\n'
                                f'url = "{url}"\nfile = "{FILE}"\nformat = "inter"\n'
                                f'sha256 = "{hashlib.sha256(BODY).hexdigest()}"\n'])
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log == [(f"/{FILE}", f"bytes={len(BODY) + 10}-"), (f"/{FILE}", None)]
    assert (raw / FILE).read_bytes() == BODY


def test_content_encoding_is_never_decoded(env, capsys, monkeypatch):
    """A server that gzips the body anyway: the stored bytes are what it sent (here gzip data,
    which is not a valid .inter), never the decoded text recorded as if it were the file."""
    site = Site(files={f"/{FILE}": BODY}, faults={f"/{FILE}": ["gzip"]})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=False, site=site)
        code, err = run(["download", "tiny"], capsys)
    line = _one_error(code, err.strip().splitlines()[-1])  # after `tiny: tiny.inter from URL`
    assert site.requests[0]["Accept-Encoding"] == "identity"
    assert FILE in line
    assert not (env / "data/tiny").exists()  # nothing recorded, nothing kept to reuse


def test_gz_file_labelled_content_encoding_is_stored_as_is(env, capsys, monkeypatch):
    """A .json.gz served with `Content-Encoding: gzip` (a common server setting): the file is
    the gzip bytes, and those are stored and verified, not the decompressed JSON."""
    file, fmt, gz = PAYLOADS["amazon"]
    site = Site(files={f"/{file}": gzip.decompress(gz)}, faults={f"/{file}": ["gzip"]})
    with serve(site):
        # the server compresses the JSON on the fly to exactly the bytes of the .gz file
        assert gzip.compress(gzip.decompress(gz), mtime=0) == gz
        _use(env, monkeypatch, [_source(site.base + f"/{file}", file, fmt, gz, checks=True)])
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert (env / "data/tiny/raw" / file).read_bytes() == gz


@pytest.mark.parametrize("command", ["download", "import"])
def test_second_process_gets_a_clear_error(env, capsys, monkeypatch, command):
    data = _prepared_from_file(env, capsys, monkeypatch)
    seq = env / "s.txt"
    seq.write_text("u1 a b\n")
    argv = (["download", "tiny", "--timestamp-order", "recbole"] if command == "download" else
            ["import", "mine", "--from-file", str(seq), "--format", "seq", "--kcore", "0"])
    before = _snapshot(data)
    lock = data / ".locks" / f"{'tiny' if command == 'download' else 'mine'}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _one_error(*run(argv, capsys))
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert "being downloaded, prepared or imported by another process" in line
    assert str(lock) in line
    assert _snapshot(data) == before
    assert run(argv, capsys)[0] == 0  # once the other process is done


def test_two_downloads_at_once(env, capsys, monkeypatch):
    """The issue's race: two `matrrec download` of one dataset. One downloads, the other is told
    to wait; the stored file is whole and verified."""
    body = dumps.inter(dumps.interactions(n=3000))
    site = Site(files={f"/{FILE}": body}, faults={f"/{FILE}": ["slow", "slow"]})
    with serve(site):
        _use(env, monkeypatch, [_source(site.base + f"/{FILE}", FILE, "inter", body,
                                        checks=False)])
        procs = [subprocess.Popen([sys.executable, "-m", "matrrec_cli", "download", "tiny"],
                                  stderr=subprocess.PIPE, text=True, env=os.environ.copy())
                 for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    errs = "\n".join(e for _, e in results)
    assert "Traceback" not in errs, errs
    assert codes[0] == 0, errs
    if codes[1] != 0:  # they overlapped: the second one was refused, in one line
        assert "another process" in errs, errs
    raw = env / "data/tiny/raw" / FILE
    assert raw.read_bytes() == body
    assert raw.with_name(FILE + ".sha256").read_text().split()[0] == \
        hashlib.sha256(body).hexdigest()


# --- --require-hash ------------------------------------------------------------------------------

def test_require_hash_refuses_sources_without_sha(env, capsys, monkeypatch):
    site = Site(files={f"/{FILE}": BODY})
    with serve(site):
        _served(env, capsys, monkeypatch, checks=False, site=site)
        line = _one_error(*run(["download", "tiny", "--require-hash"], capsys))
    assert "--require-hash" in line
    assert "no sha256 for any source of tiny" in line
    assert site.log == []


def test_require_hash_skips_to_the_hashed_mirror(env, capsys, monkeypatch):
    site = Site(files={f"/a/{FILE}": BODY, f"/b/{FILE}": BODY})
    with serve(site):
        _use(env, monkeypatch, [_source(site.base + f"/a/{FILE}", FILE, "inter", BODY,
                                        checks=False),
                                _source(site.base + f"/b/{FILE}", FILE, "inter", BODY)])
        code, err = run(["download", "tiny", "--require-hash"], capsys)
    assert code == 0, err
    assert [p for p, _ in site.log] == [f"/b/{FILE}"]
    assert load_meta("tiny", env / "data")["sources"][0]["verified"] is True


def test_require_hash_does_not_reuse_an_unverified_raw(env, capsys, monkeypatch):
    site = Site(files={f"/a/{FILE}": BODY, f"/b/{FILE}": BODY})
    with serve(site):
        _use(env, monkeypatch, [_source(site.base + f"/a/{FILE}", "a.inter", "inter", BODY,
                                        checks=False),
                                _source(site.base + f"/b/{FILE}", FILE, "inter", BODY)])
        assert run(["download", "tiny"], capsys)[0] == 0  # from a, recorded but unverified
        assert load_meta("tiny", env / "data")["sources"][0]["verified"] is False
        code, err = run(["download", "tiny", "--require-hash"], capsys)
    assert code == 0, err
    assert [p for p, _ in site.log] == [f"/a/{FILE}", f"/b/{FILE}"]
    assert load_meta("tiny", env / "data")["sources"][0]["verified"] is True
    assert (env / "data/tiny/raw/a.inter").read_bytes() == BODY  # the other file stays


def test_require_hash_from_file(env, capsys, monkeypatch):
    _use(env, monkeypatch, [_source(DEAD + FILE, FILE, "inter", BODY)])
    bad = env / FILE
    bad.write_bytes(BODY + b"1\t2\t4\t5\n")
    line = _one_error(*run(["download", "tiny", "--from-file", str(bad), "--require-hash"],
                           capsys))
    assert str(bad) in line
    assert "--require-hash" in line
    bad.write_bytes(BODY)
    assert run(["download", "tiny", "--from-file", str(bad), "--require-hash"], capsys)[0] == 0


# --- item 6: datasets.toml values never reach outside --------------------------------------------

def _line(key: str, value: str) -> str:
    return f'{key} = "{value}"\n'


BAD_SOURCES = {
    "file-escape": ('kind = "url"\nurl = "http://127.0.0.1:9/x"\nformat = "amazon-json"\n'
                    + _line("file", "../../../../escaped.json.gz"), "file"),
    "file-slash": ('kind = "url"\nurl = "http://127.0.0.1:9/x"\nformat = "inter"\n'
                   + _line("file", "sub/x.inter"), "file"),
    "file-hidden": ('kind = "url"\nurl = "http://127.0.0.1:9/x"\nformat = "inter"\n'
                    + _line("file", ".x.inter"), "file"),
    "file-part": ('kind = "url"\nurl = "http://127.0.0.1:9/x"\nformat = "inter"\n'
                  + _line("file", "x.inter.part"), "file"),
    "requirement-option": ('kind = "pypi-wheel"\nmember = "a/b.inter"\nfile = "b.inter"\n'
                           'format = "inter"\n'
                           + _line("requirement", "-rhttp://127.0.0.1:9/reqs.txt"),
                           "requirement"),
    "requirement-range": ('kind = "pypi-wheel"\nmember = "a/b.inter"\nfile = "b.inter"\n'
                          'format = "inter"\n' + _line("requirement", "recbole>=1"),
                          "requirement"),
    "requirement-url": ('kind = "pypi-wheel"\nmember = "a/b.inter"\nfile = "b.inter"\n'
                        'format = "inter"\n'
                        + _line("requirement", "recbole @ http://127.0.0.1:9/r.whl"),
                        "requirement"),
    "member-escape": ('kind = "pypi-wheel"\nrequirement = "recbole==1.2.1"\nfile = "b.inter"\n'
                      'format = "inter"\n' + _line("member", "../b.inter"), "member"),
    "url-file": ('kind = "url"\nfile = "x.inter"\nformat = "inter"\n'
                 + _line("url", "file:///etc/passwd"), "url"),
    "sha-not-hex": ('kind = "url"\nurl = "http://127.0.0.1:9/x"\nfile = "x.inter"\n'
                    'format = "inter"\n' + _line("sha256", "abc"), "sha256"),
    "url-without-url": ('kind = "url"\nfile = "x.inter"\nformat = "inter"\n', ""),
    "wheel-with-url": ('kind = "pypi-wheel"\nrequirement = "recbole==1.2.1"\nmember = "a/b"\n'
                       'url = "http://127.0.0.1:9/x"\nfile = "b.inter"\nformat = "inter"\n', ""),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_unsafe_registry_values_are_refused(env, capsys, monkeypatch, case):
    text, key = BAD_SOURCES[case]
    _use(env, monkeypatch, ["[[{name}.sources]]\n" + text])
    line = _one_error(*run(["download", "tiny"], capsys))
    assert str(env / "datasets.toml") in line
    assert line.endswith("tiny.sources.0" + (f".{key}" if key else ""))
    assert not (env / "data").exists()
    assert not list(env.parent.rglob("escaped.json.gz"))


def test_unsafe_dataset_name_in_registry(env, capsys, monkeypatch):
    path = env / "datasets.toml"
    path.write_text('["../evil"]\ntitle = "x"\nkcore = { user = 5, item = 5 }\n'
                    "training = { max_len = 50, dropout = 0.4 }\n"
                    + _source(DEAD + FILE, FILE, "inter", None).format(name='"../evil"'))
    monkeypatch.setenv("MATRREC_DATASETS_TOML", str(path))
    line = _one_error(*run(["download", "../evil"], capsys))
    assert "dataset name '../evil'" in line
    assert not (env / "evil").exists()
    assert not (env / "data").exists()


def test_pip_gets_the_requirement_after_double_dash(tmp_path, monkeypatch):
    import zipfile

    from matrrec_cli.data import pypi
    from matrrec_cli.data.registry import Source

    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        with zipfile.ZipFile(Path(cmd[cmd.index("-d") + 1]) / "r-1-py3-none-any.whl", "w") as zf:
            zf.writestr("r/data/x.inter", BODY)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(pypi.subprocess, "run", fake_run)
    src = Source(kind="pypi-wheel", requirement="r==1", member="r/data/x.inter", file="x.inter",
                 format="inter")
    pypi.fetch_wheel_member(src, tmp_path / "x.inter")
    cmd = seen[0]
    assert cmd[-2:] == ["--", "r==1"]
    assert all(not a.startswith("r==") for a in cmd[:-1])
    assert (tmp_path / "x.inter").read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == ["x.inter"]  # no temporary left


def test_real_pip_reads_an_option_like_requirement_as_a_requirement(tmp_path):
    """Even past the registry check, `-r URL` after `--` is not an option to pip: it fails to
    parse as a requirement and nothing is fetched from the URL."""
    from matrrec_cli.data import pypi
    from matrrec_cli.data.registry import Source
    from matrrec_cli.data.verify import SourceFailed

    site = Site(files={"/reqs.txt": b"--index-url http://127.0.0.1:9/simple\nrecbole\n"})
    with serve(site):
        src = Source.model_construct(kind="pypi-wheel", requirement=f"-r{site.base}/reqs.txt",
                                     member="a", file="a.inter", format="inter", url=None,
                                     size=None, sha256=None)
        with pytest.raises(SourceFailed, match="pip download failed"):
            pypi.fetch_wheel_member(src, tmp_path / "a.inter")
    assert site.log == []


def test_pip_timeout_is_one_line(env, capsys, monkeypatch):
    from matrrec_cli.data import pypi

    def slow(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout", 1))
    monkeypatch.setattr(pypi.subprocess, "run", slow)
    _use(env, monkeypatch, ['[[{name}.sources]]\nkind = "pypi-wheel"\n'
                            'requirement = "recbole==1.2.1"\nmember = "a/b.inter"\n'
                            'file = "b.inter"\nformat = "inter"\n'])
    line = _one_error(*run(["download", "tiny"], capsys))
    assert "pip download took more than" in line
    assert "--from-file" in line
