"""The `Idempotency-Key` header on the create endpoints: a retry gets the first
response back and creates nothing; a reused key for another request is refused."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from service.idempotency import Idempotency
from tests.conftest import new_tenant, npz_bytes
from tests.e2e.test_digits_job import job_body, upload_digits

DATA = npz_bytes(x=np.zeros((4, 3), np.float32))
OTHER_DATA = npz_bytes(x=np.ones((4, 3), np.float32))


def _key() -> str:
    return f"retry-{uuid.uuid4()}"


def _post_dataset(
    client: TestClient, auth: dict[str, str], key: str, content: bytes = DATA
) -> httpx.Response:
    return client.post(
        "/v1/datasets",
        headers={**auth, "Idempotency-Key": key},
        files={"file": ("d.npz", content)},
        data={"name": "d"},
    )


def _items(client: TestClient, auth: dict[str, str], kind: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/{kind}", headers=auth)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _assert_reused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "idempotency_key_reused"
    assert "different request" in response.json()["detail"]


def test_dataset_retry_returns_the_first_response(client: TestClient, auth: dict[str, str]):
    key = _key()
    first = _post_dataset(client, auth, key)
    again = _post_dataset(client, auth, key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert [d["id"] for d in _items(client, auth, "datasets")] == [first.json()["id"]]


def test_without_the_header_each_post_creates(client: TestClient, auth: dict[str, str]):
    for _ in range(2):
        response = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", DATA)})
        assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert len(_items(client, auth, "datasets")) == 2


def test_same_key_for_another_file_is_refused(client: TestClient, auth: dict[str, str]):
    key = _key()
    assert _post_dataset(client, auth, key).status_code == 201
    _assert_reused(_post_dataset(client, auth, key, OTHER_DATA))
    assert len(_items(client, auth, "datasets")) == 1


def test_keys_are_per_tenant(client: TestClient, auth: dict[str, str], settings: Settings):
    key = _key()
    mine = _post_dataset(client, auth, key)
    other = new_tenant(settings)
    theirs = _post_dataset(client, other, key)
    assert mine.status_code == theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert len(_items(client, other, "datasets")) == 1


def test_model_retry_returns_the_same_model(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
):
    key, content = _key(), digits.teacher_onnx.read_bytes()

    def post(name: str) -> httpx.Response:
        return client.post(
            "/v1/models",
            headers={**auth, "Idempotency-Key": key},
            files={"file": ("teacher.onnx", content)},
            data={"name": name},
        )

    first, again = post("teacher"), post("teacher")
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    _assert_reused(post("another name"))
    assert len(_items(client, auth, "models")) == 1


@pytest.mark.usefixtures("worker")
def test_job_retry_returns_the_same_job(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
):
    ids = upload_digits(client, auth, digits)
    headers = {**auth, "Idempotency-Key": _key()}
    body = job_body(ids, training={"epochs": 1})
    first = client.post("/v1/jobs", headers=headers, json=body)
    again = client.post("/v1/jobs", headers=headers, json=body)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    _assert_reused(client.post("/v1/jobs", headers=headers, json={**body, "name": "changed"}))
    assert [j["id"] for j in _items(client, auth, "jobs")] == [first.json()["id"]]


@pytest.mark.parametrize("key", ["k" * 256, "", "schlüssel".encode("latin-1")])
def test_invalid_keys_are_422(client: TestClient, auth: dict[str, str], key: str | bytes):
    response = client.post(
        "/v1/datasets",
        headers={**auth, "Idempotency-Key": key},  # type: ignore[dict-item]
        files={"file": ("d.npz", DATA)},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert "Idempotency-Key" in response.json()["detail"]
    assert _items(client, auth, "datasets") == []


def test_longest_key_is_accepted(client: TestClient, auth: dict[str, str]):
    key = "k" * 255
    first, again = _post_dataset(client, auth, key), _post_dataset(client, auth, key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]


def _race(client: TestClient, auth: dict[str, str], key: str) -> list[httpx.Response]:
    """Two first requests with one key, released at the same moment."""
    barrier = threading.Barrier(2)
    responses: list[httpx.Response] = []

    def post() -> None:
        barrier.wait()
        responses.append(_post_dataset(client, auth, key))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses


def test_concurrent_first_requests_create_one_dataset(client: TestClient, auth: dict[str, str]):
    rounds = 4
    for _ in range(rounds):
        responses = _race(client, auth, _key())
        assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
        assert responses[0].json()["id"] == responses[1].json()["id"]
        assert sum("Idempotent-Replayed" in r.headers for r in responses) == 1
    assert len(_items(client, auth, "datasets")) == rounds


def test_losing_a_race_answers_like_a_retry(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    """Deterministic form of the race: the check runs before the winner's row
    exists, so the loser's insert hits the primary key and must fall back."""
    key = _key()
    first = _post_dataset(client, auth, key)

    async def not_yet_there(self: Idempotency, session: Any, key: str) -> None:
        return None

    monkeypatch.setattr(Idempotency, "_live_row", not_yet_there)
    again = _post_dataset(client, auth, key)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    _assert_reused(_post_dataset(client, auth, key, OTHER_DATA))
    assert len(_items(client, auth, "datasets")) == 1


def test_expired_key_starts_over(client: TestClient, auth: dict[str, str], settings: Settings):
    key = _key()
    old = _post_dataset(client, auth, key)
    url = settings.resolved_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - make_interval(secs => %s) "
            "WHERE key = %s",
            (settings.idempotency_ttl_s + 60, key),
        )
    # A different request is no longer a reuse: the old row counts as absent.
    new = _post_dataset(client, auth, key, OTHER_DATA)
    assert new.status_code == 201 and "Idempotent-Replayed" not in new.headers
    assert new.json()["id"] != old.json()["id"]
    again = _post_dataset(client, auth, key, OTHER_DATA)
    assert again.json()["id"] == new.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM idempotency_keys WHERE key = %s", (key,))
        assert rows.fetchone() == (1,)
    assert len(_items(client, auth, "datasets")) == 2
