from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from catalog.students import ARCHITECTURES
from core.spec import POOL_NAME
from service.errors import explain_pattern
from service.schemas import UtcDatetime


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    status: str
    error: str | None
    format: str
    formats: list[str]
    filename: str
    sha256: str
    size_bytes: int
    spec: dict[str, Any] | None
    input_shape: list[int | None] | None
    output_shape: list[int | None] | None
    num_params: int | None
    # ONNX models: the named intermediate tensors a feature loss's teacher_tensor may name.
    tensors: list[dict[str, Any]] | None = None
    source_job_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def of(cls, row: Any) -> ModelPublic:
        data = {name: getattr(row, name) for name in cls.model_fields if name != "formats"}
        return cls(**data, formats=sorted(row.files))


class ZooSpec(BaseModel):
    """What rebuilds safetensors weights: an architecture from the built-in zoo."""

    model_config = ConfigDict(extra="forbid")
    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int] = Field(min_length=1, max_length=4)
    num_classes: int = Field(ge=1, le=1_000_000)

    @field_validator("architecture")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{value}'; valid: {', '.join(ARCHITECTURES)}")
        return value

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(dim < 1 for dim in value):
            raise ValueError("input_shape holds the per-sample shape, all dimensions >= 1")
        return value


POOL_PATTERN = explain_pattern(
    POOL_NAME.pattern, "is not a pool name (lowercase letters, digits, '-', '_', '.')"
)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(
        min_length=1,
        description="Samples, each a nested list of numbers of the model's per-sample shape "
        "(input_shape without the batch dimension).",
    )
    pool: str = Field(
        default="cpu",
        pattern=POOL_PATTERN,
        description="The worker pool that runs the model; `auto` is gpu when a live gpu "
        "worker exists, else cpu.",
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=300,
        description="Seconds to wait for a worker (default STILLHOUSE_PREDICT_TIMEOUT_S, 30).",
    )
    format: Literal["onnx", "safetensors", "onnx-int8"] | None = Field(
        default=None,
        description="Which of the model's files runs; default onnx when it has one, "
        "else its own format.",
    )


class PredictResponse(BaseModel):
    outputs: list[Any] = Field(description="The model's first output, one entry per sample.")
    predictions: list[int] | None = Field(
        description="The argmax of each output row when the outputs are 2-D (a classifier)."
    )
    model_id: str
    format: str
    pool: str
    worker_id: str
