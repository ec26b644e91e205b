"""Fleet and health endpoints, against the real database, broker and worker."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


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


@pytest.mark.usefixtures("worker")
def test_workers_report_pool_device_and_versions(client: TestClient, auth: dict[str, str]) -> None:
    workers = client.get("/v1/workers", headers=auth).json()
    cpu = [w for w in workers if w["pool"] == "cpu" and w["alive"]]
    assert cpu, workers
    assert cpu[0]["device"] == "cpu" and cpu[0]["memory_bytes"] > 0
    assert cpu[0]["versions"]["torch"].startswith("2.13.0")
    assert client.get("/v1/workers").status_code == 401
