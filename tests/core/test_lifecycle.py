"""The job state machine on a real PostgreSQL: every transition is a
conditional UPDATE, so a second claimant, a late reaper or a worker whose
lease was taken over changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import lifecycle, recovery
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.dispatch import Message
from core.lifecycle import LeaseLost, NotClaimed, Student
from core.models import Job, JobStage, Model, Tenant, utcnow
from core.queues import JobStatus, Stage
from core.recovery import StaleStage

TEACHER, TRAINING = Stage.TEACHER_INFERENCE.value, Stage.TRAINING.value


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def queued_job(session: Session, label: str) -> str:
    """A new tenant's queued job with its stages, waiting for teacher inference."""
    tenant = Tenant(name=f"{label}-{uuid.uuid4().hex[:8]}")
    session.add(tenant)
    session.flush()
    job = Job(tenant_id=tenant.id, name="j", spec={}, status="queued", stage=TEACHER)
    session.add(job)
    session.flush()
    session.add_all(lifecycle.new_stages(job.id, job.spec, "cpu"))
    return job.id


@pytest.fixture
def job_id(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        return queued_job(session, "lifecycle")


def _claim(sessions: sessionmaker[Session], job_id: str, stage: str, worker: str):
    with sessions.begin() as session:
        return lifecycle.claim(session, job_id, stage, worker)


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _stage(sessions: sessionmaker[Session], job_id: str, name: str) -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == job_id, JobStage.name == name)
        ).one()


def test_second_claim_of_a_stage_does_nothing(sessions, job_id) -> None:
    first = _claim(sessions, job_id, TEACHER, "w1")
    with pytest.raises(NotClaimed):
        _claim(sessions, job_id, TEACHER, "w2")
    with pytest.raises(NotClaimed):  # a stage that is not the job's current one
        _claim(sessions, job_id, TRAINING, "w2")
    stage = _stage(sessions, job_id, TEACHER)
    assert (stage.status, stage.worker_id, stage.lease, stage.attempts) == (
        "running",
        "w1",
        first.lease,
        1,
    )
    assert _job(sessions, job_id).status == "running"


def test_complete_queues_the_next_stage_and_the_job_waits(sessions, job_id) -> None:
    claim = _claim(sessions, job_id, TEACHER, "w1")
    with sessions.begin() as session:
        message = lifecycle.complete(session, claim, {"logits": {}}, "gpu")
    assert message == Message(
        lifecycle.stage_message(job_id, TRAINING, "gpu").task, (job_id, TRAINING), "gpu"
    )
    job = _job(sessions, job_id)
    assert (job.status, job.stage) == ("queued", TRAINING)
    assert _stage(sessions, job_id, TRAINING).status == "queued"
    with pytest.raises(LeaseLost), sessions.begin() as session:  # the stage is over
        lifecycle.fence(session, claim, progress=0.5)
    later = _claim(sessions, job_id, TRAINING, "w2")
    assert later.inputs == {TEACHER: {"logits": {}}}


def _age(sessions: sessionmaker[Session], job_id: str, name: str, seconds: float) -> StaleStage:
    with sessions.begin() as session:
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == job_id, JobStage.name == name)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )
    with sessions() as session:
        rows = session.execute(recovery.stale_stages(utcnow(), 10)).all()
    return next(StaleStage(**r._asdict()) for r in rows if r.job_id == job_id)


def test_reaper_requeues_then_fences_out_the_silent_worker(sessions, job_id) -> None:
    paused = _claim(sessions, job_id, TEACHER, "w1")
    stale = _age(sessions, job_id, TEACHER, 60)
    with sessions.begin() as session:
        again = recovery.reap(session, stale, 10, max_attempts=3, pool="cpu")
    assert isinstance(again, Message)
    with sessions.begin() as session:  # a second reaper finds nothing to do
        assert recovery.reap(session, stale, 10, max_attempts=3, pool="cpu") is None
    assert _job(sessions, job_id).status == "queued"
    rescuer = _claim(sessions, job_id, TEACHER, "w2")
    assert rescuer.attempts == 2
    with pytest.raises(LeaseLost), sessions.begin() as session:
        lifecycle.fence(session, paused, progress=0.9)  # the paused worker wakes up
    with sessions() as session:
        assert lifecycle.cancel_requested(session, paused) == (False, False)
        assert lifecycle.cancel_requested(session, rescuer) == (False, True)
    assert _job(sessions, job_id).progress != 0.9


def test_reaper_fails_the_job_when_attempts_are_used_up(sessions, job_id) -> None:
    _claim(sessions, job_id, TEACHER, "w1")
    stale = _age(sessions, job_id, TEACHER, 60)
    with sessions.begin() as session:
        assert recovery.reap(session, stale, 10, max_attempts=1, pool="cpu") == JobStatus.FAILED
    job = _job(sessions, job_id)
    assert job.status == "failed" and "stopped responding 1 time" in (job.error or "")
    assert {s.status for s in _stages(sessions, job_id)} == {"failed", "cancelled"}


def _stages(sessions: sessionmaker[Session], job_id: str) -> list[JobStage]:
    with sessions() as session:
        return list(session.scalars(select(JobStage).where(JobStage.job_id == job_id)))


def test_cancel_before_the_finish_registers_no_student(sessions, job_id) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(stage="benchmark"))
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == job_id, JobStage.name == "benchmark")
            .values(status="queued")
        )
    claim = _claim(sessions, job_id, "benchmark", "w1")
    tenant_id = _job(sessions, job_id).tenant_id
    with sessions.begin() as session:
        assert session.scalar(lifecycle.request_cancel(job_id, tenant_id)) == "running"
    student = Student(
        id=str(uuid.uuid4()),
        values={
            "tenant_id": tenant_id,
            "name": "s",
            "format": "onnx",
            "sha256": "0" * 64,
            "size_bytes": 1,
        },
    )
    with sessions.begin() as session:
        outcome = lifecycle.complete(session, claim, {}, None, student, {"x": 1})
    assert outcome == JobStatus.CANCELLED
    job = _job(sessions, job_id)
    assert (job.status, job.student_model_id, job.summary) == ("cancelled", None, None)
    with sessions() as session:
        assert session.get(Model, student.id) is None


def test_cancel_of_a_queued_job_is_final(sessions, job_id) -> None:
    tenant_id = _job(sessions, job_id).tenant_id
    with sessions.begin() as session:
        assert session.scalar(lifecycle.request_cancel(job_id, tenant_id)) == "cancelled"
        assert session.scalar(lifecycle.request_cancel(job_id, tenant_id)) is None
    with pytest.raises(NotClaimed):  # its message, delivered later, starts nothing
        _claim(sessions, job_id, TEACHER, "w1")
