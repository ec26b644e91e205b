"""Checks on a job's status record (core.status) shared by the service and e2e tests."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from fastapi.testclient import TestClient

from core.config import Settings
from core.status import STAGE_FIELDS, status_key


def status_of(job: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/jobs/{id}'s body as GET /v1/jobs/{id}/status shows it."""
    doc = {k: v for k, v in job.items() if k not in ("spec", "summary")}
    doc["stages"] = [{k: stage[k] for k in STAGE_FIELDS} for stage in job["stages"]]
    return doc


def cached(settings: Settings, job_id: str) -> dict[bytes, bytes]:
    """The job's record as Redis holds it ({} when there is none)."""
    client = redis.Redis.from_url(settings.resolved_broker_url)
    try:
        return client.hgetall(status_key(settings.broker_prefix, job_id))  # type: ignore[return-value]
    finally:
        client.close()


def drop(settings: Settings, job_id: str) -> None:
    client = redis.Redis.from_url(settings.resolved_broker_url)
    try:
        client.delete(status_key(settings.broker_prefix, job_id))
    finally:
        client.close()


def assert_record_matches_database(
    client: TestClient,
    headers: dict[str, str],
    settings: Settings,
    job_id: str,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The record in Redis equals the job as the database shows it (GET /v1/jobs/{id},
    less spec and summary). A worker publishes right after its commit, so a reader that saw
    the commit may be a moment early: it looks again for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        expected = status_of(response.json())
        body = cached(settings, job_id).get(b"body")
        found = json.loads(body) if body is not None else None
        if found == expected:
            return expected
        if time.monotonic() > deadline:
            raise AssertionError(f"the record {found} is not the database's {expected}")
        time.sleep(0.1)
