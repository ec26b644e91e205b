"""The content-addressed store's rules for removing blobs, and where blob keys
are recorded. (The collector on a real job: tests/e2e/test_gc.py.)"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from sqlalchemy import String

from core.blobs import KEY_COLUMNS, json_columns, keys_in
from core.models import Base
from core.storage import ArtifactStore

# String columns whose name says "key" but that hold no artifact key, and why.
NOT_ARTIFACT_KEYS = {
    "api_keys.key_hash": "a hash of an API key",
    "idempotency_keys.key": "a client's Idempotency-Key header",
}


def test_every_key_column_is_searched() -> None:
    """A new column that may hold an artifact key must be added to KEY_COLUMNS (or be
    JSON, which is searched whole), or listed above with a reason."""
    searched = {f"{c.table.name}.{c.name}" for c in KEY_COLUMNS}
    keyish = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String) and "key" in column.name
    }
    assert keyish == searched | set(NOT_ARTIFACT_KEYS)
    names = {f"{c.table.name}.{c.name}" for c in json_columns()}
    assert {"models.files", "job_stages.outputs", "job_stages.checkpoint"} <= names


def test_keys_in_finds_nested_blob_keys() -> None:
    value = {
        "student": {"weights": "blobs/ab/abc", "best": {"epoch": 3}},
        "logits": {"train": "cache/teacher-logits/t/d/logits.npy"},
        "runs": [{"key": "blobs/cd/cde"}, "blobs/ef/efg", 7, None],
    }
    assert sorted(keys_in(value)) == ["blobs/ab/abc", "blobs/cd/cde", "blobs/ef/efg"]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'store'}")


def test_storing_existing_content_refreshes_it(store: ArtifactStore) -> None:
    first = store.put_blob(io.BytesIO(b"same bytes"))
    path = Path(store.root) / first.key
    os.utime(path, ns=(1, 1))  # as if stored long ago
    second = store.put_blob(io.BytesIO(b"same bytes"))
    assert first.created_stamp is not None and second.created_stamp is None
    assert second.key == first.key and path.stat().st_mtime_ns > 1
    assert not list((Path(store.root) / "tmp").iterdir())


def test_a_failed_request_removes_only_what_nobody_else_stored(store: ArtifactStore) -> None:
    mine = store.put_blob(io.BytesIO(b"only mine"))
    assert store.discard(mine) and not store.exists(mine.key)
    # Another upload of the same content arrived before the failed one cleaned up.
    shared = store.put_blob(io.BytesIO(b"shared"))
    store.put_blob(io.BytesIO(b"shared"))
    assert not store.discard(shared) and store.exists(shared.key)
    # A blob that was there before the failed request is not the request's to remove.
    again = store.put_blob(io.BytesIO(b"shared"))
    assert again.created_stamp is None and not store.discard(again)
    assert store.exists(shared.key)
    assert not list((Path(store.root) / "tmp").iterdir())


def test_removal_checks_the_time_it_listed(store: ArtifactStore) -> None:
    blob = store.put_blob(io.BytesIO(b"listed"))
    (listed,) = store.blobs()
    assert (listed.key, listed.size) == (blob.key, 6)
    store.put_blob(io.BytesIO(b"listed"))  # refreshed after the listing
    assert not store.remove_if_unchanged(listed.key, listed.stamp)
    assert store.exists(blob.key)
    (relisted,) = store.blobs()
    assert store.remove_if_unchanged(relisted.key, relisted.stamp)
    assert list(store.blobs()) == []


def test_object_store_branch(tmp_path: Path) -> None:
    """fsspec's memory filesystem stands in for S3: no atomic rename, same rules."""
    store = ArtifactStore(f"memory://stillhouse-{tmp_path.name}")
    assert not store.is_local
    first = store.put_blob(io.BytesIO(b"remote"))
    assert first.created_stamp is not None
    assert store.put_blob(io.BytesIO(b"remote")).created_stamp is None
    (listed,) = store.blobs()
    assert listed.key == first.key and listed.size == 6
    assert store.remove_if_unchanged(listed.key, listed.stamp)
    assert not store.exists(first.key)
