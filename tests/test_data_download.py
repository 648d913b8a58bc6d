"""download / --from-file / prepare through the CLI against a loopback server (no internet)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import data_dumps as dumps
import pandas as pd
import pytest
from httpserver import Site, serve

from matrrec_cli.cli import main
from matrrec_cli.data.prepared import load_interactions, load_meta

ROWS = dumps.interactions()
PAYLOADS = {"ml1m": ("ml-1m.zip", "ml1m-zip", dumps.ml1m_zip(ROWS)),
            "ml100k": ("ml-100k.zip", "ml100k-zip", dumps.ml100k_zip(ROWS)),
            "inter": ("tiny.inter", "inter", dumps.inter(ROWS)),
            "amazon": ("reviews_Tiny_5.json.gz", "amazon-json", dumps.amazon_gz(ROWS))}


def _source(url: str, file: str, fmt: str, body: bytes | None, checks: bool = True) -> str:
    lines = ['[[{name}.sources]]', 'kind = "url"', f'url = "{url}"', f'file = "{file}"',
             f'format = "{fmt}"']
    if checks and body is not None:
        lines += [f"size = {len(body)}", f'sha256 = "{hashlib.sha256(body).hexdigest()}"']
    return "\n".join(lines) + "\n"


def registry(tmp: Path, datasets: dict[str, list[str]]) -> Path:
    text = ""
    for name, sources in datasets.items():
        text += (f'[{name}]\ntitle = "{name}"\nkcore = {{ user = 5, item = 5 }}\n'
                 "training = { max_len = 50, dropout = 0.4 }\n")
        text += "".join(s.format(name=name) for s in sources)
    path = tmp / "datasets.toml"
    path.write_text(text)
    return path


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def leftovers(data: Path) -> list[str]:
    """Files that must never exist after a failure: half downloads under final names, Parquet,
    staging copies. (.part files and the per-dataset lock files may stay.)"""
    return sorted(str(p.relative_to(data)) for p in data.rglob("*")
                  if p.is_file() and not p.name.endswith((".part", ".part.json"))
                  and p.parent.name != ".locks")


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_every_format_downloads_and_prepares(env, capsys, monkeypatch, kind):
    file, fmt, body = PAYLOADS[kind]
    site = Site(files={f"/{file}": body})
    with serve(site):
        _one(env, monkeypatch, [_source(site.base + f"/{file}", file, fmt, body)])
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    df = load_interactions("tiny", env / "data")
    meta = load_meta("tiny", env / "data")
    assert meta["n_interactions"] == len(df) > 0
    assert df["user"].min() == 1
    assert df["user"].max() == meta["n_users"]
    assert df["item"].min() == 1
    assert df["item"].max() == meta["n_items"]
    assert meta["sources"][0]["sha256"] == hashlib.sha256(body).hexdigest()


def _one(env, monkeypatch, sources: list[str]) -> None:
    monkeypatch.setenv("MATRREC_DATASETS_TOML", str(registry(env, {"tiny": sources})))


def test_resume_after_cut_uses_range(env, capsys, monkeypatch):
    # big enough that several 64 KiB chunks reach the .part before the cut
    file, fmt, body = "big.inter", "inter", dumps.inter(dumps.interactions(n=40_000))
    site = Site(files={f"/{file}": body}, faults={f"/{file}": ["cut"]})
    with serve(site):
        _one(env, monkeypatch, [_source(site.base + f"/{file}", file, fmt, body)])
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log[0][1] is None, site.log
    resumed_at = int(site.log[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(body) // 2, site.log  # second request resumes the .part
    assert (env / "data/tiny/raw" / file).read_bytes() == body


def test_interrupted_part_resumes_on_next_run(env, capsys, monkeypatch):
    file, fmt, body = PAYLOADS["ml1m"]
    raw = env / "data/tiny/raw"
    raw.mkdir(parents=True)
    site = Site(files={f"/{file}": body})
    with serve(site):
        url = site.base + f"/{file}"
        # left by a killed earlier run: the bytes and the sidecar its first response wrote
        (raw / f"{file}.part").write_bytes(body[:100])
        (raw / f"{file}.part.json").write_text(json.dumps({"url": url, "total": len(body)}))
        _one(env, monkeypatch, [_source(url, file, fmt, body)])
        code, err = run(["download", "tiny"], capsys)
    assert code == 0, err
    assert site.log == [(f"/{file}", "bytes=100-")]
    assert (raw / file).read_bytes() == body
    assert not list(raw.glob("*.part*"))


@pytest.mark.parametrize("busy", ["503", "429"])
def test_busy_is_retried_then_mirror_fallback_and_idempotent(env, capsys, monkeypatch, busy):
    file, fmt, body = PAYLOADS["inter"]
    site = Site(files={f"/b/{file}": body, f"/c/{file}": body},
                faults={f"/b/{file}": [busy]})
    with serve(site):
        _one(env, monkeypatch, [_source(site.base + f"/a/{file}", file, fmt, body),
                                _source(site.base + f"/b/{file}", file, fmt, body),
                                _source(site.base + f"/c/{file}", file, fmt, body)])
        assert run(["download", "tiny"], capsys)[0] == 0
        assert [p for p, _ in site.log] == [f"/a/{file}", f"/b/{file}", f"/b/{file}"]
        assert run(["download", "tiny"], capsys)[0] == 0  # verified file: no new request
    assert len(site.log) == 3


def test_unknown_sha_is_recorded(env, capsys, monkeypatch):
    file, fmt, body = PAYLOADS["ml100k"]
    site = Site(files={f"/{file}": body})
    with serve(site):
        _one(env, monkeypatch, [_source(site.base + f"/{file}", file, fmt, body, checks=False)])
        assert run(["download", "tiny"], capsys)[0] == 0
    recorded = (env / "data/tiny/raw" / f"{file}.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(body).hexdigest()


def _fails(env, capsys, monkeypatch, sources, argv=("download", "tiny"), code=1):
    _one(env, monkeypatch, sources)
    got, err = run(list(argv), capsys)
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("matrrec: error: "), err
    assert "Traceback" not in err
    return lines[0], leftovers(env / "data") if (env / "data").exists() else []


@pytest.mark.parametrize("fault", ["wrong", "html"])
def test_bad_bytes_leave_nothing(env, capsys, monkeypatch, fault):
    file, fmt, body = PAYLOADS["amazon"]
    site = Site(files={f"/{file}": body}, faults={f"/{file}": [fault]})
    with serve(site):
        line, left = _fails(env, capsys, monkeypatch,
                            [_source(site.base + f"/{file}", file, fmt, body)])
    assert ("sha256 mismatch" if fault == "wrong" else "HTML page") in line
    assert "--from-file" in line
    assert left == []
    assert not list((env / "data").rglob("*.part"))


def test_html_page_detected_without_checksum(env, capsys, monkeypatch):
    file, fmt, body = PAYLOADS["amazon"]
    site = Site(files={f"/{file}": body}, faults={f"/{file}": ["html"]})
    with serve(site):
        line, left = _fails(env, capsys, monkeypatch,
                            [_source(site.base + f"/{file}", file, fmt, body, checks=False)])
    assert "HTML page" in line
    assert left == []


def test_all_mirrors_fail_lists_them(env, capsys, monkeypatch):
    site = Site()
    with serve(site):
        line, left = _fails(env, capsys, monkeypatch,
                            [_source(site.base + "/x/f.zip", "f.zip", "ml1m-zip", None),
                             _source("http://127.0.0.1:9/f.zip", "f.zip", "ml1m-zip", None)])
    assert "/x/f.zip (HTTP 404)" in line
    assert "127.0.0.1:9" in line
    assert "matrrec download tiny --from-file PATH" in line
    assert left == []


def test_unknown_dataset_lists_known(env, capsys, monkeypatch):
    line, _ = _fails(env, capsys, monkeypatch,
                     [_source("http://127.0.0.1:9/f", "f", "inter", None)],
                     argv=("download", "nope"))
    assert "unknown dataset 'nope'; known: tiny" in line


def test_no_name_is_usage_error(env, capsys, monkeypatch):
    _fails(env, capsys, monkeypatch, [_source("http://127.0.0.1:9/f", "f", "inter", None)],
           argv=("download",), code=2)


def _from_file(env, capsys, monkeypatch, fmt, file, bad: bytes, checks=False, body=b""):
    path = env / file
    path.write_bytes(bad)
    return _fails(env, capsys, monkeypatch,
                  [_source("http://127.0.0.1:9/" + file, file, fmt, body if checks else None,
                           checks=checks)],
                  argv=("download", "tiny", "--from-file", str(path)))


def test_from_file_checksum_mismatch(env, capsys, monkeypatch):
    _, fmt, body = PAYLOADS["amazon"]
    line, left = _from_file(env, capsys, monkeypatch, fmt, "reviews_Tiny_5.json.gz",
                            body[:-5], checks=True, body=body)
    assert "size mismatch" in line
    assert left == []


def test_truncated_gzip(env, capsys, monkeypatch):
    _, fmt, body = PAYLOADS["amazon"]
    line, left = _from_file(env, capsys, monkeypatch, fmt, "t.json.gz", body[: len(body) // 2])
    assert "truncated or corrupt" in line
    assert not [p for p in left if p.endswith(("parquet", "meta.json"))]


def test_truncated_zip(env, capsys, monkeypatch):
    _, fmt, body = PAYLOADS["ml1m"]
    line, left = _from_file(env, capsys, monkeypatch, fmt, "ml-1m.zip", body[: len(body) // 2])
    assert "truncated or corrupt zip" in line
    assert not [p for p in left if p.endswith(("parquet", "meta.json"))]


def test_malformed_json_line_named(env, capsys, monkeypatch):
    lines = dumps.amazon_lines(ROWS).splitlines(keepends=True)
    lines[6] = b'{"reviewerID": "U1", "asin": \n'
    line, left = _from_file(env, capsys, monkeypatch, "amazon-json", "r.json", b"".join(lines))
    assert "r.json: line 7: malformed line" in line
    assert not [p for p in left if p.endswith(("parquet", "meta.json"))]


def test_missing_field_named(env, capsys, monkeypatch):
    lines = dumps.amazon_lines(ROWS).splitlines(keepends=True)
    lines[3] = b'{"reviewerID": "U1", "unixReviewTime": 5}\n'
    line, _ = _from_file(env, capsys, monkeypatch, "amazon-json", "r.json", b"".join(lines))
    assert "line 4: missing field asin" in line


def test_malformed_dat_line_named(env, capsys, monkeypatch):
    import io
    import zipfile
    text = "".join(f"{u}::{i}::4::{t}\n" for u, i, t in ROWS[:50]) + "7::8::oops\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", text)
    line, _ = _from_file(env, capsys, monkeypatch, "ml1m-zip", "ml-1m.zip", buf.getvalue())
    assert "ratings.dat: line 51: malformed line" in line


def test_not_prepared_names_command(env, capsys, monkeypatch):
    _one(env, monkeypatch, [_source("http://127.0.0.1:9/f", "f", "inter", None)])
    code, err = run(["stats", "--dataset", "tiny"], capsys)
    assert code == 1
    assert "dataset 'tiny' is not prepared in" in err
    assert "run `matrrec download tiny --data-dir " in err  # the exact command, data dir too


def test_interrupted_prepare_leaves_no_parquet(env, capsys, monkeypatch):
    import matrrec_cli.data.preprocess as pp
    file, fmt, body = PAYLOADS["inter"]
    _one(env, monkeypatch, [_source("http://127.0.0.1:9/" + file, file, fmt, body)])
    (env / file).write_bytes(body)

    real_write = pp.pq.write_table
    calls = []

    def boom(*a, **k):  # the interactions file is written, then Ctrl-C during the id maps
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*a, **k)
    monkeypatch.setattr(pp.pq, "write_table", boom)
    code, _err = run(["download", "tiny", "--from-file", str(env / file)], capsys)
    assert code == 130
    left = leftovers(env / "data")
    assert not [p for p in left if p.endswith(("parquet", "meta.json")) or ".tmp" in p], left


def test_nothing_left_after_kcore_is_an_error(env, capsys, monkeypatch):
    body = dumps.inter([(1, 1, 5), (2, 2, 6)])
    line, left = _from_file(env, capsys, monkeypatch, "inter", "x.inter", body)
    assert "no interactions left after the 5/5-core filter (2 read)" in line
    assert not [p for p in left if p.endswith(("parquet", "meta.json"))]


def test_real_musical_from_file(env, capsys, musical_json, monkeypatch):
    monkeypatch.delenv("MATRREC_DATASETS_TOML", raising=False)
    code, err = run(["download", "musical", "--from-file", str(musical_json)], capsys)
    assert code == 0, err
    meta = load_meta("musical", env / "data")
    assert (meta["n_users"], meta["n_items"], meta["n_interactions"]) == (1429, 900, 10261)
    code, _ = run(["stats", "--dataset", "musical"], capsys)
    table = pd.read_csv(env / "results/table1_datasets.csv")
    assert table.loc[0, "paper_users"] == 1430
    assert table.loc[0, "users"] == 1429
