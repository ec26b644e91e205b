"""SQLAlchemy tables: the source of truth for every tenant, key, model,
dataset, job, metric and worker. Relationships are not declared: every
query is explicit, so nothing lazy-loads behind a request's back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


Timestamp = DateTime(timezone=True)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # sha256 of the key: keys are 32 random bytes, so a fast hash is enough (no password stretching).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class Upload:
    """Columns every uploaded resource has: owner, name, inspection status, the file."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))

    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(300), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    # The inspection's claim, as a job stage's (core/inspection.py): how many inspections
    # started, the lease of the one running now, and that one's last sign of life.
    inspect_attempts: Mapped[int] = mapped_column(Integer, default=0)
    inspect_lease: Mapped[str | None] = mapped_column(String(36), nullable=True)
    inspect_heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class Model(Upload, Base):
    __tablename__ = "models"
    # {"onnx": {"key": ..., "sha256": ..., "size_bytes": ...}, "safetensors": {...}}
    files: Mapped[dict[str, Any]] = mapped_column(default=dict)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    input_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    output_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    num_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # ONNX models: the graph's named intermediate tensors, [{"name", "shape"}], that a
    # feature-level loss may ask the teacher for (shape without the batch dim; None if unknown).
    tensors: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_models_tenant_created", "tenant_id", "created_at", "id"),)


class Dataset(Upload, Base):
    __tablename__ = "datasets"
    storage_key: Mapped[str] = mapped_column(String(200))
    num_samples: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sample_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    labeled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # What the upload said about reading the file: {"label_column"} for CSV / Parquet,
    # {"image_size": [H, W]} for an image-folder zip; None for .npz.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Set by inspection: the artifact keys of the canonical arrays every stage reads,
    # memory-mapped, {"x": key, "y": key | None, "x_dtype": "float32" | "int64"}.
    arrays: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column()
    # queued | running | succeeded | failed | cancelled; core.lifecycle holds the transitions.
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # The stage running now, or the one the job waits for while it is queued.
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # the distilled student's epochs
    # The training run going on or last run ("student", then "baseline"), and the
    # baseline's epochs: a status read shows both runs' progress.
    training_run: Mapped[str | None] = mapped_column(String(16), nullable=True)
    baseline_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    student_model_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Sentences about where the job will run, e.g. a pool with no live worker: the job is
    # accepted and waits, and the user is told why.
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        # A list filtered by one status seeks straight to its page (migration 0007).
        Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at", "id"),
    )


class JobStage(Base):
    """One stage of one job: who holds it, how often it ran, what it produced.

    A worker's claim writes a fresh `lease`; every later write for the stage
    (heartbeat, progress, metrics, checkpoint, outputs, finish) matches on it,
    so a worker whose claim was taken over can change nothing."""

    __tablename__ = "job_stages"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    # pending | queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    pool: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # The device the claiming worker runs on (cpu, cuda:0): with the pool, where the stage ran.
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease: Mapped[str | None] = mapped_column(String(36), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When its message was last sent: the sweeper re-sends a stage left unclaimed too long.
    queued_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # {"<run>": {"key": <artifact key>, "epoch": <epochs done>}}: where a re-run resumes.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Artifact keys and small results the next stages read.
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        UniqueConstraint("job_id", "name"),
        Index("ix_job_stages_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_job_stages_status_queued", "status", "queued_at"),
    )


class IdempotencyKey(Base):
    """The first response to a request sent with an `Idempotency-Key` header,
    returned again to a retry with the same key and the same body."""

    __tablename__ = "idempotency_keys"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 over the method, path and body (an upload's file by its sha256).
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_metrics_job_id", "job_id", "id"),
        # `?since_epoch=` reads only a job's later epochs (migration 0007).
        Index("ix_metrics_job_epoch", "job_id", "epoch"),
        # One point per series and epoch, however often a stage is re-run.
        UniqueConstraint("job_id", "name", "epoch"),
    )


class Worker(Base):
    __tablename__ = "workers"
    # "<hostname>/<pool>/<device>/<pid>": one row per worker process.
    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pool: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    device_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    current_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (Index("ix_workers_pool_heartbeat", "pool", "last_heartbeat"),)


class MaintenanceRun(Base):
    """When each worker last completed a pass of the reaper and of the sweeper: any worker
    may run them, so the gateway's /metrics reads the newest of these rows rather than a
    process. One row per worker, never one shared row: a worker frozen (SIGSTOP, a paused
    VM) between its upsert and its commit would hold a shared row's lock, and every other
    worker's heartbeat thread would wait on it, reaper included."""

    __tablename__ = "maintenance_runs"
    # "reaper" or "sweeper".
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column(Timestamp)
