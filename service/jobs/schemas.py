from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from service.schemas import UtcDatetime


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
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
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    updated_at: UtcDatetime
    heartbeat_at: UtcDatetime | None


class MetricPoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    step: int
    epoch: int
    name: str
    value: float
