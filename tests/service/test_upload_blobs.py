"""A failed upload request leaves neither row nor blob; a blob that another
row (or another request) uses is never removed with it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.storage import ArtifactStore, blob_key
from tests.conftest import new_tenant
from tests.stack import sql


@pytest.fixture(scope="module")
def store(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.resolved_storage_url)


def unique_bytes() -> bytes:
    return f"not really an npz {uuid.uuid4()}".encode()


def stored(store: ArtifactStore, content: bytes) -> bool:
    return store.exists(blob_key(hashlib.sha256(content).hexdigest()))


def rows(settings: Settings, auth: dict[str, str]) -> int:
    key_hash = hashlib.sha256(auth["Authorization"].split()[1].encode()).hexdigest()
    query = (
        "SELECT (SELECT count(*) FROM datasets d WHERE d.tenant_id = k.tenant_id) + "
        "(SELECT count(*) FROM models m WHERE m.tenant_id = k.tenant_id) "
        "FROM api_keys k WHERE k.key_hash = %s"
    )
    found = sql(settings, query, key_hash)
    return int(found[0][0]) if found else 0


def test_an_empty_upload_leaves_no_blob(
    client: TestClient, auth: dict[str, str], settings: Settings, store: ArtifactStore
) -> None:
    response = client.post("/v1/datasets", headers=auth, files={"file": ("e.npz", b"")})
    assert response.status_code == 422
    assert not stored(store, b"") and rows(settings, auth) == 0


def test_a_refused_retry_leaves_no_blob_and_keeps_the_first(
    client: TestClient, auth: dict[str, str], settings: Settings, store: ArtifactStore
) -> None:
    """The same Idempotency-Key with another file: 422, and that file is not kept; the
    first request's file, which a row records, stays."""
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    first, second = unique_bytes(), unique_bytes()
    created = client.post("/v1/datasets", headers=headers, files={"file": ("a.npz", first)})
    assert created.status_code == 201
    refused = client.post("/v1/datasets", headers=headers, files={"file": ("b.npz", second)})
    assert refused.status_code == 422
    assert stored(store, first) and not stored(store, second)
    # Same file under a new name with the same key: refused too, and the shared blob stays.
    again = client.post(
        "/v1/datasets", headers=headers, files={"file": ("a.npz", first)}, data={"name": "other"}
    )
    assert again.status_code == 422
    assert stored(store, first) and rows(settings, auth) == 1


@pytest.fixture
def lenient(settings: Settings) -> Iterator[TestClient]:
    """The app answering 500 instead of raising into the test."""
    from service.main import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_a_failed_insert_leaves_no_blob(
    lenient: TestClient, settings: Settings, store: ArtifactStore
) -> None:
    """The tenant is deleted after its key was cached, so the insert fails (a foreign
    key): whatever the answer, the file the request stored is gone again."""
    auth = new_tenant(settings)
    assert lenient.get("/v1/datasets", headers=auth).status_code == 200  # key now cached
    key_hash = hashlib.sha256(auth["Authorization"].split()[1].encode()).hexdigest()
    sql(
        settings,
        "DELETE FROM tenants WHERE id = (SELECT tenant_id FROM api_keys WHERE key_hash = %s)",
        key_hash,
    )
    content = unique_bytes()
    response = lenient.post("/v1/datasets", headers=auth, files={"file": ("d.npz", content)})
    assert response.status_code >= 400
    assert not stored(store, content)
