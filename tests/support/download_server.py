"""A loopback HTTP server with range requests, dropped transfers and hangs, for modules.download and the
launcher's download step. `payload` and `server` are fixtures: import them into the test module."""
from __future__ import annotations

import http.server
import os
import threading

import pytest

DATA_SIZE = 3 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_TestServer"

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                 "user_agent": self.headers.get("User-Agent")})
        if self.path == "/file.bin":
            self._send_with_range(srv.data)
        elif self.path == "/norange.bin":
            self._send_full(srv.data)
        elif self.path == "/drop.bin":
            # Announce the whole file, send half, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(srv.data)))
            self.end_headers()
            self.wfile.write(srv.data[: len(srv.data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/hang":
            # Accept the connection, never answer; end when the test ends.
            srv.release.wait()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def _send_full(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_with_range(self, data: bytes) -> None:
        header = self.headers.get("Range")
        if not header:
            self._send_full(data)
            return
        spec = header.strip()
        assert spec.startswith("bytes="), spec
        first, _, last = spec[len("bytes="):].partition("-")
        start = int(first)
        end = int(last) if last else len(data) - 1
        if start >= len(data):
            with self.server.lock:
                self.server.statuses.append(416)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        end = min(end, len(data) - 1)
        body = data[start : end + 1]
        with self.server.lock:
            self.server.statuses.append(206)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = data
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request, client_address) -> None:
        # Clients that give up (timeout tests) cause broken pipes; not a failure.
        pass


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(DATA_SIZE)


@pytest.fixture
def server(payload: bytes):
    srv = _TestServer(payload)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)
