"""Processes the worker tests start and always stop: a private redis-server and real workers."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RedisServer:
    """``redis-server`` on a free loopback port in its own folder; restartable on the same port."""

    def __init__(self, folder: Path, persistent: bool = False) -> None:
        self.folder, self.persistent = folder, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.folder), "--maxmemory-policy", "noeviction", *aof],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        wait_for(self._ping, 10, f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def kill(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def messages(self, queue: str = "tagging") -> list[dict]:
        """Task kwargs of every message Redis holds: waiting in the queue or delivered, unacked."""
        c = self.client()
        waiting = [json.loads(m) for m in c.lrange(queue, 0, -1)]
        unacked = [json.loads(v)[0] for v in c.hvals("unacked")]
        return [_task_kwargs(m) for m in waiting + unacked]

    def backlog(self, queue: str = "tagging") -> tuple[int, int]:
        """(messages waiting in the queue, messages delivered and not acked)."""
        c = self.client()
        return int(c.llen(queue)), int(c.hlen("unacked"))


def _task_kwargs(message: dict) -> dict:
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    _args, kwargs, _embed = json.loads(body)
    return kwargs


class Worker:
    """A real ``celery worker`` process (threads pool, ``concurrency`` threads; 0: ``tagger worker`` with
    its defaults), its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], folder: Path, concurrency: int = 1) -> None:
        self.name, self.env, self.folder, self.concurrency = name, env, folder, concurrency
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self, timeout: float = 120) -> Worker:
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"\n===== start {self.starts} =====\n")
        argv = ([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "tagging",
                 "-P", "threads", "-c", str(self.concurrency), "--loglevel=INFO", "--without-gossip",
                 "--without-mingle", "-n", f"{self.name}-{self.starts}@%h"]
                if self.concurrency else  # 0: the operator's command with its own defaults
                [str(Path(sys.executable).with_name("tagger")), "worker"])
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO, env=self.env, stdout=open(self.log_path, "a"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        mark = f"===== start {self.starts} ====="
        wait_for(lambda: self._alive_or_fail() and self._since(mark, "model_loaded")
                 and self._since(mark, " ready.") and self._since(mark, "pool_warmed"), timeout,
                 f"worker {self.name} to be ready", every=0.2)
        return self

    def _alive_or_fail(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
        return True

    def _since(self, mark: str, text: str) -> bool:
        return text in self.log().rsplit(mark, 1)[-1]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def count(self, text: str) -> int:
        return self.log().count(text)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no ack, no restore of prefetched messages."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=20)
