"""A job stage is claimed atomically: the second delivery finds nothing."""

from __future__ import annotations

from core import repository
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import Job, Tenant
from core.queues import Stage


def test_second_claim_of_a_stage_does_nothing(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            tenant = Tenant(name=f"claim-{id(session)}")
            session.add(tenant)
            session.flush()
            job = Job(
                tenant_id=tenant.id,
                name="j",
                spec={},
                queued_stage=Stage.TEACHER_INFERENCE.value,
                queued_pool="cpu",
            )
            session.add(job)
        stage = Stage.TEACHER_INFERENCE.value
        with sessions.begin() as session:
            first = session.execute(repository.claim_stage(job.id, stage, "w1")).rowcount
        with sessions.begin() as session:
            second = session.execute(repository.claim_stage(job.id, stage, "w2")).rowcount
        assert (first, second) == (1, 0)
        with sessions() as session:
            row = session.get(Job, job.id)
            assert row is not None
            assert (row.status, row.stage, row.worker_id, row.attempt) == (
                "running",
                stage,
                "w1",
                1,
            )
    finally:
        engine.dispose()
