"""What one worker process holds: settings, database sessions, the artifact
store, its identity, and the stage it holds (read by the heartbeat thread)."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.db import make_engine, make_sessionmaker
from core.lifecycle import Claim
from core.status_cache import install_publisher
from core.storage import ArtifactStore


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ArtifactStore
    pool: str
    device: str
    worker_id: str
    # The stage this process holds now; the heartbeat thread renews its lease.
    claim: Claim | None = None
    # Set by the heartbeat thread when the held stage's lease no longer matches.
    lease_lost: threading.Event = field(default_factory=threading.Event)
    # When this worker last started collecting unreferenced blobs, and that collection.
    gc_started: float = -float("inf")
    gc_thread: threading.Thread | None = None

    @property
    def current_job_id(self) -> str | None:
        return self.claim.job_id if self.claim is not None else None


@cache
def context() -> WorkerContext:
    settings = get_settings()
    pool, device = settings.worker_pool, settings.worker_device
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    # Each commit that changed a job publishes its status record (core.status).
    install_publisher(sessions, settings)
    return WorkerContext(
        settings=settings,
        sessions=sessions,
        store=ArtifactStore(settings.resolved_storage_url, settings.data_dir / "cache"),
        pool=pool,
        device=device,
        worker_id=f"{socket.gethostname()}/{pool}/{device}/{os.getpid()}",
    )
