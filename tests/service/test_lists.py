"""Job lists filtered by status across pages, metrics read by epoch range, and the plans
PostgreSQL picks for both once tenants hold thousands of rows (tests/bulk.py writes them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from core import repository
from core.config import Settings
from core.keys import create_key
from stillhouse.client import Client
from tests import bulk


def _url(settings: Settings) -> str:
    return settings.resolved_database_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def loaded(settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """One tenant with 25 jobs (bulk.STATUSES in turn) and 20 points (epochs 1-4) for
    its two newest jobs: the tag and the tenant's headers."""
    tag = uuid.uuid4().hex[:12]
    with psycopg.connect(_url(settings)) as conn:
        bulk.load(conn, tag, tenants=1, jobs=25, points_per_job=20, point_jobs=2)
    yield tag, {"Authorization": f"Bearer {create_key(settings, f'{tag}-0')}"}
    with psycopg.connect(_url(settings)) as conn:
        conn.execute("DELETE FROM tenants WHERE name = %s", (f"{tag}-0",))


def _walk(client: TestClient, headers: dict[str, str], **params: Any) -> list[list[str]]:
    """The ids of every page, following next_cursor."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/jobs", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def _jobs(tag: str, numbers: list[int]) -> list[str]:
    return [bulk.row_id(tag, "j", n) for n in numbers]  # newest first: job n is n s old


def test_status_filter_keeps_keyset_pages(
    client: TestClient, loaded: tuple[str, dict[str, str]]
) -> None:
    tag, headers = loaded
    succeeded = [n for n in range(25) if n % 10 < 6]
    pages = _walk(client, headers, status="succeeded", limit=4)
    assert [len(p) for p in pages] == [4, 4, 4, 4, 1]
    assert sum(pages, []) == _jobs(tag, succeeded)
    assert sum(_walk(client, headers, status="queued,running", limit=3), []) == _jobs(
        tag, [8, 9, 18, 19]
    )
    assert sum(_walk(client, headers, status="failed,failed"), []) == _jobs(tag, [6, 16])
    assert sum(_walk(client, headers, limit=7), []) == _jobs(tag, list(range(25)))
    for bad in ("done", "queued,", "Running", "queued;running"):
        response = client.get("/v1/jobs", params={"status": bad}, headers=headers)
        assert response.status_code == 422, (bad, response.text)
        assert "job statuses" in response.json()["detail"]


def test_list_items_are_the_jobs_themselves(
    client: TestClient, loaded: tuple[str, dict[str, str]]
) -> None:
    _, headers = loaded
    items = client.get("/v1/jobs", params={"limit": 3}, headers=headers).json()["items"]
    for item in items:
        assert item == client.get(f"/v1/jobs/{item['id']}", headers=headers).json()
        assert [s["name"] for s in item["stages"]] == list(bulk.STAGES)
        assert item["stages"][0]["details"] == {"note": "bulk"}
        assert item["training"] is None and item["kind"] == "distill"


def test_metrics_since_epoch(client: TestClient, loaded: tuple[str, dict[str, str]]) -> None:
    tag, headers = loaded
    path = f"/v1/jobs/{bulk.row_id(tag, 'j', 0)}/metrics"
    every = client.get(path, headers=headers).json()
    assert len(every) == 20
    assert client.get(path, params={"since_epoch": 0}, headers=headers).json() == every
    later = client.get(path, params={"since_epoch": 2}, headers=headers).json()
    assert later == [p for p in every if p["epoch"] > 2] and len(later) == 10
    loss = client.get(path, params={"since_epoch": 3, "name": "loss"}, headers=headers).json()
    assert [(p["name"], p["epoch"], p["step"]) for p in loss] == [("loss", 4, 400)]
    assert loss[0]["value"] == pytest.approx(1.0 / 5, abs=1e-6)
    assert client.get(path, params={"since_epoch": 4}, headers=headers).json() == []
    for bad in ("-1", "x", "1.5"):
        response = client.get(path, params={"since_epoch": bad}, headers=headers)
        assert response.status_code == 422, (bad, response.text)


@pytest.fixture
def api(client: TestClient, loaded: tuple[str, dict[str, str]]) -> Iterator[Client]:
    """The Python client over the session's app (its event loop holds the database pool),
    as the loaded tenant."""
    api = Client("http://testserver", "unused")
    api._http = client
    client.headers["Authorization"] = loaded[1]["Authorization"]
    yield api
    del client.headers["Authorization"]


def test_the_client_asks_the_server_to_filter(
    api: Client, loaded: tuple[str, dict[str, str]]
) -> None:
    tag, _ = loaded
    assert [j["id"] for j in api.list_jobs("queued,running", limit=3)] == _jobs(tag, [8, 9, 18])
    assert [j["id"] for j in api.list_jobs("succeeded", limit=None)] == _jobs(
        tag, [n for n in range(25) if n % 10 < 6]
    )
    assert len(api.list_jobs(limit=None)) == 25 and len(api.list_jobs(limit=7)) == 7
    points = api.job_metrics(bulk.row_id(tag, "j", 1), since_epoch=3)
    assert sorted((p["epoch"], p["name"]) for p in points) == [(4, s) for s in sorted(bulk.SERIES)]


def _plan(conn: psycopg.Connection, statement: Select[Any]) -> str:
    compiled = statement.compile(
        dialect=pg_dialect.dialect(), compile_kwargs={"render_postcompile": True}
    )
    rows = conn.execute("EXPLAIN " + str(compiled), compiled.params).fetchall()
    return "\n".join(r[0] for r in rows)


def test_list_and_metrics_plans_use_indexes(settings: Settings) -> None:
    """20 tenants of 1,000 jobs, 5 stages each, 100 points for 300 jobs, analyzed: every
    read a list or a metrics poll makes seeks an index, the first page as a deep one.
    All in one transaction, rolled back: the session's database keeps none of it."""
    tag = uuid.uuid4().hex[:12]
    with psycopg.connect(_url(settings)) as conn:
        bulk.load(conn, tag, tenants=20, jobs=20_000, points_per_job=100, point_jobs=300)
        for table in ("tenants", "jobs", "job_stages", "metrics"):
            conn.execute(f"ANALYZE {table}")
        tenant = bulk.row_id(tag, "t", 0)
        # Tenant 0's jobs are 0, 20, 40...: job 10,000 is halfway down its list.
        middle = (datetime.now(UTC) - timedelta(seconds=10_000), bulk.row_id(tag, "j", 10_000))
        reads = {
            "first page": repository.job_page(tenant, 51, None),
            "deep page": repository.job_page(tenant, 51, middle),
            "one status": repository.job_page(tenant, 51, middle, ("running",)),
            "stages": repository.stage_rows(_jobs(tag, list(range(0, 1000, 20)))),
            "metrics since": repository.job_metrics(bulk.row_id(tag, "j", 20), None, 15),
            "series since": repository.job_metrics(bulk.row_id(tag, "j", 20), "loss", 15),
        }
        plans = {name: _plan(conn, statement) for name, statement in reads.items()}
        conn.rollback()
    for name, plan in plans.items():
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
    for name in ("first page", "deep page"):
        assert "ix_jobs_tenant_created" in plans[name], plans[name]
    assert "ix_jobs_tenant_status_created" in plans["one status"], plans["one status"]
    # The keyset condition is part of the index seek, not a filter over the newer rows.
    for name in ("deep page", "one status"):
        assert "Filter" not in plans[name], plans[name]
