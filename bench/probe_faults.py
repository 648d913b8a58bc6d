"""Probe `matrrec` with bad inputs and faults, as a hostile user and a broken machine would.

Each case runs the CLI once (twice at the same time for the concurrency cases) in a fresh
subprocess whose cwd, HOME and TMPDIR lie in the case's own temporary root, with
MATRREC_DATA_DIR / MATRREC_RESULTS_DIR unset (only flags steer it), OMP_NUM_THREADS=1 and pip
pointed at the probe's own loopback server (no other address is ever contacted). A case starts
from a copy of a small prepared state (two tiny imported datasets with runs, or a "registered"
dataset downloaded from the loopback server), is set up to be broken, runs, and is judged:

  clean  exit status != 0 (0 where the input is legitimately fine: expect "ok"; "any" accepts
         both; "warn" wants 0 and a warning on stderr); no Python traceback; a failure ends with
         at most 2 lines starting with "matrrec: error:" (a click/typer usage box for a malformed
         option counts too; "matrrec: interrupted" for a Ctrl-C case);
         nothing half-written: no new `*.tmp` / `*.part` (unless the case is a resumable
         interrupted download), no `interactions.parquet` without `meta.json`;
         nothing lost: the case's follow-up commands (a dataset or run that worked before still
         works: `matrrec train --dataset NAME --model pop`, `matrrec report table2 ...`) succeed;
         nothing outside: no new file outside the data, results, HOME and TMPDIR of the case;
         a case's own check (a download that succeeds must give the right bytes, a hostile
         datasets.toml must not steer pip, ...).

The probe runs as root here, so chmod cannot make a directory read-only: "unwritable" is modelled
by a file where a directory is expected, a path under a file, over-long paths and RLIMIT_FSIZE (a
full disk). Classes: 1 reprepare, 2 download, 3 state, 4 dirs, 5 options, 6 import, 7 toml.

Usage: python bench/probe_faults.py --out /tmp/probe.json [--only CLASS] [--matrrec CMD]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = {"1": "reprepare", "2": "download", "3": "state", "4": "dirs", "5": "options",
           "6": "import", "7": "toml"}
TIMEOUT_S = 120

# --------------------------------------------------------------------------------------------
# Input files: tiny synthetic datasets (30 users x 8 interactions over 20 items: all survive the
# 5-core filter) in the formats the CLI reads.


def rows(seed: int, users: int = 30, per: int = 8, items: int = 20) -> list[tuple[str, str, int]]:
    rnd = random.Random(seed)
    return [(f"u{u}", f"i{rnd.randrange(items)}", 1_000_000 + u * 100 + j)
            for u in range(users) for j in range(per)]


def csv_bytes(data: list[tuple], header: str = "user,item,timestamp", sep: str = ",") -> bytes:
    lines = [header] + [sep.join(str(v) for v in r) for r in data]
    return ("\n".join(lines) + "\n").encode()


INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def inter_bytes(data: list[tuple], header: str = INTER_HEADER) -> bytes:
    lines = [header] + [f"{u}\t{i}\t5\t{t}" for u, i, t in data]
    return ("\n".join(lines) + "\n").encode()


def with_ts(data: list[tuple], at: int, value: object) -> list[tuple]:
    out = list(data)
    out[at] = (*out[at][:2], value)
    return out


TINY, TINY2, REMOTE = rows(1), rows(2), rows(3)
GOOD_INTER = inter_bytes(REMOTE)
GOOD_SHA = hashlib.sha256(GOOD_INTER).hexdigest()
HTML = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"

# --------------------------------------------------------------------------------------------
# The loopback HTTP server: one good file, served with a fault chosen by the URL path
# /<fault>/<case id>/<file>. Every request is logged (path, Range header).


class Site:
    def __init__(self) -> None:
        self.log: list[tuple[str, str | None]] = []
        self.hits: dict[str, int] = {}
        self.base = ""
        self.server: Server | None = None

    def requests_for(self, token: str, since: int = 0) -> list[str]:
        return [p for p, _ in list(self.log)[since:] if token in p]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-body is part of the probe


class Handler(BaseHTTPRequestHandler):
    site: Site  # set on a subclass by serve()
    timeout = 15  # a stuck client never keeps a server thread for long

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(code)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        site, body = self.site, GOOD_INTER
        rng = self.headers.get("Range")
        site.log.append((self.path, rng))
        n = site.hits[self.path] = site.hits.get(self.path, 0) + 1
        fault = self.path.split("/")[1]
        start = int(rng.removeprefix("bytes=").split("-")[0] or 0) if rng else 0
        rest = body[start:]
        crange = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        if fault in ("404", "500"):
            return self._send(int(fault), b"no", length=2)
        if fault == "html":
            return self._send(200, HTML, {"Content-Type": "text/html"}, len(HTML))
        if fault == "busyonce" and n == 1:
            return self._send(503, b"busy", length=4)
        if fault == "loop":
            return self._send(302, b"", {"Location": self.path}, 0)
        if fault == "empty":
            return self._send(200, b"", length=0)
        if fault == "nolen":  # HTTP/1.0 body ended by closing the connection, cut in the middle
            return self._send(200, body[: len(body) // 2])
        if fault == "longlen":
            return self._send(200, body, length=len(body) + 100)
        if fault == "gzipbogus":
            return self._send(200, body, {"Content-Encoding": "gzip"}, len(body))
        if fault == "ignorerange":
            return self._send(200, body, length=len(body))
        if rng and start >= len(body):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"}, 0)
        code, head = (206, crange) if rng else (200, {})
        if fault == "badrange" and rng:  # claims and sends the whole file on a resume
            return self._send(206, body, {"Content-Range": f"bytes 0-{len(body) - 1}/"
                                                           f"{len(body)}"}, len(body))
        if fault == "gzip":
            packed = gzip.compress(rest)
            return self._send(code, packed, {**head, "Content-Encoding": "gzip"}, len(packed))
        if fault == "cut" or (fault == "cutonce" and n == 1):
            self._send(code, rest[: len(rest) // 2], head, len(rest))
            self.close_connection = True
            return None
        if fault == "slow":
            self.send_response(code)
            self.send_header("Content-Length", str(len(rest)))
            for k, v in head.items():
                self.send_header(k, v)
            self.end_headers()
            step = max(1, len(rest) // 12)
            try:
                for i in range(0, len(rest), step):
                    self.wfile.write(rest[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:  # the client went away (Ctrl-C case)
                pass
            return None
        if fault in ("ok", "cutonce", "busyonce", "badrange"):
            return self._send(code, rest, head, len(rest))
        return self._send(404, b"no", length=2)  # pip's index (/simple/...) and anything else


def serve() -> Site:
    site = Site()
    handler = type("BoundHandler", (Handler,), {"site": site})
    server = Server(("127.0.0.1", 0), handler)
    site.server = server
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return site


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Ctx:
    """Where one case runs: root/jail/{cwd,in,home,tmp}, root/outside (a canary directory)."""

    root: Path
    site: Site
    cid: str
    log_start: int = 0  # the server's requests before this case

    @property
    def jail(self) -> Path:
        return self.root / "jail"

    @property
    def cwd(self) -> Path:
        return self.jail / "cwd"

    @property
    def inp(self) -> Path:
        return self.jail / "in"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def url(self, fault: str, file: str = "remote.inter") -> str:
        return f"{self.site.base}/{fault}/{self.cid}/{file}"

    def run_dir(self, dataset: str, model: str) -> str:
        found = sorted((self.cwd / "results" / "runs" / dataset / model).glob("2*"))
        return str(found[0].relative_to(self.cwd)) if found else f"results/runs/{dataset}/{model}/-"

    def sub(self, arg: str) -> str:
        for key, value in (("{in}", str(self.inp)), ("{outside}", str(self.outside)),
                           ("{cwd}", str(self.cwd)), ("{url}", self.site.base)):
            arg = arg.replace(key, value)
        if "{gru}" in arg:
            arg = arg.replace("{gru}", self.run_dir("tiny", "gru4rec"))
        if "{pop}" in arg:
            arg = arg.replace("{pop}", self.run_dir("tiny", "pop"))
        return arg


Setup = Callable[[Ctx], None]
Check = Callable[[Ctx, list["Proc"]], list[str]]


@dataclass
class Case:
    cls: str
    name: str
    args: list[str]
    expect: str = "fail"  # fail | ok | any | warn | interrupt
    base: str = "data"  # none | data (tiny, tiny2 imported, runs) | dl (ml-100k downloaded)
    setup: Setup | None = None
    after: list[list[str]] = field(default_factory=list)  # must exit 0 afterwards
    check: Check | None = None
    toml: Callable[[Ctx], str] | None = None  # a datasets.toml for this case
    part_ok: bool = False  # a resumable .part may stay (interrupted download)
    allow: tuple[str, ...] = ()  # more cwd-relative roots where new files are fine
    env: dict[str, str] = field(default_factory=dict)
    limits: dict[int, int] = field(default_factory=dict)  # RLIMIT_* -> soft and hard limit
    timeout: int = TIMEOUT_S
    twice: bool = False  # the command twice, concurrently
    interrupt: bool = False  # Ctrl-C once its download has started
    broken_stdout: bool = False
    cwd_gone: bool = False


@dataclass
class Proc:
    rc: int
    out: str
    err: str
    timed_out: bool = False


# Building blocks for setups


def steps(*fns: Setup) -> Setup:
    def run(ctx: Ctx) -> None:
        for fn in fns:
            fn(ctx)
    return run


def put(rel: str, data: bytes | str, base: str = "in") -> Setup:
    """Write a file under jail/in (base "in") or under cwd (base "cwd")."""
    def run(ctx: Ctx) -> None:
        path = (ctx.inp if base == "in" else ctx.cwd) / ctx.sub(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.write_bytes(ctx.sub(data).encode() if isinstance(data, str) else data)
    return run


def mkdir(rel: str) -> Setup:
    def run(ctx: Ctx) -> None:
        path = ctx.cwd / ctx.sub(rel)
        if path.exists() and not path.is_dir():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
    return run


def remove(rel: str) -> Setup:
    def run(ctx: Ctx) -> None:
        path = ctx.cwd / ctx.sub(rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return run


def mangle(rel: str, how: str) -> Setup:
    """Corrupt cwd/rel: empty, half (truncated), junk (random bytes), tail (last bytes changed),
    torn (last line cut in the middle)."""
    def run(ctx: Ctx) -> None:
        path = ctx.cwd / ctx.sub(rel)
        data = path.read_bytes()
        new = {"empty": b"", "half": data[: len(data) // 2],
               "junk": random.Random(7).randbytes(max(64, len(data))),
               "tail": data[:-8] + b"\xff" * 8,
               "torn": data.rstrip(b"\n")[:-7]}[how]
        path.write_bytes(new)
    return run


def edit_json(rel: str, fn: Callable[[dict], object]) -> Setup:
    def run(ctx: Ctx) -> None:
        path = ctx.cwd / ctx.sub(rel)
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))
    return run


def parquet(rel: str, columns: dict[str, object], base: str = "in") -> Setup:
    def run(ctx: Ctx) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = (ctx.inp if base == "in" else ctx.cwd) / ctx.sub(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
    return run


def copy(src: str, dst: str) -> Setup:
    def run(ctx: Ctx) -> None:
        shutil.copyfile(ctx.cwd / ctx.sub(src), ctx.cwd / ctx.sub(dst))
    return run


def symlink_loop(rel: str) -> Setup:
    def run(ctx: Ctx) -> None:
        shutil.rmtree(ctx.cwd / rel)
        (ctx.cwd / rel).symlink_to(Path(rel).name)
    return run


def dangling(rel: str, target: str) -> Setup:
    def run(ctx: Ctx) -> None:
        path = ctx.cwd / rel
        path.unlink(missing_ok=True)
        path.symlink_to(ctx.sub(target))
    return run


def plant_part(rel: str, data: bytes) -> Setup:
    return put(rel, data, base="cwd")


def raw_is_good(rel: str = "data/remote/raw/remote.inter", always: bool = False) -> Check:
    """A download that exits 0 (or its retry, `always`) must have given exactly the served file,
    and a prepared dataset."""
    def run(ctx: Ctx, procs: list[Proc]) -> list[str]:
        if not always and not any(p.rc == 0 for p in procs):
            return []
        path = ctx.cwd / rel
        if not path.is_file():
            return [f"no {rel} after a download that exited 0"]
        if path.read_bytes() != GOOD_INTER:
            return [f"wrong bytes in {rel} after exit 0 ({path.stat().st_size} bytes, the "
                    f"served file has {len(GOOD_INTER)})"]
        meta = path.parent.parent / "meta.json"
        if not meta.is_file():
            return ["no meta.json after a download that exited 0"]
        n = json.loads(meta.read_text()).get("n_raw_interactions")
        return [] if n == len(REMOTE) else [f"prepared {n} interactions, the file has "
                                            f"{len(REMOTE)}"]
    return run


def no_request(token: str) -> Check:
    def run(ctx: Ctx, procs: list[Proc]) -> list[str]:
        hits = ctx.site.requests_for(token, ctx.log_start)
        return [f"the hostile datasets.toml steered pip: GET {hits[0]}"] if hits else []
    return run


def no_path(rel: str) -> Check:
    def run(ctx: Ctx, procs: list[Proc]) -> list[str]:
        path = Path(ctx.sub(rel))
        path = path if path.is_absolute() else ctx.cwd / path
        return [f"created {path}"] if path.exists() else []
    return run


def dataset_rows(name: str, n: int) -> Check:
    """meta.json of `name` records n raw interactions (what was imported is what is there)."""
    def run(ctx: Ctx, procs: list[Proc]) -> list[str]:
        if not any(p.rc == 0 for p in procs):
            return []
        meta = ctx.cwd / "data" / name / "meta.json"
        got = json.loads(meta.read_text()).get("n_raw_interactions") if meta.is_file() else None
        return [] if got == n else [f"exit 0 but {name} holds {got} raw interactions, not {n}"]
    return run


# datasets.toml for the download cases: ml-100k (prepared in the "dl" state, verified) and
# "remote" whose source is the case's URL.


def toml_for(remote: str | Callable[[Ctx], str] = "", *, sha: bool = True, ml_sha: bool = True,
             file: str = "remote.inter", fmt: str = "inter", extra: str = "",
             remote_name: str = "remote") -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        url = remote(ctx) if callable(remote) else ctx.url(remote or "ok")
        check = f'sha256 = "{GOOD_SHA}"\nsize = {len(GOOD_INTER)}\n'
        ml = f"{ctx.site.base}/ok/tpl/ml-100k.inter"
        return (
            '[ml-100k]\ntitle = "ml"\nkcore = { user = 5, item = 5 }\n'
            'training = { max_len = 50, dropout = 0.4 }\n'
            f'[[ml-100k.sources]]\nkind = "url"\nurl = "{ml}"\nfile = "ml-100k.inter"\n'
            f'format = "inter"\n{check if ml_sha else ""}\n'
            f'["{remote_name}"]\ntitle = "remote"\nkcore = {{ user = 5, item = 5 }}\n'
            'training = { max_len = 50, dropout = 0.4 }\n'
            f'[["{remote_name}".sources]]\nkind = "url"\nurl = "{url}"\nfile = "{file}"\n'
            f'format = "{fmt}"\n{check if sha else ""}{ctx.sub(extra)}\n')
    return make


def raw_toml(text: str) -> Callable[[Ctx], str]:
    return lambda ctx: ctx.sub(text)


IMPORT = ["import", "tiny", "--format", "table", "--from-file"]
NEW = ["import", "newds", "--format", "table", "--from-file"]
POP = ["train", "--dataset", "tiny", "--model", "pop"]
POP_ML = ["train", "--dataset", "ml-100k", "--model", "pop"]
GRU = ["train", "--dataset", "tiny", "--model", "gru4rec", "--epochs", "1", "--set",
       "hidden_size=8"]
GRU_RESUME = ["train", "--dataset", "tiny", "--model", "gru4rec", "--set", "hidden_size=8",
              "--set", "embedding_size=8", "--set", "stopping_step=2", "--resume"]
MAT = ["train", "--dataset", "tiny", "--model", "matrrec", "--epochs", "1", "--set",
       "hidden_size=8", "--set", "inner_size=16", "--set", "d_state=4"]
TABLE2_OTHER = ["report", "table2", "--dataset", "tiny2"]
DL = ["download", "remote"]
GRU_RUN = "{gru}"
UNFINISH = remove(f"{GRU_RUN}/metrics.json")


def c_reprepare() -> list[Case]:
    """1. Re-preparing over a working dataset with a bad file: the old dataset must still work."""
    c = "reprepare"
    tiny = ["{in}/tiny.csv"]
    keep = [POP]
    cases = [
        Case(c, "import over tiny: missing column", [*IMPORT, "{in}/bad.csv"],
             setup=put("bad.csv", csv_bytes(TINY, "user,item,when")), after=keep),
        Case(c, "import over tiny: timestamp not a number", [*IMPORT, "{in}/bad.csv"],
             setup=put("bad.csv", csv_bytes(with_ts(TINY, 7, "soon"))), after=keep),
        Case(c, "import over tiny: --kcore 50 empties it", [*IMPORT, *tiny, "--kcore", "50"],
             after=keep),
        Case(c, "import over tiny: --kcore -1", [*IMPORT, *tiny, "--kcore", "-1"], after=keep),
        Case(c, "import over tiny: empty file", [*IMPORT, "{in}/bad.csv"],
             setup=put("bad.csv", b""), after=keep),
        Case(c, "import over tiny: 3 rows, 5-core leaves none", [*IMPORT, "{in}/bad.csv"],
             setup=put("bad.csv", csv_bytes(TINY[:3])), after=keep),
        Case(c, "import over tiny: CSV read as --format seq",
             ["import", "tiny", "--format", "seq", "--from-file", *tiny], after=keep),
        Case(c, "import over tiny: corrupt Parquet", [*IMPORT, "{in}/bad.parquet"],
             setup=put("bad.parquet", b"PAR1" + bytes(100) + b"PAR1"), after=keep),
        Case(c, "import over tiny: --max-len -3", [*IMPORT, *tiny, "--max-len", "-3"],
             after=keep),
        Case(c, "import over tiny: --dropout 5", [*IMPORT, *tiny, "--dropout", "5"], after=keep),
        Case(c, "import over tiny: no such file", [*IMPORT, "{in}/nosuch.csv"], after=keep),
        Case(c, "import over tiny: the same file again", [*IMPORT, *tiny], "ok", after=keep,
             check=dataset_rows("tiny", len(TINY))),
        Case(c, "import over tiny: other good data", [*IMPORT, "{in}/tiny2.csv"], "ok",
             after=keep, check=dataset_rows("tiny", len(TINY2))),
    ]
    ml_keep = [POP_ML, ["download", "ml-100k"]]  # the prepared data and the raw dump survive
    unverified = toml_for(ml_sha=False)
    bad_inter = inter_bytes(TINY)[:-30] + b"u9\tnot\ta\tnumber\tat all\n"
    for name, data in (("malformed line", bad_inter), ("HTML page", HTML), ("empty file", b""),
                       ("3 rows, 5-core leaves none", inter_bytes(TINY[:3])),
                       ("invalid UTF-8", inter_bytes(TINY).replace(b"u1\t", b"\xff\xfe\t")),
                       ("header lacks timestamp", inter_bytes(TINY, INTER_HEADER.replace(
                           "timestamp", "time")))):
        cases.append(Case(c, f"download ml-100k --from-file over prepared: {name} (unverified)",
                          ["download", "ml-100k", "--from-file", "{in}/bad.inter"], base="dl",
                          toml=unverified, setup=put("bad.inter", data), after=ml_keep))
    cases += [
        Case(c, "download ml-100k --from-file over prepared: wrong sha256",
             ["download", "ml-100k", "--from-file", "{in}/bad.inter"], base="dl",
             toml=toml_for(), setup=put("bad.inter", inter_bytes(TINY)), after=ml_keep),
        Case(c, "download ml-100k --from-file the same verified file", [
            "download", "ml-100k", "--from-file", "{in}/good.inter"], "ok", base="dl",
             toml=toml_for(), setup=put("good.inter", GOOD_INTER), after=ml_keep),
        Case(c, "download ml-100k --timestamp-order recbole over prepared",
             ["download", "ml-100k", "--timestamp-order", "recbole"], "ok", base="dl",
             toml=toml_for(), after=ml_keep),
    ]
    return cases


def c_download() -> list[Case]:
    """2. Downloads from the loopback server with faults."""
    c = "download"
    part = "data/remote/raw/remote.inter.part"
    good = raw_is_good()
    retry = [DL]  # a later plain download must still work, and give the right file
    retried = raw_is_good(always=True)
    head = GOOD_INTER[:100]
    junk = random.Random(3).randbytes(100)

    def dl(name: str, fault: str, expect: str = "fail", sha: bool = True, check: Check = good,
           **kw: object) -> Case:
        return Case(c, name, DL, expect, base="dl", toml=toml_for(fault, sha=sha), check=check,
                    **kw)  # type: ignore[arg-type]

    return [
        dl("plain download (control)", "ok", "ok"),
        dl("body cut, no Content-Length (verified)", "nolen"),
        dl("body cut, no Content-Length (unverified)", "nolen", "warn", sha=False),
        dl("body cut once, resumed with Range", "cutonce", "ok"),
        dl("body cut on every try", "cut", part_ok=True),
        dl("206 with the wrong Content-Range on resume (verified)", "badrange", "any",
           setup=plant_part(part, head), after=retry, check=retried),
        dl("206 with the wrong Content-Range on resume (unverified)", "badrange", "any",
           sha=False, setup=plant_part(part, head)),
        dl("gzip Content-Encoding (verified)", "gzip", "ok"),
        dl("gzip Content-Encoding, resumed from a .part", "gzip", "any",
           setup=plant_part(part, head), after=retry, check=retried),
        dl("Content-Encoding gzip on plain bytes", "gzipbogus", "any"),
        dl("garbage .part left beforehand (verified)", "ok", "any",
           setup=plant_part(part, junk), after=retry, check=retried),
        dl("garbage .part left beforehand (unverified)", "ok", "any", sha=False,
           setup=plant_part(part, junk)),
        dl("garbage .part longer than the file", "ok", "any",
           setup=plant_part(part, junk * 100), after=retry, check=retried),
        dl("good .part, server ignores Range", "ignorerange", "ok",
           setup=plant_part(part, head)),
        dl("HTML error page with 200 (verified)", "html"),
        dl("HTTP 404", "404"),
        dl("HTTP 500 on every try", "500"),
        dl("HTTP 503 once, then the file", "busyonce", "ok"),
        dl("redirect loop", "loop"),
        dl("empty 200 body (unverified)", "empty", sha=False),
        Case(c, "connection refused", DL, base="dl", toml=toml_for(
            lambda ctx: f"http://127.0.0.1:{free_port()}/remote.inter")),
        Case(c, "first mirror serves HTML, second the file", DL, "ok", base="dl", check=good,
             toml=toml_for("html", extra=f'[["remote".sources]]\nkind = "url"\n'
                           'url = "{url}/ok/b/remote.inter"\nfile = "remote.inter"\n'
                           f'format = "inter"\nsha256 = "{GOOD_SHA}"\n')),
        Case(c, "truncated raw file (sha256 recorded) reused, not prepared",
             ["download", "ml-100k"], "any", base="dl", toml=toml_for(),
             setup=steps(mangle("data/ml-100k/raw/ml-100k.inter", "half"),
                         remove("data/ml-100k/meta.json"),
                         remove("data/ml-100k/interactions.parquet")),
             check=raw_is_good("data/ml-100k/raw/ml-100k.inter")),
        Case(c, "truncated raw file reused for a re-prepare (recbole order)",
             ["download", "ml-100k", "--timestamp-order", "recbole"], "any", base="dl",
             toml=toml_for(), setup=mangle("data/ml-100k/raw/ml-100k.inter", "half"),
             check=raw_is_good("data/ml-100k/raw/ml-100k.inter")),
        Case(c, "two concurrent downloads of one dataset (verified)", DL, "ok", base="dl",
             toml=toml_for("slow"), twice=True, check=good),
        Case(c, "two concurrent downloads of one dataset (unverified)", DL, "ok", base="dl",
             toml=toml_for("slow", sha=False), twice=True, check=good),
        Case(c, "Ctrl-C during the download, then again", DL, "interrupt", base="dl",
             toml=toml_for("slow"), interrupt=True, part_ok=True, after=retry, check=retried),
    ]


def c_state() -> list[Case]:
    """3. Corrupt prepared data and run records."""
    c = "state"
    meta, inter = "data/tiny/meta.json", "data/tiny/interactions.parquet"
    ids = list(range(1, 31))
    cases = []
    for how in ("empty", "junk"):
        cases.append(Case(c, f"meta.json {how} -> train", POP, setup=mangle(meta, how)))
    cases += [
        Case(c, "meta.json {} -> train", POP, setup=put(meta, "{}", "cwd")),
        Case(c, "meta.json empty -> stats --dataset tiny", ["stats", "--dataset", "tiny"],
             setup=mangle(meta, "empty")),
        Case(c, "meta.json empty -> stats (every dataset)", ["stats"], "any",
             setup=mangle(meta, "empty")),
        Case(c, "meta.json n_items too small -> train gru4rec", GRU,
             setup=edit_json(meta, lambda m: {**m, "n_items": 3})),
        Case(c, "meta.json is a directory -> train", POP, setup=mkdir(meta)),
    ]
    for how in ("half", "junk"):
        cases.append(Case(c, f"interactions.parquet {how} -> train", POP,
                          setup=mangle(inter, how)))
    cases += [
        Case(c, "interactions.parquet without timestamp column -> train", POP,
             setup=parquet(inter, {"user": ids, "item": ids}, "cwd")),
        Case(c, "interactions.parquet with 0 rows -> train", POP,
             setup=parquet(inter, {"user": [], "item": [], "timestamp": []}, "cwd")),
        Case(c, "interactions.parquet item ids beyond n_items -> train gru4rec", GRU,
             setup=parquet(inter, {"user": sorted(ids * 8), "item": [99] * 240,
                                   "timestamp": list(range(240))}, "cwd")),
        Case(c, "interactions.parquet is a directory -> train", POP, setup=mkdir(inter)),
        Case(c, "interactions.parquet half -> re-import repairs it", [*IMPORT, "{in}/tiny.csv"],
             "ok", setup=mangle(inter, "half"), after=[POP]),
        Case(c, "ml-100k .sha256 empty -> download", ["download", "ml-100k"], "any", base="dl",
             toml=toml_for(), setup=mangle("data/ml-100k/raw/ml-100k.inter.sha256", "empty"),
             after=[POP_ML]),
        Case(c, "ml-100k meta.json {} -> download", ["download", "ml-100k"], "ok", base="dl",
             toml=toml_for(), setup=put("data/ml-100k/meta.json", "{}", "cwd"),
             after=[POP_ML]),
    ]
    run = GRU_RUN
    other = [TABLE2_OTHER]
    evaluate = ["evaluate", run]
    cases += [
        Case(c, "metrics.json {} -> report table2 --dataset tiny2", TABLE2_OTHER, "ok",
             setup=put(f"{run}/metrics.json", "{}", "cwd")),
        Case(c, "metrics.json {} -> report table2 (all)", ["report", "table2"], "any",
             setup=put(f"{run}/metrics.json", "{}", "cwd"), after=other),
        Case(c, "metrics.json torn -> report table2 --dataset tiny2", TABLE2_OTHER, "ok",
             setup=mangle(f"{run}/metrics.json", "torn")),
        Case(c, "metrics.json {} -> evaluate", evaluate, "any",
             setup=put(f"{run}/metrics.json", "{}", "cwd"), after=other),
        Case(c, "config.json {} -> evaluate", evaluate, setup=put(f"{run}/config.json", "{}",
                                                                  "cwd"), after=other),
        Case(c, "config.json {} -> report table2 --dataset tiny2", TABLE2_OTHER, "ok",
             setup=put(f"{run}/config.json", "{}", "cwd")),
        Case(c, "history.jsonl torn line -> train --resume", GRU_RESUME, "any",
             setup=steps(UNFINISH, mangle(f"{run}/history.jsonl", "torn")), after=other),
        Case(c, "ranks.parquet half -> report significance --dataset tiny",
             ["report", "significance", "--dataset", "tiny"], "any",
             setup=mangle(f"{run}/ranks.parquet", "half"), after=other),
        Case(c, "ranks.parquet half -> report breakdown --dataset tiny",
             ["report", "breakdown", "--dataset", "tiny"], "any",
             setup=mangle(f"{run}/ranks.parquet", "half"), after=other),
    ]
    for how in ("junk", "half"):
        cases.append(Case(c, f"best.pt {how} -> evaluate", evaluate,
                          setup=mangle(f"{run}/best.pt", how), after=other))
    cases += [
        Case(c, "best.pt missing -> evaluate", evaluate, setup=remove(f"{run}/best.pt"),
             after=other),
        Case(c, "best.pt of another model -> evaluate", evaluate,
             setup=copy("{pop}/best.pt", f"{run}/best.pt"), after=other),
    ]
    for how in ("junk", "empty"):
        cases.append(Case(c, f"last.pt {how} -> train --resume", GRU_RESUME, "any",
                          setup=steps(UNFINISH, mangle(f"{run}/last.pt", how)), after=other))
    cases += [
        Case(c, "stray directory among runs -> report table2", ["report", "table2"], "ok",
             setup=mkdir("results/runs/tiny/gru4rec/junk")),
        Case(c, "run with metrics.json but no config.json -> report table2",
             ["report", "table2"], "any", setup=remove(f"{run}/config.json"), after=other),
        Case(c, "results/table2_overall.csv corrupt -> report table2", ["report", "table2"],
             "ok", setup=steps(put("results/table2_overall.csv", b"\xff\x00,\"\n\"", "cwd"))),
    ]
    return cases


def c_dirs() -> list[Case]:
    """4. Unwritable or odd directories (as root: files where directories should be), a full
    disk (RLIMIT_FSIZE), few file descriptors, a deleted cwd, a broken stdout."""
    c = "dirs"
    afile = put("afile", "not a directory", "cwd")
    long1 = "x" * 300
    deep = "/".join(["d" * 200] * 22)  # > PATH_MAX (4096)
    fine = "/".join(["d" * 200] * 6)
    fsize, fsize_train = {resource.RLIMIT_FSIZE: 600}, {resource.RLIMIT_FSIZE: 8000}
    return [
        Case(c, "--results-dir is a file: train", [*POP, "--results-dir", "afile"], setup=afile),
        Case(c, "--results-dir is a file: report table2",
             ["report", "table2", "--results-dir", "afile"], setup=afile),
        Case(c, "--data-dir is a file: train", [*POP, "--data-dir", "afile"], setup=afile),
        Case(c, "--data-dir is a file: import", [*NEW, "{in}/tiny.csv", "--data-dir", "afile"],
             setup=afile),
        Case(c, "--results-dir under a file: train", [*POP, "--results-dir", "afile/sub"],
             setup=afile),
        Case(c, "data/newds is a file: import", [*NEW, "{in}/tiny.csv"], "any",
             setup=put("data/newds", "x", "cwd")),
        Case(c, "data/remote/raw is a file: download", DL, base="dl", toml=toml_for(),
             setup=put("data/remote/raw", "x", "cwd")),
        Case(c, "results/runs is a file: train", POP, setup=put("results/runs", "x", "cwd")),
        Case(c, "results/runs is a file: report table2", ["report", "table2"],
             setup=put("results/runs", "x", "cwd")),
        Case(c, "results/runs/.locks is a file: train", POP,
             setup=put("results/runs/.locks", "x", "cwd")),
        Case(c, "results/table2_overall.csv is a directory: report table2",
             ["report", "table2"], setup=mkdir("results/table2_overall.csv")),
        Case(c, "results/table1_datasets.csv is a directory: stats", ["stats"],
             setup=mkdir("results/table1_datasets.csv")),
        Case(c, "results/table2_overall.csv a dangling symlink out: report table2",
             ["report", "table2"], "any", setup=dangling("results/table2_overall.csv",
                                                        "{outside}/written")),
        Case(c, "data/tiny is a symlink loop: train", POP,
             setup=symlink_loop("data/tiny")),
        Case(c, "300-character path component: import",
             [*NEW, "{in}/tiny.csv", "--data-dir", long1]),
        Case(c, "path longer than PATH_MAX: import", [*NEW, "{in}/tiny.csv", "--data-dir", deep]),
        Case(c, "long but valid path (1.2 kB): import",
             [*NEW, "{in}/tiny.csv", "--data-dir", fine], "ok", allow=(fine,)),
        Case(c, "disk full (RLIMIT_FSIZE): import", [*NEW, "{in}/tiny.csv"], limits=fsize),
        Case(c, "disk full (RLIMIT_FSIZE): re-import over tiny", [*IMPORT, "{in}/tiny2.csv"],
             limits=fsize, after=[POP]),
        Case(c, "disk full (RLIMIT_FSIZE): train gru4rec", GRU, limits=fsize_train,
             after=[["report", "table2", "--dataset", "tiny"]]),
        Case(c, "disk full (RLIMIT_FSIZE): report table2", ["report", "table2"],
             limits={resource.RLIMIT_FSIZE: 100}, after=[TABLE2_OTHER]),
        Case(c, "disk full (RLIMIT_FSIZE): download", DL, base="dl", toml=toml_for(),
             limits=fsize, part_ok=True),
        Case(c, "16 file descriptors: train", POP, "any",
             limits={resource.RLIMIT_NOFILE: 16}),
        Case(c, "cwd deleted: train", POP, cwd_gone=True),
        Case(c, "cwd deleted: stats", ["stats"], cwd_gone=True),
        Case(c, "stdout is a closed pipe: report table2 --markdown",
             ["report", "table2", "--markdown"], "any", broken_stdout=True),
        Case(c, "HOME is a file: train", POP, "ok", env={"HOME": "{cwd}/afile"}, setup=afile),
    ]


def c_options() -> list[Case]:
    """5. Bad option values."""
    c = "options"

    def gru(*extra: str, expect: str = "fail") -> Case:
        return Case(c, f"train {' '.join(extra)}", [*GRU, *extra], expect)

    cases = [
        gru("--seed", "-1", expect="any"),
        gru("--seed", "4294967296", expect="any"),
    ]
    for value in ("nan", "inf", "-1"):
        cases.append(gru("--set", f"lr={value}"))
    for kv in ("hidden_size=0", "hidden_size=-3", "batch_size=0", "nosuchkey=1", "lr"):
        cases.append(gru("--set", kv))
    cases += [
        gru("--epochs", "0", expect="any"),
        gru("--dropout", "5"),
        gru("--max-len", "-3"),
        gru("--max-len", "1000000000000"),
        gru("--device", "cuda", expect="any"),
        gru("--device", "tpu"),
        Case(c, "train --model nosuch", [*POP[:4], "nosuch"]),
        Case(c, "train matrrec --set d_state=0", [*MAT, "--set", "d_state=0"]),
        Case(c, "import --max-len -3", [*NEW, "{in}/tiny.csv", "--max-len", "-3"]),
        Case(c, "import --dropout 5", [*NEW, "{in}/tiny.csv", "--dropout", "5"]),
        Case(c, "import --sep ''", [*NEW, "{in}/tiny.csv", "--sep", ""]),
    ]
    for name in ("a/b", "../evil", "n" * 300, ""):
        label = name if len(name) < 20 else f"{len(name)} characters"
        cases.append(Case(c, f"train --dataset {label!r}",
                          ["train", "--model", "pop", f"--dataset={name}"]))
    cases += [
        Case(c, "import '../evil'", ["import", "../evil", "--format", "table", "--from-file",
                                     "{in}/tiny.csv"], check=no_path("evil")),
        Case(c, "stats --dataset ../evil", ["stats", "--dataset", "../evil"]),
    ]
    for seeds in ("0", "a", "1,1"):
        cases.append(Case(c, f"train --seeds {seeds}", [*POP, "--seeds", seeds]))
    sweep = ["sweep", "--dataset", "tiny", "--model", "pop"]
    cases += [
        Case(c, "sweep dropout abc", [*sweep, "dropout", "abc"]),
        Case(c, "sweep dropout 5", [*sweep, "dropout", "5"]),
        Case(c, "sweep with --set tag=../../../evil",
             [*sweep, "dropout", "0.1", "--set", "tag=../../../evil"], "any"),
        Case(c, "tune --grid lr=", ["tune", "--dataset", "tiny", "--model", "pop", "--grid",
                                    "lr="]),
        Case(c, "tune --grid nosuch=1", ["tune", "--dataset", "tiny", "--model", "pop",
                                         "--grid", "nosuch=1"]),
        Case(c, "report breakdown --dataset nosuch", ["report", "breakdown", "--dataset",
                                                      "nosuch"]),
        Case(c, "evaluate /nonexistent", ["evaluate", "/nonexistent"]),
        Case(c, "evaluate a directory that is not a run", ["evaluate", "results"]),
    ]
    return cases


def c_import() -> list[Case]:
    """6. Import inputs."""
    c = "import"

    def imp(name: str, file: str, data: bytes | Setup, expect: str = "fail",
            fmt: str = "table", **kw: object) -> Case:
        setup = data if callable(data) else put(file, data)
        path = file if file.startswith("/") else f"{{in}}/{file}"
        return Case(c, name, ["import", "newds", "--format", fmt, "--from-file", path], expect,
                    base="none", setup=setup,
                    check=dataset_rows("newds", len(TINY)) if expect == "ok" else None,
                    **kw)  # type: ignore[arg-type]

    ts = {"inf": "inf", "NaN": "NaN", "empty": "", "1e19 (> 2^63)": "1e19",
          "9223372036854775808 (2^63)": "9223372036854775808", "a date": "2020-01-01"}
    cases = [imp(f"CSV timestamp {k}", "t.csv", csv_bytes(with_ts(TINY, 5, v)))
             for k, v in ts.items()]
    n = len(TINY)
    users = sorted(f"u{i}" for i in range(30)) * 8
    cases += [
        imp("CSV timestamp negative", "t.csv",
            csv_bytes([(u, i, -t) for u, i, t in TINY]), "ok"),
        imp("CSV invalid UTF-8", "t.csv", csv_bytes(TINY).replace(b"u3,", b"\xff\xfe,")),
        imp("CSV with a UTF-8 BOM", "t.csv", b"\xef\xbb\xbf" + csv_bytes(TINY), "any"),
        imp("CSV with CRLF line ends", "t.csv", csv_bytes(TINY).replace(b"\n", b"\r\n"), "ok"),
        imp("CSV null user field", "t.csv", csv_bytes(TINY).replace(b"\nu3,", b"\n,", 1)),
        imp("CSV empty file", "t.csv", b""),
        imp("CSV header only", "t.csv", b"user,item,timestamp\n"),
        imp("CSV missing item column", "t.csv", csv_bytes(TINY, "user,thing,timestamp")),
        imp("corrupt gzip (.csv.gz)", "t.csv.gz", b"\x1f\x8b\x08\x00" + bytes(50)),
        imp("valid gzip (.csv.gz)", "t.csv.gz", gzip.compress(csv_bytes(TINY)), "ok"),
        imp("Parquet list column", "t.parquet", parquet("t.parquet", {
            "user": [[u] for u in users], "item": [f"i{k % 20}" for k in range(n)],
            "timestamp": list(range(n))})),
        imp("Parquet null timestamp", "t.parquet", parquet("t.parquet", {
            "user": users, "item": [f"i{k % 20}" for k in range(n)],
            "timestamp": [None, *range(1, n)]})),
        imp("Parquet uint64 timestamp > 2^63", "t.parquet", lambda ctx: _uint64_parquet(ctx)),
        imp("Parquet random bytes", "t.parquet", random.Random(1).randbytes(500)),
        imp("Parquet truncated", "t.parquet", steps(
            parquet("t.parquet", {"user": users, "item": [f"i{k % 20}" for k in range(n)],
                                  "timestamp": list(range(n))}),
            lambda ctx: (ctx.inp / "t.parquet").write_bytes(
                (ctx.inp / "t.parquet").read_bytes()[:300]))),
    ]
    inter = [
        ("reordered columns, a bad value", inter_bytes(TINY).replace(b"\nu3\t", b"\nu3\tx", 1)
         .replace(INTER_HEADER.encode(), b"timestamp:float\titem_id:token\trating:float\t"
                  b"user_id:token"), "fail"),
        ("reordered columns, valid", _reordered_inter(), "ok"),
        ("bad value", inter_bytes(with_ts(TINY, 4, "x")), "fail"),
        ("inf timestamp", inter_bytes(with_ts(TINY, 4, "inf")), "fail"),
        ("timestamp > 2^63", inter_bytes(with_ts(TINY, 4, "1e19")), "fail"),
        ("invalid UTF-8", inter_bytes(TINY).replace(b"u3\t", b"\xff\t"), "fail"),
        ("header lacks item_id", inter_bytes(TINY, INTER_HEADER.replace("item_id", "thing")),
         "fail"),
    ]
    cases += [imp(f".inter {k}", "t.inter", v, e, "inter") for k, v, e in inter]
    seq = "\n".join(f"u{u} " + " ".join(f"i{(u + j) % 20}" for j in range(8)) for u in range(30))
    cases += [
        imp("seq line with a user only", "t.txt", (seq + "\nu99\n").encode(), "fail", "seq"),
        imp("pairs not grouped by user", "t.txt", b"u1 i1\nu2 i1\nu1 i2\n", "fail", "pairs"),
        imp("a FIFO", "fifo", lambda ctx: os.mkfifo(ctx.inp / "fifo"), timeout=30),
        imp("/dev/zero", "/dev/zero", lambda ctx: None, "fail", "seq", timeout=30,
            limits={resource.RLIMIT_AS: 4 << 30}),
    ]
    return cases


def _reordered_inter() -> bytes:
    lines = ["item_id:token\ttimestamp:float\tuser_id:token"]
    lines += [f"{i}\t{t}\t{u}" for u, i, t in TINY]
    return ("\n".join(lines) + "\n").encode()


def _uint64_parquet(ctx: Ctx) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(TINY)
    ts = pa.array([2**63 + k for k in range(n)], pa.uint64())
    pq.write_table(pa.table({"user": [u for u, _, _ in TINY], "item": [i for _, i, _ in TINY],
                             "timestamp": ts}), ctx.inp / "t.parquet")


def c_toml() -> list[Case]:
    """7. Hostile or broken datasets.toml."""
    c = "toml"
    good = raw_is_good()

    def wheel(req: str, member: str = "x/remote.inter") -> Callable[[Ctx], str]:
        return raw_toml(
            '["remote"]\ntitle = "r"\nkcore = { user = 5, item = 5 }\n'
            'training = { max_len = 50, dropout = 0.4 }\n'
            f'[["remote".sources]]\nkind = "pypi-wheel"\nrequirement = "{req}"\n'
            f'member = "{member}"\nfile = "remote.inter"\nformat = "inter"\n'
            f'sha256 = "{GOOD_SHA}"\n')

    req_file = put("req.txt", "-i {url}/hostile-index/\nrecbole==1.2.1\n")
    evil_pkg = steps(put("evilpkg/setup.py", "open('{outside}/pwned', 'w').write('x')\n"
                         "from setuptools import setup\nsetup(name='evilpkg')\n"))
    return [
        Case(c, "requirement = '-r FILE' (options from a file)", DL, base="dl",
             toml=wheel("-r{in}/req.txt"), setup=req_file, check=no_request("hostile")),
        Case(c, "requirement = '--index-url=...'", DL, base="dl",
             toml=wheel("--index-url={url}/hostile-index/"), check=no_request("hostile")),
        Case(c, "requirement = '-e DIR' (runs setup.py)", DL, base="dl",
             toml=wheel("-e{in}/evilpkg"), setup=evil_pkg, check=no_path("{outside}/pwned")),
        Case(c, "requirement = a local directory", DL, base="dl", toml=wheel("{in}/evilpkg"),
             setup=evil_pkg, check=no_path("{outside}/pwned")),
        Case(c, "file = '../../../escaped' (download)", DL, base="dl",
             toml=toml_for(file="../../../escaped"), check=no_path("escaped")),
        Case(c, "file = '../../../escaped' (--from-file)",
             ["download", "remote", "--from-file", "{in}/good.inter"], base="dl",
             toml=toml_for(file="../../../escaped"), setup=put("good.inter", GOOD_INTER),
             check=no_path("escaped")),
        Case(c, "file = absolute path outside", DL, base="dl",
             toml=lambda ctx: toml_for(file=str(ctx.outside / "abs-escaped"))(ctx),
             check=no_path("{outside}/abs-escaped")),
        Case(c, "dataset named '../evil'", ["download", "../evil"], base="dl",
             toml=toml_for(remote_name="../evil"), check=no_path("evil")),
        Case(c, "dataset named 'a/b'", ["download", "a/b"], base="dl",
             toml=toml_for(remote_name="a/b")),
        Case(c, "unverified source (no sha256): download", DL, "warn", base="dl",
             toml=toml_for(sha=False), check=good),
        Case(c, "unverified source (no sha256): --from-file",
             ["download", "remote", "--from-file", "{in}/good.inter"], "warn", base="dl",
             toml=toml_for(sha=False), setup=put("good.inter", GOOD_INTER)),
        Case(c, "file:// URL", DL, "any", base="dl", setup=put("good.inter", GOOD_INTER),
             toml=toml_for(lambda ctx: f"file://{ctx.inp}/good.inter")),
        Case(c, "invalid TOML", ["download", "ml-100k"], base="dl",
             toml=raw_toml("[ml-100k\nx = 1\n")),
        Case(c, "invalid UTF-8 in datasets.toml", ["download", "ml-100k"], base="dl",
             toml=lambda ctx: "# \udcff\n"),
        Case(c, "unknown key", ["download", "remote"], base="dl",
             toml=toml_for(extra="colour = 'red'\n")),
        Case(c, "sources = []", ["download", "r"], base="dl",
             toml=raw_toml('[r]\ntitle = "r"\nkcore = {}\ntraining = { max_len = 50, '
                           'dropout = 0.4 }\nsources = []\n')),
        Case(c, "size = -1", DL, base="dl", toml=toml_for(sha=False, extra="size = -1\n")),
        Case(c, "kcore user = -1", DL, "any", base="dl",
             toml=lambda ctx: toml_for()(ctx).replace('remote"\nkcore = { user = 5',
                                                      'remote"\nkcore = { user = -1')),
        Case(c, "$MATRREC_DATASETS_TOML is a directory", ["download", "ml-100k"], base="dl",
             env={"MATRREC_DATASETS_TOML": "{in}"}),
        Case(c, "$MATRREC_DATASETS_TOML does not exist", ["download", "ml-100k"], base="dl",
             env={"MATRREC_DATASETS_TOML": "{in}/nosuch.toml"}),
    ]


FAMILIES = {"reprepare": c_reprepare, "download": c_download, "state": c_state,
            "dirs": c_dirs, "options": c_options, "import": c_import, "toml": c_toml}

# --------------------------------------------------------------------------------------------
# Running and judging


class Runner:
    def __init__(self, cmd: list[str], work: Path, site: Site) -> None:
        self.cmd, self.work, self.site = cmd, work, site
        self.templates: dict[str, Path] = {}

    def env(self, ctx: Ctx, case: Case | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MATRREC_", "PIP_"))}
        env.update(HOME=str(ctx.jail / "home"), TMPDIR=str(ctx.jail / "tmp"),
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
                   COLUMNS="120", NO_COLOR="1", TERM="dumb", MATRREC_BACKOFF_S="0.01",
                   PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=f"{self.site.base}/simple/",
                   PIP_RETRIES="0", PIP_TIMEOUT="5", PIP_DISABLE_PIP_VERSION_CHECK="1")
        if (ctx.inp / "datasets.toml").exists():
            env["MATRREC_DATASETS_TOML"] = str(ctx.inp / "datasets.toml")
        for k, v in (case.env if case else {}).items():
            env[k] = ctx.sub(v)
        return env

    def launch(self, ctx: Ctx, args: list[str], env: dict[str, str],
               preexec: Callable[[], None] | None = None,
               stdout: int = subprocess.PIPE) -> subprocess.Popen:
        return subprocess.Popen([*self.cmd, *(ctx.sub(a) for a in args)], cwd=ctx.cwd, env=env,
                                stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)

    @staticmethod
    def finish(p: subprocess.Popen, timeout: float = TIMEOUT_S) -> Proc:
        try:
            out, err = p.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            timed_out = True
        return Proc(p.returncode, (out or b"").decode(errors="replace"),
                    err.decode(errors="replace"), timed_out)

    def call(self, ctx: Ctx, args: list[str], env: dict[str, str] | None = None) -> Proc:
        return self.finish(self.launch(ctx, args, env or self.env(ctx)))

    # The states a case starts from, built once with the command under test.

    def template(self, base: str) -> Path:
        if base in self.templates:
            return self.templates[base]
        root = self.work / "templates" / base
        ctx = Ctx(root, self.site, f"tpl-{base}")
        for d in ("cwd", "in", "home", "tmp"):
            (ctx.jail / d).mkdir(parents=True, exist_ok=True)
        (ctx.inp / "tiny.csv").write_bytes(csv_bytes(TINY))
        (ctx.inp / "tiny2.csv").write_bytes(csv_bytes(TINY2))
        steps_ = []
        if base == "data":
            steps_ = [[*IMPORT, "{in}/tiny.csv"],
                      ["import", "tiny2", "--format", "table", "--from-file", "{in}/tiny2.csv"],
                      POP, ["train", "--dataset", "tiny2", "--model", "pop"],
                      GRU_RESUME[:-1]]
        elif base == "dl":
            (ctx.inp / "datasets.toml").write_text(toml_for()(ctx))
            steps_ = [["download", "ml-100k"]]
        for args in steps_:
            proc = self.call(ctx, args)
            if proc.rc != 0:
                sys.exit(f"probe: building the {base!r} state failed: matrrec {shlex.join(args)}"
                         f"\n{proc.err[-2000:]}")
        self.templates[base] = ctx.jail
        return ctx.jail

    def run(self, case: Case, cid: str) -> dict:
        root = self.work / "cases" / cid
        ctx = Ctx(root, self.site, cid, len(self.site.log))
        if case.base == "none":
            for d in ("cwd", "in", "home", "tmp"):
                (ctx.jail / d).mkdir(parents=True)
        else:
            shutil.copytree(self.template(case.base), ctx.jail, symlinks=True)
        (ctx.inp / "datasets.toml").unlink(missing_ok=True)
        ctx.outside.mkdir()
        if case.toml:
            (ctx.inp / "datasets.toml").write_text(case.toml(ctx), errors="surrogateescape")
        if case.setup:
            case.setup(ctx)
        if case.cwd_gone:  # the process will run in its cwd after that is removed: empty it
            for child in ctx.cwd.iterdir():
                shutil.move(child, ctx.jail / child.name)
        allowed = [ctx.cwd / "data", ctx.cwd / "results", ctx.jail / "home", ctx.jail / "tmp",
                   *(ctx.cwd / ctx.sub(a) for a in case.allow)]
        before, tmp_before = tree(root), top(Path(tempfile.gettempdir()))
        work_before = top(self.work) | top(self.work / "cases")
        left_before = leftovers(ctx.cwd)
        env = self.env(ctx, case)
        t0 = time.monotonic()
        procs = self._execute(case, ctx, env)
        seconds = time.monotonic() - t0

        problems = judge(case, procs)
        left = leftovers(ctx.cwd)
        new_left = sorted(p for p in left - left_before
                          if not (case.part_ok and p.endswith(".part")))
        if any(p.rc == 0 for p in procs):  # success must also clear what was planted
            new_left += sorted((left & left_before) - set(new_left))
        problems += [f"half-written: {p}" for p in new_left[:3]]
        created = sorted(tree(root) - before)
        outside = [p for p in created  # under an allowed root, or a directory leading to one
                   if not any(_under(root / p, a) or _under(a, root / p) for a in allowed)]
        outside = [p for p in outside if not any(_under(Path(p), Path(q)) for q in outside
                                                 if q != p)]
        problems += [f"outside its directories: {p}" for p in outside[:3]]
        stray = (top(self.work) | top(self.work / "cases")) - work_before - {cid}
        stray |= {n for n in top(Path(tempfile.gettempdir())) - tmp_before
                  if re.search(r"evil|escaped|pwned", n)}
        problems += [f"outside its root: {n}" for n in sorted(stray)]
        if case.cwd_gone:
            ctx.cwd.mkdir(exist_ok=True)
        env_after = self.env(ctx)
        for args in case.after:
            proc = self.call(ctx, args, env_after)
            if proc.rc != 0:
                problems.append(f"lost: `matrrec {shlex.join(args)}` then exits {proc.rc}: "
                                f"{last_line(proc.err)}")
        if case.check:
            problems += case.check(ctx, procs)
        return {"class": case.cls, "name": case.name, "expect": case.expect,
                "command": "matrrec " + shlex.join(ctx.sub(a) for a in case.args),
                "exit": [p.rc for p in procs], "clean": not problems, "problems": problems,
                "stderr_tail": [p.err.strip().splitlines()[-4:] for p in procs],
                "seconds": round(seconds, 2)}

    def _execute(self, case: Case, ctx: Ctx, env: dict[str, str]) -> list[Proc]:
        limits, gone = case.limits, ctx.cwd if case.cwd_gone else None

        def preexec() -> None:
            for res, value in limits.items():
                resource.setrlimit(res, (value, value))
            if gone is not None:
                os.rmdir(gone)  # after the chdir: the process runs in a deleted directory

        hook = preexec if (limits or gone) else None
        if case.broken_stdout:
            r, w = os.pipe()
            os.close(r)
            p = self.launch(ctx, case.args, env, hook, stdout=w)
            os.close(w)
            return [self.finish(p, case.timeout)]
        if case.twice:
            ps = [self.launch(ctx, case.args, env, hook) for _ in range(2)]
            return [self.finish(p, case.timeout) for p in ps]
        p = self.launch(ctx, case.args, env, hook)
        if case.interrupt:  # Ctrl-C once the body is arriving (the server sends it over ~3 s)
            part = ctx.cwd / "data" / "remote" / "raw" / "remote.inter.part"
            deadline = time.monotonic() + 60
            while not self.site.requests_for(ctx.cid, ctx.log_start) and p.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            deadline = time.monotonic() + 2
            while not part.exists() and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        return [self.finish(p, case.timeout)]


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def top(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def leftovers(cwd: Path) -> set[str]:
    """Half-written files: *.tmp, *.part, interactions.parquet without meta.json."""
    out = set()
    for dirpath, _, filenames in os.walk(cwd):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), cwd)
            if name.endswith((".tmp", ".part")):
                out.add(rel)
            if name == "interactions.parquet" and "meta.json" not in filenames:
                out.add(f"{rel} (no meta.json)")
    return out


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(nothing on stderr)"


def is_usage_error(err: str) -> bool:
    """click/typer's usage box for a malformed option value (not an unknown command or option:
    no case means to pass one, so that is a command this version lacks)."""
    return ("Usage: matrrec" in err and ("Error" in err or "Try 'matrrec" in err)
            and not re.search(r"No such (command|option)", err))


def message_problems(p: Proc, interrupted: bool = False) -> list[str]:
    """A failure must end with at most 2 lines starting with 'matrrec: error:' (or be a usage
    error box, or for Ctrl-C 'matrrec: interrupted')."""
    if p.rc < 0:
        return [f"killed by signal {-p.rc}"]
    if p.rc == 2 and is_usage_error(p.err):
        return []
    if unknown := re.search(r"No such (command|option)[^│\n]*", p.err):
        return [f"usage error: {unknown.group(0).strip()} (not in this version)"]
    lines = [ln for ln in p.err.splitlines() if ln.strip()]
    marks = ("matrrec: error:", "matrrec: interrupted") if interrupted else ("matrrec: error:",)
    idx = [i for i, ln in enumerate(lines) if ln.startswith(marks)]
    if not idx:
        return [f"exit {p.rc} without 'matrrec: error:'; last line: {last_line(p.err)}"]
    if len(lines) - idx[0] > 2:
        return [f"error message is {len(lines) - idx[0]} lines"]
    return []


def judge(case: Case, procs: list[Proc]) -> list[str]:
    problems = []
    for p in procs:
        if p.timed_out:
            problems.append(f"still running after {case.timeout}s (killed)")
        if "Traceback (most recent call last)" in p.err + p.out:
            exc = [ln for ln in p.err.splitlines() if re.match(r"^[\w.]+(Error|Exception)", ln)]
            problems.append(f"traceback: {(exc or [last_line(p.err)])[-1][:200]}")
        elif "Exception ignored" in p.err:
            problems.append(f"'Exception ignored': {last_line(p.err)}")
    if case.twice:
        if not any(p.rc == 0 for p in procs):
            problems.append(f"neither concurrent run succeeded: exits {[p.rc for p in procs]}: "
                            f"{last_line(procs[0].err)}")
        for p in procs:
            if p.rc != 0:
                problems += message_problems(p)
        return problems
    p = procs[0]
    if p.timed_out:
        return problems
    if case.expect == "ok" and p.rc != 0:
        problems.append(f"legitimate input refused: exit {p.rc}: {last_line(p.err)}")
    elif case.expect == "fail" and p.rc == 0:
        problems.append("bad input accepted: exit 0")
    elif case.expect == "warn":
        if p.rc != 0:
            problems.append(f"exit {p.rc}: {last_line(p.err)}")
        elif not re.search(r"warn|unverified|not verified", p.err, re.IGNORECASE):
            problems.append("exit 0 without a warning")
    elif case.expect == "interrupt" and p.rc == 0:
        problems.append("Ctrl-C ignored: exit 0")
    if p.rc != 0 and case.expect != "ok" and not case.broken_stdout:  # no one to tell
        problems += message_problems(p, interrupted=case.expect == "interrupt")
    return problems


def matrrec_file(cmd: list[str], env: dict[str, str]) -> str:
    """Which matrrec_cli the command imports (for `python -m matrrec_cli`)."""
    if len(cmd) >= 3 and cmd[1:3] == ["-m", "matrrec_cli"]:
        out = subprocess.run([cmd[0], "-c", "import matrrec_cli; print(matrrec_cli.__file__)"],
                             capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(),
                             check=False)
        return out.stdout.strip() or out.stderr.strip()
    return "(not a python -m command)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON report path")
    ap.add_argument("--only", action="append", default=[],
                    help="a class (name or number 1-7; repeatable): " +
                         ", ".join(f"{k} {v}" for k, v in CLASSES.items()))
    ap.add_argument("--case", default="", help="only cases whose name contains this")
    ap.add_argument("--matrrec", default="",
                    help="the command to run [default: python -m matrrec_cli from this checkout]")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    opts = ap.parse_args()

    only = {CLASSES.get(o, o) for o in opts.only}
    if bad := only - set(FAMILIES):
        ap.error(f"unknown class {', '.join(sorted(bad))}")
    cases = [case for name, fam in FAMILIES.items() if not only or name in only
             for case in fam() if opts.case in case.name]
    if opts.list:
        for i, case in enumerate(cases, 1):
            print(f"{i:3d} [{case.cls}] {case.name}: matrrec {shlex.join(case.args)}")
        return
    if opts.matrrec:
        cmd = shlex.split(opts.matrrec)
    else:
        cmd = [sys.executable, "-m", "matrrec_cli"]
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    # A shell starting the probe in the background ignores SIGINT, and an ignored signal stays
    # ignored across exec: give the CLI processes the default Ctrl-C back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="probe-faults-"))
    site = serve()
    runner = Runner(cmd, work, site)
    pkg = matrrec_file(cmd, runner.env(Ctx(work, site, "-")))
    print(f"probe: {shlex.join(cmd)} (matrrec_cli from {pkg}); {len(cases)} cases; work {work}",
          flush=True)
    t0 = time.monotonic()
    results = []
    try:
        for i, case in enumerate(cases, 1):
            res = runner.run(case, f"{i:03d}")
            results.append(res)
            mark = "clean" if res["clean"] else "NOT CLEAN"
            print(f"{i:3d} {mark:9s} [{case.cls}] {case.name} (exit {res['exit']}, "
                  f"{res['seconds']:.1f}s)", flush=True)
            for prob in res["problems"]:
                print(f"      - {prob}", flush=True)
    finally:
        assert site.server is not None
        site.server.shutdown()
        site.server.server_close()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - t0
    per_class: dict[str, dict[str, int]] = {}
    for res in results:
        row = per_class.setdefault(res["class"], {"tried": 0, "clean": 0})
        row["tried"] += 1
        row["clean"] += res["clean"]
    tried, clean = len(results), sum(r["clean"] for r in results)
    report = {"matrrec": shlex.join(cmd), "matrrec_cli": pkg, "seconds": round(seconds, 1),
              "totals": {"tried": tried, "clean": clean}, "per_class": per_class,
              "cases": results}
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    for name, row in per_class.items():
        print(f"  {name:10s} {row['tried']:4d} tried, {row['clean']:4d} clean")
    print(f"{tried} tried, {clean} clean ({seconds:.0f}s); report {opts.out}")


if __name__ == "__main__":
    main()
