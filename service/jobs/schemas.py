from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import to_json
from sqlalchemy import Row

from core.models import Job, JobStage
from core.queues import JobStatus, Stage
from core.status import status_doc, utc
from service.errors import explain_pattern
from service.schemas import UtcDatetime

_ONE_STATUS = "(" + "|".join(s.value for s in JobStatus) + ")"
STATUS_PATTERN = explain_pattern(
    f"^{_ONE_STATUS}(,{_ONE_STATUS})*$",
    "must be job statuses separated by commas: " + ", ".join(s.value for s in JobStatus),
)
StatusQuery = Annotated[
    str | None,
    Query(
        pattern=STATUS_PATTERN,
        max_length=100,
        description="Only jobs in these statuses, separated by commas (e.g. queued,running).",
        examples=["running", "queued,running"],
    ),
]


def parse_statuses(value: str | None) -> tuple[str, ...]:
    """The distinct statuses of a `status` query (already matched against STATUS_PATTERN)."""
    return tuple(dict.fromkeys(value.split(","))) if value else ()


class StagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    status: str
    pool: str | None
    worker_id: str | None
    device: str | None  # where the stage's last run happened (cpu, cuda:0)
    attempts: int  # runs of this stage: more than 1 when a worker died and it was re-run
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    # Facts a finished stage tells the user: where the teacher's outputs came from (the
    # cache or a run), export parity and the int8 variant, the benchmark's device.
    details: dict[str, Any] | None = None

    @staticmethod
    def of(row: JobStage | Row[Any]) -> StagePublic:
        kind = TrainingStagePublic if row.name == Stage.TRAINING.value else StagePublic
        return kind.model_validate(_stage_fields(row))


class TrainingStagePublic(StagePublic):
    # The epoch a re-run resumed from (its last checkpoint); 0 when it did not resume.
    resumed_from_epoch: int = 0

    @field_validator("resumed_from_epoch", mode="before")
    @classmethod
    def _not_yet(cls, value: int | None) -> int:
        return value or 0


class TrainingProgress(BaseModel):
    """The training stage's progress: the distilled student trains first, then the no-KD
    baseline. `epoch` is the last epoch the run going on (or last run) finished: for a
    cancelled or failed job, the epochs that really ran."""

    run: Literal["student", "baseline"]
    epoch: int
    epochs: int  # the epochs asked (training.epochs); early stopping may end a run sooner


class JobPublic(BaseModel):
    id: str
    kind: str  # "distill" or "inference" (batch inference)
    name: str
    status: str
    stage: str | None
    progress: float
    epoch: int  # the distilled student's last finished epoch
    training: TrainingProgress | None  # null until a training run starts
    error: str | None
    attempt: int  # runs of the current stage (a stage whose worker died is re-run)
    cancel_requested: bool
    student_model_id: str | None
    summary: dict[str, Any] | None
    # Sentences about the job's placement, e.g. a pool with no live worker to run a stage.
    warnings: list[str]
    spec: dict[str, Any]
    stages: list[TrainingStagePublic | StagePublic]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    updated_at: UtcDatetime
    heartbeat_at: UtcDatetime | None  # the current stage's worker's last sign of life

    @classmethod
    def of(cls, job: Job | Row[Any], stages: Sequence[JobStage | Row[Any]]) -> JobPublic:
        """From the ORM rows or from plain rows with the same columns (a list's)."""
        ordered = sorted(stages, key=lambda s: s.position)
        return cls.model_validate(_job_fields(job, ordered, [StagePublic.of(s) for s in ordered]))

    @staticmethod
    def page_json(
        jobs: Sequence[Row[Any]], stages: dict[str, list[Row[Any]]], next_cursor: str | None
    ) -> bytes:
        """A Page[JobPublic] of these rows (`stages`: each job's rows by position) as JSON,
        from the same fields as `of` but without a validation per object: the rows are the
        database's, and validating 50 jobs and their 250 stages cost a list several times its
        database reads. tests/service/test_lists.py checks each item equals `of`'s."""
        items = [
            _job_fields(job, own, [_stage_fields(s) for s in own])
            for job in jobs
            for own in [stages.get(job.id, [])]
        ]
        return to_json({"items": items, "next_cursor": next_cursor}, inf_nan_mode="null")


def _stage_fields(row: JobStage | Row[Any]) -> dict[str, Any]:
    """StagePublic's fields (TrainingStagePublic's for the training stage)."""
    fields = {
        "name": row.name,
        "status": row.status,
        "pool": row.pool,
        "worker_id": row.worker_id,
        "device": row.device,
        "attempts": row.attempts,
        "started_at": utc(row.started_at),
        "finished_at": utc(row.finished_at),
        "details": (row.outputs or {}).get("details"),
    }
    if row.name == Stage.TRAINING.value:
        fields["resumed_from_epoch"] = row.resumed_from_epoch or 0
    return fields


def _job_fields(
    job: Job | Row[Any], rows: Sequence[JobStage | Row[Any]], stages: Sequence[Any]
) -> dict[str, Any]:
    """JobPublic's fields: the status record's (core.status) plus `spec`, `summary` and
    the full stages; `rows` and `stages` are the job's stages by position."""
    return {**status_doc(job, rows, list(stages)), "summary": job.summary, "spec": job.spec}


class StageStatusPublic(BaseModel):
    name: str
    status: str
    pool: str | None
    worker_id: str | None
    device: str | None
    attempts: int
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class JobStatusPublic(BaseModel):
    """A job as GET /v1/jobs/{id} shows it less `spec` and `summary`, with each stage's
    placement and timing only: what a poll needs (core.status builds it)."""

    id: str
    kind: str
    name: str
    status: str
    stage: str | None
    progress: float
    epoch: int
    training: TrainingProgress | None
    error: str | None
    attempt: int
    cancel_requested: bool
    student_model_id: str | None
    warnings: list[str]
    stages: list[StageStatusPublic]
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


class Latency(BaseModel):
    p50: float  # milliseconds, after warm-up
    p95: float
    batch: int = 1  # 1, or a fixed-batch model's own batch


class Throughput(BaseModel):
    samples_per_s: float
    batch: int


class Timing(BaseModel):
    latency_ms: Latency | None
    throughput: Throughput | None


class SelectedEpoch(BaseModel):
    epoch: int
    by: str  # "accuracy" | "agreement"
    note: str | None = None  # why not the job's `select`, when it fell back


class LastEpoch(BaseModel):
    epoch: int
    accuracy: float | None
    agreement: float | None
    kl: float | None


class EarlyStop(BaseModel):
    epoch: int  # the last epoch run
    metric: str  # the val_* figure watched
    reason: str


class ReportEntry(Timing):
    """One model's figures on the validation set and on the benchmark pool; null where a
    figure does not apply (the teacher's agreement with itself, accuracy without labels)."""

    accuracy: float | None
    agreement: float | None
    kl_to_teacher: float | None
    ece: float | None
    params: int | None
    bytes: int | None
    eager: Timing | None  # the same timings in torch eager; null for ONNX-only models
    # Per class c: the share of its validation rows predicted c (null: no row of c).
    per_class_accuracy: list[float | None] | None = None
    num_classes: int | None = None
    # A "regression" job's figures: the outputs against the teacher's.
    mse_to_teacher: float | None = None
    r2_to_teacher: float | None = None
    # Student and baseline only: the epoch whose weights are scored here, the run's last
    # epoch's validation figures, and why it stopped early when it did.
    selected: SelectedEpoch | None = None
    last_epoch: LastEpoch | None = None
    early_stopped: EarlyStop | None = None
    epochs_run: int | None = None


class BenchmarkInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    pool: str
    device: str
    device_name: str | None
    threads: int | None
    runtime: str  # "onnxruntime 1.x"
    versions: dict[str, str]
    batch: int  # the throughput batch size


class ExportInfo(BaseModel):
    parity_max_abs_diff: float  # torch vs ONNX Runtime outputs over the validation set


class QuantizationInfo(BaseModel):
    mode: str | None  # dynamic, static, off
    reason: str | None  # why that mode
    kept: bool | None  # offered as format=onnx-int8
    note: str | None  # why not, when it is not


class JobReport(BaseModel):
    teacher: ReportEntry
    student: ReportEntry
    baseline: ReportEntry | None
    student_int8: ReportEntry | None
    speedup: float | None  # teacher p50 / student p50
    compression: float | None  # teacher params / student params
    benchmark: BenchmarkInfo
    export: ExportInfo
    quantization: QuantizationInfo
    teacher_outputs: str  # "cached" (offline KD) or "online"
    task: str = "classification"  # "regression": mse_logits is the only loss term
    stages: list[TrainingStagePublic | StagePublic]
