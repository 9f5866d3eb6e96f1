"""A private PostgreSQL cluster a test owns: ``initdb`` into a temporary folder (as the ``postgres`` OS
user when the tests run as root), its own loopback port and socket folder, really stopped and started
again by ``pg_ctl``. The machine's shared server (5432) is never touched.

``PgCluster.skip_reason()`` says why one cannot be made here (no ``initdb``, root without a
``postgres`` user); callers skip with it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.workers.procs import free_port

OS_USER = "postgres"


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: ``$TAGGER_TEST_PG_BIN``, Debian's newest, then ``PATH``."""
    folders = [os.environ["TAGGER_TEST_PG_BIN"]] if os.environ.get("TAGGER_TEST_PG_BIN") else []
    folders += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    for folder in folders:
        if (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    return shutil.which(name)


class PgCluster:
    """One cluster: ``url`` (its ``postgres`` database) and ``database_url(name)``; ``stop``/``start``
    for an outage; ``destroy`` removes everything. Tuned for tests: fsync off (a fast shutdown still
    checkpoints, so a stop/start loses nothing)."""

    @staticmethod
    def skip_reason() -> str | None:
        if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
            return "PostgreSQL server programs (initdb, pg_ctl) not found; set TAGGER_TEST_PG_BIN"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(OS_USER)
            except KeyError:
                return f"running as root and there is no {OS_USER!r} OS user to run initdb as"
            if shutil.which("runuser") is None:
                return "running as root and runuser is not available"
        return None

    def __init__(self) -> None:
        reason = self.skip_reason()
        if reason:
            raise RuntimeError(reason)
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="tagger-pg-"))
        self.data, self.sockets, self.log = self.folder / "data", self.folder / "sock", self.folder / "pg.log"
        self.sockets.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            for path in (self.folder, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner([pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], timeout=120)
        self.running = False
        self.start()

    def _as_owner(self, argv: list[str | None], timeout: float) -> None:
        prefix = ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*prefix, *[str(a) for a in argv]], capture_output=True, text=True,
                              timeout=timeout, cwd=self.folder)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(str(a) for a in argv[:2])} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}\n{self.tail()}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=100")
        self._as_owner([pg_bin("pg_ctl"), "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "60",
                        "start"], timeout=90)
        self.running = True
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server for real (``fast``: clients are disconnected, a checkpoint is written)."""
        self._as_owner([pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
        self.running = False

    def _wait_ready(self, timeout: float = 30) -> None:
        engine = sa.create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.exec_driver_sql("SELECT 1")
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()

    def create_database(self, name: str) -> str:
        """A new database on this cluster; returns its URL."""
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.database_url(name)

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
