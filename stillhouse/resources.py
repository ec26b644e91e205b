"""The API's resources as the Python client returns them: typed dicts of the JSON the
service sends (the OpenAPI document at /openapi.json is the full reference), so a
script gets checked field names and still holds plain, printable data."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# A job stops changing once it reaches one of these.
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
ModelFormat = Literal["onnx", "safetensors", "onnx-int8", "torchscript", "torch_export"]


class ModelInfo(TypedDict):
    id: str
    name: str
    status: str  # pending, ready, invalid
    error: str | None
    format: str
    formats: list[str]  # the files it can be downloaded as
    filename: str
    sha256: str
    size_bytes: int
    spec: dict[str, Any] | None
    input_shape: list[int | None] | None
    output_shape: list[int | None] | None
    num_params: int | None
    source_job_id: str | None
    created_at: str
    updated_at: str


class DatasetInfo(TypedDict):
    id: str
    name: str
    status: str  # pending, ready, invalid
    error: str | None
    format: str
    filename: str
    sha256: str
    size_bytes: int
    num_samples: int | None
    sample_shape: list[int] | None
    num_classes: int | None
    labeled: bool | None
    created_at: str
    updated_at: str


class TrainingProgress(TypedDict):
    run: Literal["student", "baseline"]  # the student trains first, then the no-KD baseline
    epoch: int  # the run's last finished epoch
    epochs: int  # the epochs asked


class StageInfo(TypedDict):
    name: str
    status: str
    pool: str | None
    worker_id: str | None
    attempts: int
    started_at: str | None
    finished_at: str | None


class JobInfo(TypedDict):
    id: str
    kind: str
    name: str
    status: str  # queued, running, succeeded, failed, cancelled
    stage: str | None
    progress: float  # 0..1
    epoch: int
    # Absent on a service older than this client; null until a training run starts.
    training: TrainingProgress | None
    error: str | None
    cancel_requested: bool
    student_model_id: str | None
    summary: dict[str, Any] | None
    warnings: list[str]
    spec: dict[str, Any]
    stages: list[StageInfo]
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


class MetricPoint(TypedDict):
    step: int
    epoch: int
    name: str  # e.g. loss, val_accuracy; the baseline's carry the prefix "baseline/"
    value: float


class Prediction(TypedDict):
    outputs: list[Any]
    predictions: list[int] | None
    model_id: str
    format: str
    pool: str
    worker_id: str
