"""Fleet and health endpoints, against the real database, broker and worker."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from core import repository
from core.auth import hash_key
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import Job, Worker
from tests.conftest import new_tenant


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "process_cpu_seconds_total" in metrics.text


def test_openapi_and_dashboard_are_served(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/metrics"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "Stillhouse" in page.text
    # The page's modules and styles are package data; module scripts need a JS media type.
    script = client.get("/dashboard/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "text/css" in client.get("/dashboard/app.css").headers["content-type"]


@pytest.mark.usefixtures("worker")
def test_workers_report_pool_device_and_versions(client: TestClient, auth: dict[str, str]) -> None:
    workers = client.get("/v1/workers", headers=auth).json()
    cpu = [w for w in workers if w["pool"] == "cpu" and w["alive"]]
    assert cpu, workers
    assert cpu[0]["device"] == "cpu" and cpu[0]["memory_bytes"] > 0
    assert cpu[0]["versions"]["torch"].startswith("2.13.0")
    assert client.get("/v1/workers").status_code == 401


def test_workers_show_only_the_callers_own_current_job(
    client: TestClient, settings: Settings
) -> None:
    alice, bob = new_tenant(settings), new_tenant(settings)
    engine = make_engine(settings.resolved_database_url)
    pool = f"fleet-{uuid.uuid4().hex[:8]}"  # a pool no test places work on
    try:
        with make_sessionmaker(engine).begin() as session:
            tenant = session.scalar(repository.tenant_id_for_key(_key_hash(alice)))
            job = Job(tenant_id=tenant, name="busy", spec={}, status="running", stage="training")
            session.add(job)
            session.flush()
            for n, current in enumerate((job.id, None)):
                session.add(
                    Worker(
                        id=f"fleet-host/{pool}/cpu/{n}",
                        hostname="fleet-host",
                        pool=pool,
                        device="cpu",
                        current_job_id=current,
                    )
                )
        seen = {}
        for who, headers in (("alice", alice), ("bob", bob)):
            response = client.get("/v1/workers", headers=headers)
            assert response.status_code == 200, response.text
            seen[who] = {w["id"]: w["current_job_id"] for w in response.json() if w["pool"] == pool}
        assert seen["alice"] == {
            f"fleet-host/{pool}/cpu/0": job.id,
            f"fleet-host/{pool}/cpu/1": None,
        }
        # Bob sees the same fleet, but not Alice's job id.
        assert seen["bob"] == {f"fleet-host/{pool}/cpu/0": None, f"fleet-host/{pool}/cpu/1": None}
    finally:
        with make_sessionmaker(engine).begin() as session:
            session.execute(delete(Worker).where(Worker.pool == pool))
            session.execute(delete(Job).where(Job.id == job.id))
        engine.dispose()


def _key_hash(headers: dict[str, str]) -> str:
    return hash_key(headers["Authorization"].removeprefix("Bearer "))
