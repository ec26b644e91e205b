"""GET /metrics against the real PostgreSQL: the body parses with Prometheus's own
text parser, the gauges agree with the rows, the HTTP counters follow requests by
route template, and two gateway processes sharing a multiprocess folder are summed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, text
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import Job, JobStage, MaintenanceRun, Tenant, Worker, utcnow
from core.storage import ArtifactStore
from stillhouse.commands.admin import prepare_metrics_dir
from tests.conftest import ROOT, free_port, settings_env
from workers.context import WorkerContext
from workers.recovery import reap, sweep

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient | httpx.Client, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(body: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_job_gauges_match_the_database(client: TestClient, sessions) -> None:
    with sessions.begin() as session:
        tenant = Tenant(name=f"prom-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        for status in ("queued", "running", "running", "succeeded", "failed", "cancelled"):
            session.add(Job(tenant_id=tenant.id, name="j", spec={}, status=status))
    # Counted in SQL, apart from the code under test; read again after the scrape, so a
    # job that another test's worker moved meanwhile shows as a retry, not a failure.
    count_sql = text("SELECT status, count(*) FROM jobs GROUP BY status")
    for _ in range(5):
        with sessions() as session:
            before = dict(session.execute(count_sql).all())
        samples = scrape(client)
        with sessions() as session:
            after = dict(session.execute(count_sql).all())
        if before == after:
            break
    assert before == after
    assert {"queued", "running", "succeeded", "failed", "cancelled"} <= set(after)
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert value(samples, "stillhouse_jobs", status=status) == after[status], status
    assert value(samples, "stillhouse_metrics_database_up") == 1
    # The Redis broker's queues are read too.
    assert value(samples, "stillhouse_metrics_broker_up") == 1
    assert value(samples, "stillhouse_broker_queue_length", pool="cpu") is not None


def test_queue_depth_oldest_age_and_live_workers_by_pool(client: TestClient, sessions) -> None:
    pool = f"prom-{uuid.uuid4().hex[:8]}"  # a pool no other test uses
    now = utcnow()
    with sessions.begin() as session:
        tenant = Tenant(name=pool)
        session.add(tenant)
        session.flush()
        job = Job(tenant_id=tenant.id, name="j", spec={}, status="queued")
        session.add(job)
        session.flush()
        for position, (name, waited) in enumerate((("training", 45), ("evaluation", 5))):
            session.add(
                JobStage(
                    job_id=job.id,
                    name=name,
                    position=position,
                    status="queued",
                    pool=pool,
                    queued_at=now - timedelta(seconds=waited),
                )
            )
        for n, heartbeat in enumerate((now, now, now - timedelta(hours=1))):
            session.add(
                Worker(
                    id=f"prom-host/{pool}/cpu/{n}",
                    hostname="prom-host",
                    pool=pool,
                    device="cpu",
                    last_heartbeat=heartbeat,
                )
            )
    try:
        samples = scrape(client)
        assert value(samples, "stillhouse_queue_depth", pool=pool) == 2
        oldest = value(samples, "stillhouse_queue_oldest_age_seconds", pool=pool)
        assert oldest is not None and 45 <= oldest < 45 + 600
        assert value(samples, "stillhouse_live_workers", pool=pool) == 2  # not the silent one
        # A built-in pool with nothing queued still has its series, at 0.
        assert value(samples, "stillhouse_queue_depth", pool="gpu") is not None
    finally:
        with sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.pool == pool))
            session.execute(delete(Job).where(Job.id == job.id))


def test_http_requests_are_counted_by_route_template(client: TestClient) -> None:
    route = "/v1/jobs/{job_id}"
    key = ("GET", route, "401")
    before = value(scrape(client), "stillhouse_http_requests_total", **_labels(*key)) or 0
    for _ in range(3):
        assert client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 401
    client.get(f"/no-such-path-{uuid.uuid4()}")
    samples = scrape(client)
    assert value(samples, "stillhouse_http_requests_total", **_labels(*key)) == before + 3
    # Never the raw path: the series are bounded by the routes, not by the ids asked for.
    paths = {dict(labels).get("route") for _, labels in samples}
    assert not any(p and "-" in p and p.startswith("/v1/jobs/") for p in paths), paths
    assert value(samples, "stillhouse_http_requests_total", **_labels("GET", "<unmatched>", "404"))
    count = value(
        samples, "stillhouse_http_request_duration_seconds_count", method="GET", route=route
    )
    assert count is not None and count >= 3


def _labels(method: str, route: str, status: str) -> dict[str, str]:
    return {"method": method, "route": route, "status": status}


def test_reaper_and_sweeper_passes_are_recorded(
    client: TestClient, settings: Settings, sessions, tmp_path: Path
) -> None:
    # A pool of its own and a timeout no stage reaches: the passes find nothing to do
    # (and so send nothing), but they complete and say so.
    patient = settings.model_copy(update={"heartbeat_timeout_s": 10**7})
    pool = f"prom-{uuid.uuid4().hex[:8]}"
    ctx = WorkerContext(
        settings=patient,
        sessions=sessions,
        store=ArtifactStore(f"file://{tmp_path}/artifacts", tmp_path / "cache"),
        pool=pool,
        device="cpu",
        worker_id=f"prom-host/{pool}/cpu/1",
    )
    with sessions.begin() as session:
        session.execute(delete(MaintenanceRun))
    absent = scrape(client)
    assert value(absent, "stillhouse_maintenance_last_run_age_seconds", task="reaper") is None
    reap(ctx)
    sweep(ctx)
    samples = scrape(client)
    for task in ("reaper", "sweeper"):
        age = value(samples, "stillhouse_maintenance_last_run_age_seconds", task=task)
        assert age is not None and 0 <= age < 600, task
        stamp = value(samples, "stillhouse_maintenance_last_run_timestamp_seconds", task=task)
        assert stamp is not None and abs(stamp - time.time()) < 600
    with sessions() as session:
        # The worker's own row: no two workers ever wait on one row's lock.
        assert session.get(MaintenanceRun, ("sweeper", ctx.worker_id)) is not None
    # Another worker's older pass does not make the reaper look older: the newest counts.
    with sessions.begin() as session:
        session.add(
            MaintenanceRun(
                name="reaper",
                worker_id="gone-host/cpu/cpu/2",
                last_run_at=datetime.now(UTC) - timedelta(days=1),
            )
        )
    age = value(scrape(client), "stillhouse_maintenance_last_run_age_seconds", task="reaper")
    assert age is not None and 0 <= age < 600


def test_a_token_guards_metrics_when_set(settings: Settings) -> None:
    from service.main import create_app

    guarded = settings.model_copy(update={"metrics_token": "scrape-" + uuid.uuid4().hex})
    with TestClient(create_app(guarded)) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        samples = scrape(client, Authorization=f"Bearer {guarded.metrics_token}")
        assert value(samples, "stillhouse_metrics_database_up") == 1
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_a_silent_database_leaves_the_gauges_out_quickly(settings: Settings) -> None:
    """A PostgreSQL port that accepts connections and never answers: the scrape gives up
    after the metrics timeout and still serves the HTTP metrics."""
    from service.main import create_app

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/stillhouse"
        down = settings.model_copy(update={"database_url": url, "metrics_db_timeout_s": 0.5})
        with TestClient(create_app(down)) as client:
            samples = scrape(client)
    assert value(samples, "stillhouse_metrics_database_up") == 0
    assert not any(name == "stillhouse_jobs" for name, _ in samples)
    assert any(name == "stillhouse_http_requests_total" for name, _ in samples)


def test_two_gateway_processes_are_summed(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
            + ["--log-level", "warning"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    try:
        first, second = (httpx.Client(base_url=f"http://127.0.0.1:{p}") for p in ports)
        for http in (first, second):
            _wait_until_up(http)
        labels = _labels("GET", "/v1/workers", "401")
        before = value(scrape(first), "stillhouse_http_requests_total", **labels) or 0
        for http, n in ((first, 3), (second, 5)):
            for _ in range(n):
                assert http.get("/v1/workers").status_code == 401
        for http in (first, second):  # either process answers the sum of both
            samples = scrape(http)
            assert value(samples, "stillhouse_http_requests_total", **labels) == before + 8
            assert value(samples, "stillhouse_jobs", status="queued") is not None
        pids = {int(f.stem.rsplit("_", 1)[1]) for f in folder.glob("counter_*.db")}
        assert {p.pid for p in processes} <= pids
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _wait_until_up(http: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{http.base_url} did not answer within 60 s")


def test_the_api_command_empties_its_metrics_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty counts as unset; setenv puts the test process's environment back afterwards.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    stale = tmp_path / "prometheus" / "8123" / "counter_99.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    folder = prepare_metrics_dir(tmp_path, 8123)
    assert folder == stale.parent and not stale.exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder.resolve())


def test_broker_queue_length_counts_the_pools_waiting_messages(
    client: TestClient, settings: Settings, sessions
) -> None:
    """A message sent to a pool's queue and fetched by nobody: LLEN of that queue, under
    the deployment's key prefix, as kombu stores it."""
    import redis

    from core.broker import make_celery

    pool = f"prom-{uuid.uuid4().hex[:8]}"
    with sessions.begin() as session:  # a live worker makes the pool one /metrics knows
        session.add(Worker(id=f"prom-host/{pool}/cpu/0", hostname="h", pool=pool, device="cpu"))
    celery = make_celery(settings)
    try:
        for _ in range(2):
            celery.send_task("stillhouse.nothing", queue=pool)
        samples = scrape(client)
        assert value(samples, "stillhouse_broker_queue_length", pool=pool) == 2
    finally:
        redis.Redis.from_url(settings.broker_url).delete(f"{settings.broker_prefix}{pool}")
        with sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.pool == pool))
