"""The job specification as the API accepts it and the workers read it back
from the database. Pydantic checks ranges; cross-resource checks (shapes,
readiness) live in the gateway's job service."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from catalog.losses import LossParams, LossSpec, check_term

STUDENT_ARCHITECTURES = ("mlp", "cnn1d")
# The zoo's defaults and parameter names, as distill.students builds them.
MLP_DEFAULTS: dict[str, Any] = {"hidden": [64], "dropout": 0.0}
CNN1D_DEFAULTS: dict[str, Any] = {"channels": 16, "layers": 2, "kernel_size": 3}
# The spec fields that name datasets, in the order a job uses them.
DATASET_FIELDS = ("train_dataset_id", "transfer_dataset_id", "val_dataset_id")
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Ids are UUID4 strings: anything else names nothing. Text that reaches a database
# column holds no control characters (PostgreSQL refuses NUL in text). Both patterns
# are in the OpenAPI document, so clients and fuzzers see the rule.
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"


class StudentSpec(BaseModel):
    # Exactly one source, said in the schema too: a zoo architecture or an uploaded model.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["architecture"]}, {"required": ["model_id"]}]},
    )
    architecture: str | None = Field(
        default=None, json_schema_extra={"enum": [*STUDENT_ARCHITECTURES, None]}
    )
    params: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = Field(default=None, pattern=ID_PATTERN)

    @model_validator(mode="after")
    def _one_source(self) -> StudentSpec:
        if (self.architecture is None) == (self.model_id is None):
            raise ValueError("student needs exactly one of 'architecture' or 'model_id'")
        if self.architecture is not None and self.architecture not in STUDENT_ARCHITECTURES:
            valid = ", ".join(STUDENT_ARCHITECTURES)
            raise ValueError(f"unknown student architecture '{self.architecture}'; valid: {valid}")
        return self


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0.0, le=10.0, allow_inf_nan=False)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    # Stepped once per epoch; "cosine" anneals lr to 0 over the run.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # Std of Gaussian noise added to each training batch's inputs (drawn from the seed);
    # more than 0 needs teacher_outputs "online" (JobCreate refuses it with cached logits).
    augment_noise: float = Field(default=0.0, ge=0.0, le=10.0, allow_inf_nan=False)


class PlacementSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = "auto"
    student: str = "auto"
    benchmark: str = "cpu"
    # Export needs no accelerator; an operator may still send it to a named pool.
    export: str = "cpu"

    @field_validator("teacher", "student", "benchmark", "export")
    @classmethod
    def _pool(cls, value: str) -> str:
        if value != "auto" and not POOL_NAME.match(value):
            raise ValueError(
                f"'{value}' is not a pool name (lowercase letters, digits, '-', '_', '.')"
            )
        return value


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Throughput is measured at this batch size; latency always at batch 1.
    batch_size: int = Field(default=256, ge=1, le=65_536)


class QuantizationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # auto: static (calibrated on the training data) for graphs with convolutions, dynamic
    # for matrix products only (distill/quantize.py says why); off: no int8 variant.
    mode: Literal["auto", "dynamic", "static", "off"] = "auto"
    # The int8 variant is reported as not kept when it loses more validation accuracy than this.
    max_accuracy_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    calibration_samples: int = Field(default=256, ge=1, le=100_000)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["distill"] = "distill"
    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    teacher_model_id: str = Field(pattern=ID_PATTERN)
    student: StudentSpec
    train_dataset_id: str = Field(pattern=ID_PATTERN)
    transfer_dataset_id: str | None = Field(default=None, pattern=ID_PATTERN)
    val_dataset_id: str | None = Field(default=None, pattern=ID_PATTERN)
    # Each term parsed by the catalog's model its `name` picks (catalog.losses).
    losses: list[LossSpec] = Field(min_length=1, max_length=16)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    baseline: bool = False
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    # "cached": the teacher runs once per (teacher, dataset) before training and its logits
    # are reused (offline KD). "online": the teacher runs on each training batch, so it sees
    # the augmented inputs; its cost is then paid every step of every epoch.
    teacher_outputs: Literal["cached", "online"] = "cached"

    @field_validator("losses", mode="before")
    @classmethod
    def _loss_names(cls, value: Any) -> Any:
        """Unknown names and parameters, said with the valid ones, before the union parses."""
        if isinstance(value, list):
            for term in value:
                check_term(term)
        return value

    @model_validator(mode="after")
    def _losses(self) -> JobCreate:
        if not any(term.weight > 0 for term in self.losses):
            raise ValueError("at least one loss term needs a weight above 0")
        names = [term.name for term in self.losses]
        if len(set(names)) != len(names):
            raise ValueError("each loss term may appear once")
        return self

    @model_validator(mode="after")
    def _augmentation(self) -> JobCreate:
        if self.teacher_outputs == "cached" and self.training.augment_noise > 0:
            raise ValueError(
                f"training.augment_noise is {self.training.augment_noise:g} but teacher_outputs "
                "is 'cached': cached teacher logits describe the un-augmented inputs, so set "
                "teacher_outputs to 'online' (the teacher then sees each augmented batch) or "
                "augment_noise to 0"
            )
        return self

    @property
    def needs_labels(self) -> bool:
        return any(t.needs_labels and t.weight > 0 for t in self.losses)

    @property
    def tensor_terms(self) -> list[LossParams]:
        """The weighted terms that read intermediate tensors (teacher tensor, student layer)."""
        return [t for t in self.losses if t.uses_tensors and t.weight > 0]


class InferenceJobCreate(BaseModel):
    """A batch inference job: one model over one dataset. Its logits are a download, and
    the teacher-output cache of any later distillation job with the same model and data."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["inference"]
    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    model_id: str = Field(pattern=ID_PATTERN)
    dataset_id: str = Field(pattern=ID_PATTERN)
    # `placement.teacher` picks the pool the model runs on, as in a distillation job.
    placement: PlacementSpec = Field(default_factory=PlacementSpec)


def job_kind_of(value: Any) -> str:
    """The discriminator of a job body: its `kind`, "distill" when absent."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in ("distill", "inference") else "distill"


AnyJobCreate = Annotated[
    Annotated[JobCreate, Tag("distill")] | Annotated[InferenceJobCreate, Tag("inference")],
    Discriminator(job_kind_of),
]


# The student's size, counted before a job is queued. The gateway cannot build the model
# (no torch there), so each zoo family's parameter count is written out here, layer by
# layer as distill.students builds it; a test holds them equal to the real models'.


def _width(value: Any) -> int | None:
    """A layer width as the zoo would take it; JSON's 1e6 counts as 1,000,000 here, so a
    huge student is refused for its size (the worker refuses a float width with a sentence)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 1 or value != int(value):
        return None
    return int(value)


def _mlp_params(params: dict[str, Any], shape: Sequence[int], classes: int) -> int | None:
    """Linear(in, h) per hidden width, then Linear(last, classes); weights plus biases."""
    hidden = params.get("hidden", MLP_DEFAULTS["hidden"])
    if not isinstance(hidden, list):
        return None
    widths = [_width(h) for h in hidden]
    if any(w is None for w in widths):
        return None
    count, fan_in = 0, math.prod(shape)
    for width in [w for w in widths if w is not None] + [classes]:
        count += fan_in * width + width
        fan_in = width
    return count


def _cnn1d_params(params: dict[str, Any], shape: Sequence[int], classes: int) -> int | None:
    """Per layer Conv1d(c_in, channels, k, bias=False) and BatchNorm1d (weight, bias; its
    running statistics are buffers), then Linear(channels, classes)."""
    values = {key: _width(params.get(key, d)) for key, d in CNN1D_DEFAULTS.items()}
    channels, layers, kernel = values["channels"], values["layers"], values["kernel_size"]
    if channels is None or layers is None or kernel is None or len(shape) > 2:
        return None
    count, c_in = 0, shape[0] if len(shape) == 2 else 1  # a flat sample is one channel
    for _ in range(layers):
        count += c_in * channels * kernel + 2 * channels
        c_in = channels
    return count + channels * classes + classes


STUDENT_PARAM_COUNTS: dict[str, Callable[[dict[str, Any], Sequence[int], int], int | None]] = {
    "mlp": _mlp_params,
    "cnn1d": _cnn1d_params,
}
ZOO_PARAMS = {"mlp": set(MLP_DEFAULTS), "cnn1d": set(CNN1D_DEFAULTS)}


def student_param_count(
    architecture: str, params: dict[str, Any], sample_shape: Sequence[int], num_classes: int
) -> int | None:
    """The zoo student's parameter count for samples of `sample_shape` and `num_classes`
    outputs; None when the params are not a model the zoo builds (the worker then fails
    the job with the zoo's own sentence)."""
    count = STUDENT_PARAM_COUNTS.get(architecture)
    if count is None or not isinstance(params, dict) or set(params) - ZOO_PARAMS[architecture]:
        return None
    if not sample_shape or any(int(d) < 1 for d in sample_shape) or num_classes < 1:
        return None
    return count(params, [int(d) for d in sample_shape], num_classes)
