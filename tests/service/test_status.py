"""GET /v1/jobs/{id}/status against real PostgreSQL and Redis: the record a worker's commit
publishes (through the same session hook a worker installs) answers polls without SQL,
matches the full job, is refused when stale, and is never needed: the database answers
when it is gone."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from core import lifecycle, repository
from core.auth import hash_key
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.lifecycle import Claim
from core.models import Job
from core.queues import JobStatus, Stage
from core.status import mark, records_of, status_query
from core.status_cache import StatusPublisher, install_publisher
from service.main import create_app
from tests.conftest import new_tenant
from tests.status_record import assert_record_matches_database, cached, drop, status_of

TEACHER = Stage.TEACHER_INFERENCE.value


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions as a worker makes them: each commit publishes the jobs it marked."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    install_publisher(factory, settings)
    yield factory
    engine.dispose()


def new_job(sessions: sessionmaker[Session], headers: dict[str, str]) -> str:
    """A queued job of the tenant whose key `headers` carries, with its stages."""
    key = headers["Authorization"].removeprefix("Bearer ")
    with sessions.begin() as session:
        tenant_id = session.scalar(repository.tenant_id_for_key(hash_key(key)))
        spec = {"training": {"epochs": 5}}
        job = Job(tenant_id=tenant_id, name="poll", spec=spec, status="queued", stage=TEACHER)
        session.add(job)
        session.flush()
        session.add_all(lifecycle.new_stages(job.id, spec, "cpu"))
        mark(session, job.id)
        return job.id


def claim_and_train(sessions: sessionmaker[Session], job_id: str, epoch: int = 2) -> Claim:
    with sessions.begin() as session:
        claim = lifecycle.claim(session, job_id, TEACHER, "host/cpu/cpu/1")
    with sessions.begin() as session:
        lifecycle.fence(session, claim, training_run="student", epoch=epoch, progress=0.1 * epoch)
    return claim


def get(client: TestClient, path: str, headers: dict[str, str], **extra: str) -> Any:
    return client.get(path, headers={**headers, **extra})


def test_status_is_the_job_less_spec_and_summary_and_a_hit_runs_no_sql(
    client: TestClient, auth: dict[str, str], settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = new_job(sessions, auth)
    claim_and_train(sessions, job_id)
    record = cached(settings, job_id)
    assert record[b"final"] == b"0" and record[b"tenant"]  # the worker's commit published it
    expected = assert_record_matches_database(client, auth, settings, job_id)
    assert expected["status"] == "running" and expected["attempt"] == 1
    assert expected["training"] == {"run": "student", "epoch": 2, "epochs": 5}

    statements: list[str] = []
    engine = client.app.state.stillhouse.engine.sync_engine  # type: ignore[attr-defined]
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    get(client, f"/v1/jobs/{job_id}/status", auth)  # the key is in the key cache now
    event.listen(engine, "before_cursor_execute", listener)
    try:
        response = get(client, f"/v1/jobs/{job_id}/status", auth)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert response.status_code == 200 and response.json() == expected
    assert response.content == record[b"body"]  # the stored bytes, as they are
    assert statements == []


@pytest.mark.parametrize("suffix", ["/status", ""])
def test_etag_and_if_none_match(
    client: TestClient,
    auth: dict[str, str],
    sessions: sessionmaker[Session],
    suffix: str,
) -> None:
    job_id = new_job(sessions, auth)
    path = f"/v1/jobs/{job_id}{suffix}"
    first = get(client, path, auth)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"')
    again = get(client, path, auth, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert get(client, path, auth, **{"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert get(client, path, auth, **{"If-None-Match": '"other"'}).status_code == 200

    claim_and_train(sessions, job_id)
    changed = get(client, path, auth, **{"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["status"] == "running"


def test_another_tenant_gets_404_from_the_record_and_from_the_database(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions, auth)
    other = new_tenant(settings)
    assert cached(settings, job_id)  # the record is there: its tenant is checked
    assert get(client, f"/v1/jobs/{job_id}/status", other).status_code == 404
    drop(settings, job_id)
    assert get(client, f"/v1/jobs/{job_id}/status", other).status_code == 404
    assert cached(settings, job_id) == {}  # nothing published for a reader who may not see it
    missing = "00000000-0000-4000-8000-000000000000"
    assert get(client, f"/v1/jobs/{missing}/status", auth).status_code == 404
    assert get(client, f"/v1/jobs/{job_id}/status", {}).status_code == 401


def test_a_lost_record_is_read_from_the_database_and_published_again(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions, auth)
    claim_and_train(sessions, job_id, epoch=3)
    drop(settings, job_id)
    response = get(client, f"/v1/jobs/{job_id}/status", auth)
    assert response.status_code == 200
    assert response.json() == status_of(get(client, f"/v1/jobs/{job_id}", auth).json())
    assert response.json()["training"]["epoch"] == 3
    assert cached(settings, job_id)[b"body"] == response.content


def test_a_stale_record_never_replaces_a_newer_or_a_final_one(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions, auth)
    with sessions() as session:
        queued = records_of(session.execute(status_query([job_id])).all())[job_id]
    claim = claim_and_train(sessions, job_id)
    publisher = StatusPublisher(settings.resolved_broker_url, settings.broker_prefix)
    assert not publisher.write(queued)  # older than the running record
    assert get(client, f"/v1/jobs/{job_id}/status", auth).json()["status"] == "running"

    with sessions.begin() as session:
        lifecycle.fail(session, claim, "the teacher's outputs were NaN")
    assert cached(settings, job_id)[b"final"] == b"1"
    # A non-final record never replaces a final one, even with a newer version (another
    # host's clock may run ahead).
    ahead = dataclasses.replace(queued, version=queued.version + 10**12)
    assert not publisher.write(ahead)
    body = get(client, f"/v1/jobs/{job_id}/status", auth).json()
    assert body["status"] == "failed" and body["error"] == "the teacher's outputs were NaN"
    assert body == status_of(get(client, f"/v1/jobs/{job_id}", auth).json())


def test_a_cancel_through_the_gateway_publishes_the_final_state(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions, auth)
    assert get(client, f"/v1/jobs/{job_id}/status", auth).json()["status"] == "queued"
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert cached(settings, job_id)[b"final"] == b"1"
    body = assert_record_matches_database(client, auth, settings, job_id, timeout=0)
    assert body["status"] == JobStatus.CANCELLED.value
    assert {s["status"] for s in body["stages"]} == {"cancelled"}


def test_embedded_mode_reads_the_database_every_time(
    settings: Settings, auth: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    job_id = new_job(sessions, auth)
    drop(settings, job_id)
    embedded = settings.model_copy(update={"broker_url": ""})  # the filesystem broker
    with TestClient(create_app(embedded)) as local:
        assert local.app.state.stillhouse.status is None  # type: ignore[attr-defined]
        for _ in range(2):
            response = get(local, f"/v1/jobs/{job_id}/status", auth)
            assert response.status_code == 200, response.text
            assert response.json() == status_of(get(local, f"/v1/jobs/{job_id}", auth).json())
    assert cached(settings, job_id) == {}


def test_with_redis_away_polls_read_the_database(
    settings: Settings, auth: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    job_id = new_job(sessions, auth)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    with TestClient(create_app(settings.model_copy(update={"broker_url": dead}))) as away:
        for _ in range(2):  # the refused connection, then the paused cache
            response = get(away, f"/v1/jobs/{job_id}/status", auth)
            assert response.status_code == 200, response.text
            assert response.json() == status_of(get(away, f"/v1/jobs/{job_id}", auth).json())
