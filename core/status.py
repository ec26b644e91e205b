"""A job's status record: what a poll needs (status, stage, progress, the stage list),
without the job's `spec` and `summary`, as JSON bytes ready to send.

The database stays the record. A copy of each job's status lives in Redis (a hash at
`<broker_prefix>status:job:<id>`: tenant, v, final, etag, body) so that a poll costs one
HMGET instead of SQL; it is only ever written from values read from the database after a
commit (core.status_cache), through a Lua script that refuses

- a record older than the one stored (v: the job's `updated_at` in microseconds), and
- a non-final record over a final one (a finished job never moves again, so a final
  record is true for good).

Non-final records expire after NON_FINAL_TTL_S, so a publish that was lost (Redis away
at that moment) heals within seconds; a lost record is read again from the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.models import Job, JobStage
from core.queues import JobStatus
from core.stages import job_kind

FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}
)
# A live job's record lives this long unless a newer one replaces it: the longest a lost
# publish can leave a poll behind the database.
NON_FINAL_TTL_S = 30
# A finished job's record never changes; a day keeps the polls of late readers cheap.
FINAL_TTL_S = 24 * 3600
# Where a session notes the jobs its transaction changed (core.lifecycle marks them; the
# worker's after_commit hook publishes them, core.status_cache).
TOUCHED = "stillhouse.status.touched"
STAGE_FIELDS = (
    "name",
    "status",
    "pool",
    "worker_id",
    "device",
    "attempts",
    "started_at",
    "finished_at",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def mark(session: Session, job_id: str) -> None:
    """Note that this transaction changed the job's row: publish its status after the commit."""
    session.info.setdefault(TOUCHED, set()).add(job_id)


def touched(session: Session) -> set[str]:
    """The jobs marked since the last call (the marks are cleared)."""
    found: set[str] = session.info.pop(TOUCHED, set())
    return found


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every one we store is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def micros(value: datetime) -> int:
    stamp = utc(value)
    assert stamp is not None
    return (stamp - _EPOCH) // _MICRO


def training_progress(job: Any) -> dict[str, Any] | None:
    """{run, epoch, epochs} of the training run going on (or last run); None before one."""
    run = job.training_run
    if run not in ("student", "baseline"):
        return None
    training = job.spec.get("training") if isinstance(job.spec, dict) else None
    epochs = training.get("epochs") if isinstance(training, dict) else None
    return {
        "run": run,
        "epoch": job.epoch if run == "student" else (job.baseline_epoch or 0),
        "epochs": epochs if isinstance(epochs, int) else 0,
    }


def status_doc(
    job: Any, stages: Sequence[Any], stage_docs: list[Any] | None = None
) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it, less `spec` and `summary`, and with each
    stage's placement and timing only. `job` and `stages` are ORM rows or any objects with
    the same attributes (core.status_cache reads plain rows). A caller that shows the
    stages otherwise (the whole job's representation) passes its own `stage_docs`."""
    current = next((s for s in stages if s.name == job.stage), None)
    if stage_docs is None:
        stage_docs = [
            {
                name: utc(value) if isinstance(value, datetime) else value
                for name in STAGE_FIELDS
                for value in (getattr(s, name),)
            }
            for s in sorted(stages, key=lambda s: s.position)
        ]
    return {
        "id": job.id,
        "kind": job_kind(job.spec),
        "name": job.name,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "epoch": job.epoch,
        "training": training_progress(job),
        "error": job.error,
        "attempt": current.attempts if current is not None else 0,
        "cancel_requested": job.cancel_requested,
        "student_model_id": job.student_model_id,
        "warnings": list(job.warnings or []),
        "stages": stage_docs,
        "created_at": utc(job.created_at),
        "started_at": utc(job.started_at),
        "finished_at": utc(job.finished_at),
        "updated_at": utc(job.updated_at),
        "heartbeat_at": utc(current.heartbeat_at) if current is not None else None,
    }


def etag_of(body: bytes) -> str:
    """A strong validator for a representation: the hash of its bytes."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(frozen=True)
class StatusRecord:
    job_id: str
    tenant_id: str
    version: int  # the job's updated_at, in microseconds
    final: bool
    body: bytes  # the status document as JSON
    etag: str

    @property
    def ttl_s(self) -> int:
        return FINAL_TTL_S if self.final else NON_FINAL_TTL_S

    @staticmethod
    def of(job: Any, stages: Sequence[Any]) -> StatusRecord:
        body = to_json(status_doc(job, stages))
        return StatusRecord(
            job_id=job.id,
            tenant_id=job.tenant_id,
            version=micros(job.updated_at),
            final=job.status in FINAL_STATUSES,
            body=body,
            etag=etag_of(body),
        )


# -- reading a record from the database: one statement, one round trip ------------------

JOB_COLUMNS = (
    "id",
    "tenant_id",
    "name",
    "status",
    "stage",
    "progress",
    "epoch",
    "training_run",
    "baseline_epoch",
    "error",
    "cancel_requested",
    "student_model_id",
    "warnings",
    "spec",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
STAGE_COLUMNS = (*STAGE_FIELDS, "position", "heartbeat_at")


@dataclass
class _Row:
    """A job or stage rebuilt from a joined row's columns (attribute access, as ORM rows)."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def status_query(job_ids: Iterable[str], tenant_id: str | None = None) -> Select[Any]:
    """The jobs' columns a record needs, one row per stage (a LEFT JOIN, so a job is
    found even without stages); `tenant_id` limits it to that tenant's jobs."""
    stage_cols = [getattr(JobStage, c).label(f"stage_{c}") for c in STAGE_COLUMNS]
    query = (
        select(*(getattr(Job, c) for c in JOB_COLUMNS), *stage_cols)
        .outerjoin(JobStage, JobStage.job_id == Job.id)
        .where(Job.id.in_(list(job_ids)))
    )
    return query.where(Job.tenant_id == tenant_id) if tenant_id is not None else query


def records_of(rows: Iterable[Any]) -> dict[str, StatusRecord]:
    """The records of the rows `status_query` returned, by job id."""
    jobs: dict[str, _Row] = {}
    stages: dict[str, list[_Row]] = {}
    for row in rows:
        values = row._mapping
        job_id = values["id"]
        if job_id not in jobs:
            jobs[job_id] = _Row({c: values[c] for c in JOB_COLUMNS})
            stages[job_id] = []
        if values["stage_name"] is not None:
            stages[job_id].append(_Row({c: values[f"stage_{c}"] for c in STAGE_COLUMNS}))
    return {job_id: StatusRecord.of(job, stages[job_id]) for job_id, job in jobs.items()}


# -- the Redis side: the key and the compare-and-set script ------------------------------


def status_key(prefix: str, job_id: str) -> str:
    return f"{prefix}status:job:{job_id}"


RECORD_FIELDS = ("tenant", "etag", "body")
# KEYS[1]: the record. ARGV: tenant, v, final (1/0), etag, body, ttl. Returns 1 when written.
PUBLISH_LUA = """
local old = redis.call('HMGET', KEYS[1], 'v', 'final')
if old[1] then
  local new_final = ARGV[3] == '1'
  local old_final = old[2] == '1'
  if old_final and not new_final then return 0 end
  if new_final == old_final and tonumber(ARGV[2]) < tonumber(old[1]) then return 0 end
end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'v', ARGV[2], 'final', ARGV[3],
           'etag', ARGV[4], 'body', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


def publish_args(record: StatusRecord) -> list[Any]:
    return [
        record.tenant_id,
        record.version,
        1 if record.final else 0,
        record.etag,
        record.body,
        record.ttl_s,
    ]
