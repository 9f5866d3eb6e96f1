"""Loopback servers for the fetch and worker tests: a TLS image host, a port that only counts
connections, one that accepts and never answers, and an S3 front that can hang chosen keys."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` (its own CA) and its key, made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class CountingListener:
    """A listening loopback port that accepts and counts connections (then closes them)."""

    def __init__(self, silent: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.silent = silent  # keep accepted sockets open and never answer (a hung server)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.silent:
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self.sock.close()


Route = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    requests: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args: object) -> None:  # quiet
        pass


def send_bytes(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in (headers or {"Content-Length": str(len(body))}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)

    return route


def drip(total: int, every_s: float) -> Route:
    """A body sent one byte at a time: each read succeeds, the whole never arrives in time."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            for _ in range(total):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(every_s)
        except OSError:
            pass

    return route


class TlsImageServer:
    """HTTPS on 127.0.0.1 with a self-signed ``localhost`` certificate; ``routes`` map paths."""

    def __init__(self, cert: Path, key: Path, routes: dict[str, Route]) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.routes, self.httpd.requests = routes, []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.requests = self.httpd.requests
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _S3FrontHandler(BaseHTTPRequestHandler):
    """Forwards to the real (moto) endpoint; a GET whose path has ``/hang/`` gets no answer."""

    server: _S3Front

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(self.path)
        if "/hang/" in self.path:
            self.server.release.wait(60)
            self.close_connection = True
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            conn.request("GET", self.path, headers=dict(self.headers.items()))
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _S3Front(ThreadingHTTPServer):
    daemon_threads = True
    upstream_port: int
    requests: list[str]
    release: threading.Event


class S3Front:
    """An S3 endpoint in front of moto that records every request path and can hang keys."""

    def __init__(self, upstream_port: int) -> None:
        self.httpd = _S3Front(("127.0.0.1", 0), _S3FrontHandler)
        self.httpd.upstream_port = upstream_port
        self.httpd.requests, self.httpd.release = [], threading.Event()
        self.requests = self.httpd.requests
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
