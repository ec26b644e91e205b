"""A worker and its database on bad terms, on a real PostgreSQL: a message for
a stage this worker still holds is adopted (not dropped, not run twice), and
a database that stays away is retried only for the budget."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from core import lifecycle
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.lifecycle import LeaseLost
from core.queues import Stage
from core.storage import ArtifactStore
from tests.core.test_lifecycle import queued_job
from workers import jobs
from workers.context import WorkerContext
from workers.retry import transact

TEACHER = Stage.TEACHER_INFERENCE.value


def _context(settings: Settings, url: str, worker_id: str, tmp: Path) -> WorkerContext:
    return WorkerContext(
        settings=settings,
        sessions=make_sessionmaker(make_engine(url)),
        store=ArtifactStore(f"file://{tmp}/artifacts", tmp / "cache"),
        pool="cpu",
        device="cpu",
        worker_id=worker_id,
    )


@pytest.fixture
def contexts(settings: Settings, tmp_path: Path) -> Iterator[tuple[WorkerContext, WorkerContext]]:
    capped = settings.model_copy(update={"max_attempts": 3})
    url = settings.resolved_database_url
    pair = (_context(capped, url, "w1", tmp_path), _context(capped, url, "w2", tmp_path))
    yield pair
    for ctx in pair:
        ctx.sessions.kw["bind"].dispose()


@pytest.fixture
def job_id(contexts: tuple[WorkerContext, WorkerContext]) -> str:
    with contexts[0].sessions.begin() as session:
        return queued_job(session, "retry")


def test_a_stage_this_worker_still_holds_is_adopted_once(contexts, job_id) -> None:
    mine, other = contexts
    first = jobs.claim(mine, job_id, TEACHER)
    assert first is not None and first.attempts == 1
    # That run gave up on the database without letting go; its message comes again.
    assert jobs.claim(other, job_id, TEACHER) is None  # not the other worker's to take
    adopted = jobs.claim(mine, job_id, TEACHER)
    assert adopted is not None and adopted.lease != first.lease and adopted.attempts == 2
    with pytest.raises(LeaseLost), mine.sessions.begin() as session:
        lifecycle.fence(session, first, progress=0.5)  # what is left of the old run is fenced out

    mine.claim = adopted  # running here now: a redelivery must not start a second run
    assert jobs.claim(mine, job_id, TEACHER) is None
    mine.claim = None
    third = jobs.claim(mine, job_id, TEACHER)
    assert third is not None and third.attempts == 3
    assert jobs.claim(mine, job_id, TEACHER) is None  # attempts used up: the reaper's turn
    with mine.sessions() as session:
        assert lifecycle.cancel_requested(session, third) == (False, True)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_retried_for_the_budget_only(
    settings: Settings, tmp_path: Path
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/none"
    ctx = _context(settings.model_copy(update={"db_retry_s": 1.0}), url, "w1", tmp_path)
    tries: list[int] = []

    def work(session) -> None:
        tries.append(1)
        session.connection()

    with pytest.raises(OperationalError):
        transact(ctx, "a test write", work)
    assert len(tries) >= 2  # tried again (after 0.2 s, 0.4 s, ...) within the 1 s budget

    def fenced_out(session) -> None:
        tries.append(1)
        raise LeaseLost("not transient")

    tries.clear()
    with pytest.raises(LeaseLost):
        transact(ctx, "a fenced write", fenced_out)
    assert tries == [1]
