"""A private stack inside the test run: its own migrated database, data folder
and broker key prefix. Only the workers a test starts on it see its messages
and rows, so the session worker's sweeper cannot take over a test's uploads,
and a collector run with no grace period touches no other test's files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from core.config import Settings
from core.migrate import upgrade
from tests.conftest import PG_ADMIN


@contextmanager
def private_stack(base: Settings, folder: Path, **overrides: Any) -> Iterator[Settings]:
    name = f"stillhouse_private_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        upgrade(url)
        # The session prefix stays in front, so the session's clean-up removes these keys too.
        prefix = f"{base.broker_prefix}{uuid.uuid4().hex[:6]}:"
        update = {"database_url": url, "data_dir": folder, "broker_prefix": prefix, **overrides}
        yield base.model_copy(update=update)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(settings: Settings, query: str, *params: object) -> list[tuple[Any, ...]]:
    url = settings.resolved_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def inspector_processes(folder: Path) -> list[int]:
    """Pids of live inspector processes (python -m distill.inspector) reading a file under
    `folder`, whoever their parent is now (a killed worker's child is re-parented)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"distill.inspector" in argv and any(str(folder).encode() in a for a in argv):
            found.append(int(pid))
    return found
