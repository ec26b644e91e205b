from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from core.models import Job, JobStage
from core.queues import Stage
from service.schemas import UtcDatetime


class StagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    status: str
    pool: str | None
    worker_id: str | None
    attempts: int  # runs of this stage: more than 1 when a worker died and it was re-run
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None

    @staticmethod
    def of(row: JobStage) -> StagePublic:
        kind = TrainingStagePublic if row.name == Stage.TRAINING.value else StagePublic
        return kind.model_validate(row)


class TrainingStagePublic(StagePublic):
    # The epoch a re-run resumed from (its last checkpoint); 0 when it did not resume.
    resumed_from_epoch: int = 0

    @field_validator("resumed_from_epoch", mode="before")
    @classmethod
    def _not_yet(cls, value: int | None) -> int:
        return value or 0


class JobPublic(BaseModel):
    id: str
    name: str
    status: str
    stage: str | None
    progress: float
    epoch: int
    error: str | None
    attempt: int  # runs of the current stage (a stage whose worker died is re-run)
    cancel_requested: bool
    student_model_id: str | None
    summary: dict[str, Any] | None
    spec: dict[str, Any]
    stages: list[TrainingStagePublic | StagePublic]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    updated_at: UtcDatetime
    heartbeat_at: UtcDatetime | None  # the current stage's worker's last sign of life

    @classmethod
    def of(cls, job: Job, stages: Sequence[JobStage]) -> JobPublic:
        current = next((s for s in stages if s.name == job.stage), None)
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            stage=job.stage,
            progress=job.progress,
            epoch=job.epoch,
            error=job.error,
            attempt=current.attempts if current is not None else 0,
            cancel_requested=job.cancel_requested,
            student_model_id=job.student_model_id,
            summary=job.summary,
            spec=job.spec,
            stages=[StagePublic.of(s) for s in sorted(stages, key=lambda s: s.position)],
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            heartbeat_at=current.heartbeat_at if current is not None else None,
        )


class MetricPoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    step: int
    epoch: int
    name: str
    value: float
