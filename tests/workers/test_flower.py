"""``tagger flower``: up on a port, basic auth on by default."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.workers.procs import REPO, free_port, wait_for


def status(port: int, auth: tuple[str, str] | None = None, path: str = "/") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def flower(make_redis: Callable, tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    procs: list[subprocess.Popen] = []
    redis = make_redis()

    def start(**env: str) -> tuple[int, Path]:
        port, log = free_port(), tmp_path / f"flower-{len(procs)}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        full.update({"TAGGER_BROKER_URL": redis.url, **env})  # a test may point it at its worker's
        procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", "flower", "--port", str(port)],
                                      cwd=REPO, env=full, stdout=open(log, "w"),  # noqa: SIM115
                                      stderr=subprocess.STDOUT))
        try:
            wait_for(lambda: procs[-1].poll() is None and listening(port), 60, "flower to listen")
        except AssertionError:
            raise AssertionError(f"flower did not start:\n{log.read_text()}") from None
        return port, log

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_flower_requires_basic_auth(flower: Callable[..., tuple[int, Path]]) -> None:
    port, _log = flower(TAGGER_FLOWER_USER="ops", TAGGER_FLOWER_PASSWORD="s3cret-pw")
    assert status(port) == 401
    assert status(port, ("ops", "wrong")) == 401
    assert status(port, ("ops", "s3cret-pw")) == 200
    # Its Prometheus endpoint too (Flower's own handler serves it to anyone).
    assert status(port, path="/metrics") == 401
    assert status(port, ("ops", "wrong"), path="/metrics") == 401
    assert status(port, ("ops", "s3cret-pw"), path="/metrics") == 200


def test_flower_without_a_password_makes_one_up(flower: Callable[..., tuple[int, Path]]) -> None:
    port, log = flower()
    assert status(port) == 401
    password = log.read_text().split("for 'admin':", 1)[1].split()[0]
    assert status(port, ("admin", password)) == 200
