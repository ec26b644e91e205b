"""Servers of a test's own, for tests and benchmarks that fault them without touching the
shared ones."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

# Starts a server from its argument list.
Launch = Callable[[list[str]], subprocess.Popen[bytes]]


def _launch(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PrivateRedis:
    """A redis-server of the caller's own on a free port, with no persistence: a restart loses
    every message. `launch` starts it (default: a plain child process, output discarded); the
    chaos bench passes its own, which ties the server's life to the bench's."""

    def __init__(self, folder: Path, launch: Launch = _launch) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.launch = launch
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = self.launch(args)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster of the caller's own: `initdb` into a fresh temporary folder, then
    started and stopped with `pg_ctl` on a free port, so a test can take the database away
    without touching the shared server. PostgreSQL refuses to run as root, so when the tests
    run as root every command runs as the `postgres` OS user (`runuser`), in a folder that
    user owns (a pytest tmp_path is not reachable for it). Trust auth and no fsync: the
    cluster lives for one test; `remove()` stops it and deletes the folder."""

    def __init__(self, user: str = "postgres") -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.folder = Path(tempfile.mkdtemp(prefix=f"stillhouse-pg-{self.port}-"))
        self.data = self.folder / "data"
        self.as_user = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if self.as_user:
            shutil.chown(self.folder, user)
        self._run(
            [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            + ["--no-sync", "-E", "UTF8", "--locale=C"]
        )

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(self.as_user + args, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections (`pg_ctl -w`)."""
        options = f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = str(self.folder / "server.log")
        self._run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-o", options, "start"]
        )

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in an outage. A no-op when stopped."""
        if (self.data / "postmaster.pid").exists():
            self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new database on this cluster; its SQLAlchemy (psycopg) URL."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def _pg_bin(name: str) -> str:
    """initdb and pg_ctl: on PATH, else in Debian's versioned folder."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found
