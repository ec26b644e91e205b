"""Fixtures that build real infrastructure: a fresh PostgreSQL database per
test run (migrated by Alembic), a Redis key prefix per run, a real
`stillhouse worker` process, and a tenant with its own API key per test."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from core.config import Settings
from core.keys import create_key
from core.migrate import upgrade
from examples.digits import DigitsFiles, build_digits

# One intra-op thread for torch in this process (the digits teacher, the engine tests) and
# every process it starts, unless the caller chose: the tests' models are tiny, and on a
# 2-core host shared by pytest and its workers a second thread only spins (see `settings`).
os.environ.setdefault("OMP_NUM_THREADS", "1")

PG_ADMIN = os.environ.get("STILLHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("STILLHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); start it (see .ci/run).", 2
        )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped at the end."""
    name = f"stillhouse_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    yield url
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.exit(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (see .ci/run).", 2)
    prefix = f"stillhouse-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stillhouse-data")


@pytest.fixture(scope="session")
def settings(pg_url: str, redis_prefix: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=pg_url,
        broker_url=REDIS_URL,
        broker_prefix=redis_prefix,
        worker_heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        # Short, so the fault tests see a lost message re-sent within seconds.
        resend_after_s=3.0,
        # Enough runs for a p95 of models that take microseconds; a job's benchmark stage
        # then takes about a second instead of eight.
        benchmark_seconds=0.1,
        # One intra-op thread for training and the benchmark: the tests' models are tiny, and on
        # a 2-core host shared by pytest and several workers, a second thread only spins against
        # the other processes (a digits epoch took 10-30x longer with two threads under load).
        training_threads=1,
        benchmark_threads=1,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    pinned = {
        f"STILLHOUSE_{name.upper()}": str(value)
        for name in ("training_threads", "benchmark_threads")
        if (value := getattr(settings, name)) is not None
    }
    return {
        **os.environ,
        **pinned,
        "STILLHOUSE_DATA_DIR": str(settings.data_dir),
        "STILLHOUSE_DATABASE_URL": settings.database_url,
        "STILLHOUSE_BROKER_URL": settings.broker_url,
        "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
        "STILLHOUSE_WORKER_HEARTBEAT_S": str(settings.worker_heartbeat_s),
        "STILLHOUSE_HEARTBEAT_TIMEOUT_S": str(settings.heartbeat_timeout_s),
        "STILLHOUSE_RESEND_AFTER_S": str(settings.resend_after_s),
        "STILLHOUSE_BENCHMARK_SECONDS": str(settings.benchmark_seconds),
    }


@pytest.fixture(scope="session")
def worker(settings: Settings, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `stillhouse worker` process serving the cpu pool."""
    process = start_worker(settings, "cpu", data_dir / "worker.log")
    yield process
    stop_worker(process)


def start_worker(
    settings: Settings, pool: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "worker", "--pool", pool, "--device", "cpu"],
            env={**settings_env(settings), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 90
    url = settings.resolved_database_url.replace("postgresql+psycopg://", "postgresql://")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the worker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM workers WHERE id LIKE %s", (f"%/{pool}/cpu/{process.pid}",)
            ).fetchone()
            if row and row[0] > 0:
                return process
        time.sleep(0.3)
    pytest.fail(f"the worker did not register within 90 s:\n{log.read_text()[-3000:]}")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    stop_workers([process])


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every one first, then wait for each (SIGKILL after 20 s): their warm
    shutdowns (signing off in the database) overlap instead of queueing."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + 20
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SpawnWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn_worker(settings: Settings, tmp_path: Path) -> Iterator[SpawnWorker]:
    """Start extra workers inside a test (`spawn(pool, settings=..., **env)`); every one is
    stopped when the test ends, pass or fail. Its log is `worker_log(process)`."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(pool: str, settings_: Settings | None = None, **env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(started)}.log"
        process = start_worker(settings_ or settings, pool, log, env)
        process.log = log  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a test may leave one frozen
    stop_workers(started)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz file's bytes, for uploads that need no file on disk."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def new_tenant(settings: Settings) -> dict[str, str]:
    key = create_key(settings, f"tenant-{uuid.uuid4().hex[:10]}")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    """Each test gets its own tenant, so no test sees another's rows."""
    return new_tenant(settings)


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsFiles:
    return build_digits(tmp_path_factory.mktemp("digits"))


def wait_for(
    client: TestClient,
    path: str,
    headers: dict[str, str],
    done: set[str],
    timeout: float = 120.0,
    field: str = "status",
) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if body[field] in done:
            return body
        time.sleep(0.25)
    raise AssertionError(f"{path} did not reach {done} within {timeout} s; last: {body}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def live_api(settings: Settings, data_dir: Path, worker: subprocess.Popen[bytes]) -> Iterator[str]:
    """A real `stillhouse api` (uvicorn) process on a free loopback port, over the session's
    database, broker and data folder, with the session worker running: its base URL. For
    tests that must cross real HTTP (the CLI, the browser)."""
    import httpx

    port = free_port()
    log = data_dir / "api.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "api", "--host", "127.0.0.1"]
            + ["--port", str(port), "--log-level", "warning"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"the API exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the API did not answer within 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
