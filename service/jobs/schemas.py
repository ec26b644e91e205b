from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from core.models import Job, JobStage
from core.queues import Stage
from core.stages import job_kind
from core.status import training_progress
from service.schemas import UtcDatetime


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
    def of(row: JobStage) -> StagePublic:
        kind = TrainingStagePublic if row.name == Stage.TRAINING.value else StagePublic
        public = kind.model_validate(row)
        public.details = (row.outputs or {}).get("details")
        return public


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
    def of(cls, job: Job, stages: Sequence[JobStage]) -> JobPublic:
        current = next((s for s in stages if s.name == job.stage), None)
        return cls(
            id=job.id,
            kind=job_kind(job.spec),
            name=job.name,
            status=job.status,
            stage=job.stage,
            progress=job.progress,
            epoch=job.epoch,
            training=_training(job),
            error=job.error,
            attempt=current.attempts if current is not None else 0,
            cancel_requested=job.cancel_requested,
            student_model_id=job.student_model_id,
            summary=job.summary,
            warnings=list(job.warnings or []),
            spec=job.spec,
            stages=[StagePublic.of(s) for s in sorted(stages, key=lambda s: s.position)],
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            heartbeat_at=current.heartbeat_at if current is not None else None,
        )


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


def _training(job: Job) -> TrainingProgress | None:
    progress = training_progress(job)
    return TrainingProgress.model_validate(progress) if progress is not None else None
