"""A loopback HTTP server for download tests: Range support and fault injection.

`faults[path]` is a list consumed one request at a time: "cut" (send half the body, then close),
"503"/"429" (busy), "html" (a 200 HTML error page), "wrong" (200 with different bytes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    base: str = ""


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            site.log.append((self.path, rng))
            body = site.files.get(self.path)
            if body is None:
                return self._send(404, b"not found")
            fault = site.faults.get(self.path, []).pop(0) if site.faults.get(self.path) else None
            if fault in ("503", "429"):
                return self._send(int(fault), b"busy")
            if fault == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Access Denied</body></html>")
            if fault == "wrong":
                return self._send(200, bytes(reversed(body)))
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            if start >= len(body) and rng:
                return self._send(416, b"")
            part = body[start:]
            code = 206 if rng else 200
            self.send_response(code)
            self.send_header("Content-Length", str(len(part)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if fault == "cut":
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
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
