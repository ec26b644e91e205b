"""Task names and queues, declared once for the gateway (which sends by name)
and the workers (which register the names)."""

from __future__ import annotations

from enum import StrEnum


class Pool(StrEnum):
    # Teacher inference and training where a GPU makes them cheap.
    GPU = "gpu"
    # Inspection, benchmark and export; training when no GPU worker is alive.
    CPU = "cpu"


class TaskName(StrEnum):
    INSPECT_MODEL = "stillhouse.inspect_model"
    INSPECT_DATASET = "stillhouse.inspect_dataset"
    RUN_STAGE = "stillhouse.run_stage"
    PREDICT = "stillhouse.predict"


class Stage(StrEnum):
    TEACHER_INFERENCE = "teacher_inference"
    TRAINING = "training"
    EVALUATION = "evaluation"
    BENCHMARK = "benchmark"
    EXPORT = "export"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
FINAL_JOB_STATUSES = (
    JobStatus.SUCCEEDED.value,
    JobStatus.FAILED.value,
    JobStatus.CANCELLED.value,
)


class StageStatus(StrEnum):
    PENDING = "pending"  # an earlier stage has not finished
    QUEUED = "queued"  # its message is out; no worker holds it
    RUNNING = "running"  # a worker holds it under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ResourceStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    INVALID = "invalid"
