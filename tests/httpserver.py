"""A loopback HTTP server for download tests: Range support and fault injection.

`faults[path]` is a list consumed one request at a time:
  "cut"          send half the body (Content-Length says all of it), then close
  "503"/"429"    busy
  "html"         a 200 HTML error page
  "wrong"        200 with different bytes
  "nolength"     200, the whole body, no Content-Length (the end is the closed connection)
  "cutnolength"  200, half the body, no Content-Length, then close: a silent truncation
  "gzip"         200, the body gzip-compressed on the fly, `Content-Encoding: gzip`
  "badrange"     a Range request gets 206 whose Content-Range starts at byte 0
  "slow"         200, the body in small pieces with pauses (two downloads can overlap)
`validators=True` sends ETag and Last-Modified and honours If-Range (a validator that does not
match gets the whole file with 200, as RFC 9110 says). `requests` keeps every request's headers.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    requests: list[dict[str, str]] = field(default_factory=list)  # headers of each request
    validators: bool = False
    base: str = ""


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


LAST_MODIFIED = "Wed, 01 Jan 2014 00:00:00 GMT"


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: bytes, extra: dict[str, str] | None = None,
                  length: bool = True) -> None:
            self.send_response(code)
            if length:
                self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            if not length:
                self.close_connection = True

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            site.log.append((self.path, rng))
            site.requests.append(dict(self.headers.items()))
            body = site.files.get(self.path)
            if body is None:
                return self._send(404, b"not found")
            fault = site.faults.get(self.path, []).pop(0) if site.faults.get(self.path) else None
            valid = {"ETag": etag(body), "Last-Modified": LAST_MODIFIED} \
                if site.validators else {}
            if fault in ("503", "429"):
                return self._send(int(fault), b"busy")
            if fault == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Access Denied</body></html>")
            if fault == "wrong":
                return self._send(200, bytes(reversed(body)))
            if fault == "nolength":
                return self._send(200, body, valid, length=False)
            if fault == "cutnolength":
                return self._send(200, body[: len(body) // 2], valid, length=False)
            if fault == "gzip":
                return self._send(200, gzip.compress(body, mtime=0),
                                  {**valid, "Content-Encoding": "gzip"})
            if_range = self.headers.get("If-Range")
            if rng and if_range is not None and if_range not in valid.values():
                rng = None  # the file changed (or we have no validators): send all of it
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            if fault == "badrange" and rng:
                return self._send(206, body, {**valid, "Content-Range":
                                              f"bytes 0-{len(body) - 1}/{len(body)}"})
            if start >= len(body) and rng:
                return self._send(416, b"")
            part = body[start:]
            code = 206 if rng else 200
            self.send_response(code)
            self.send_header("Content-Length", str(len(part)))
            for k, v in valid.items():
                self.send_header(k, v)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if fault == "cut":
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if fault == "slow":
                step = max(1, len(part) // 20)
                for i in range(0, len(part), step):
                    self.wfile.write(part[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            self.wfile.write(part)

    return Handler


@contextmanager
def serve(site: Site) -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
