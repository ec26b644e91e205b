"""Blob references and the garbage collector.

Blobs are content-addressed (`blobs/<sha[:2]>/<sha>`) and shared: two uploads
of one file, or a student whose weights equal an upload's, point at the same
blob. So a blob is never deleted with a row; the collector deletes the blobs
no row references, once they are older than a grace period (an upload or a
stage may have stored a blob it has not recorded yet; storing refreshes an
existing blob's time, see core.storage).

Where keys are recorded: `datasets.storage_key`, and strings inside JSON
columns (`models.files[*].key`; a job stage's `outputs` and `checkpoint`:
student and baseline weights, the ONNX export, checkpoints). Rather than a
hand-kept list of JSON paths, every JSON column of every table is searched for
strings that start with `blobs/`, so a column added later is covered without
anyone remembering to list it; tests/core/test_blobs.py checks the string
columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Select, literal, select, union_all
from sqlalchemy.orm import Session

from core.models import Base, Dataset, Model, utcnow
from core.storage import ArtifactStore, Blob

log = logging.getLogger("stillhouse.gc")
BLOB_PREFIX = "blobs/"
# String columns that hold an artifact key as their whole value.
KEY_COLUMNS: tuple[Any, ...] = (Dataset.storage_key,)


@dataclass(frozen=True)
class GcReport:
    blobs: int  # blobs found under blobs/
    referenced: int
    young: int  # unreferenced, but within the grace period
    deleted: int
    reclaimed_bytes: int
    dry_run: bool


def json_columns() -> list[Column[Any]]:
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, JSON)
    ]


def keys_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value that names a blob."""
    if isinstance(value, str):
        if value.startswith(BLOB_PREFIX):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from keys_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_in(item)


def referenced_keys(session: Session) -> set[str]:
    keys: set[str] = set()
    for column in KEY_COLUMNS:
        keys.update(k for k in session.scalars(select(column)) if k)
    for column in json_columns():
        query = select(column).where(column.is_not(None)).execution_options(yield_per=500)
        for value in session.scalars(query):
            keys.update(keys_in(value))
    return keys


def uses_blob(blob: Blob) -> Select[Any]:
    """A row that records this uploaded blob (datasets by key, models by their file's hash)."""
    return select(literal(1)).select_from(
        union_all(
            select(Dataset.id).where(Dataset.storage_key == blob.key),
            select(Model.id).where(Model.sha256 == blob.sha256),
        ).subquery()
    )


def collect(
    store: ArtifactStore, session: Session, grace_s: float, dry_run: bool = False
) -> GcReport:
    """Delete the blobs no row references that are older than `grace_s`. The store is
    listed before the references are read, so a row committed meanwhile is seen; a blob
    stored meanwhile is younger than the grace period, or refreshed, and kept."""
    listed = list(store.blobs())
    referenced = referenced_keys(session)
    cutoff = int((utcnow().timestamp() - grace_s) * 1e9)
    young = deleted = reclaimed = 0
    for blob in listed:
        if blob.key in referenced:
            continue
        if blob.stamp > cutoff:
            young += 1
            continue
        if dry_run or store.remove_if_unchanged(blob.key, blob.stamp):
            deleted += 1
            reclaimed += blob.size
    in_use = sum(b.key in referenced for b in listed)
    return GcReport(len(listed), in_use, young, deleted, reclaimed, dry_run)
