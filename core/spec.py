"""The job specification as the API accepts it and the workers read it back
from the database. Pydantic checks ranges; cross-resource checks (shapes,
readiness) live in the gateway's job service."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from catalog.losses import LossParams, LossSpec, check_term
from catalog.students import ARCHITECTURES, FAMILIES, check_student_params

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
        default=None, json_schema_extra={"enum": [*ARCHITECTURES, None]}
    )
    # The family's parameters (catalog/students.py; GET /v1/students lists their schemas),
    # validated here so a bad one is a 422 at submission, kept as the client sent them.
    params: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = Field(default=None, pattern=ID_PATTERN)

    @field_validator("architecture")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        if value is not None and value not in FAMILIES:
            valid = ", ".join(ARCHITECTURES)
            raise ValueError(f"unknown student architecture '{value}'; valid: {valid}")
        return value

    @field_validator("params")
    @classmethod
    def _family_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        architecture = info.data.get("architecture")
        if architecture is not None:
            check_student_params(architecture, value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> StudentSpec:
        if (self.architecture is None) == (self.model_id is None):
            raise ValueError("student needs exactly one of 'architecture' or 'model_id'")
        return self


class EarlyStoppingSpec(BaseModel):
    """Stop after `patience` epochs in a row whose validation `metric` did not improve by more
    than `min_delta` (accuracy and agreement rise, kl falls)."""

    model_config = ConfigDict(extra="forbid")
    metric: Literal["accuracy", "agreement", "kl"] = "accuracy"
    patience: int = Field(default=3, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0.0, le=1e6, allow_inf_nan=False)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0.0, le=10.0, allow_inf_nan=False)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    # Stepped once per epoch; "cosine" anneals lr to 0 over the run.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Epochs of linear warm-up before the schedule: epoch e <= W trains at lr * e / (W + 1).
    warmup_epochs: int = Field(default=0, ge=0, le=10_000)
    # The validation figure that picks the epoch whose weights are exported and reported:
    # "accuracy" (falls back to "agreement" when the validation set has no labels) or
    # "agreement" with the teacher. The report also gives the last epoch's figures.
    select: Literal["accuracy", "agreement"] = "accuracy"
    early_stopping: EarlyStoppingSpec | None = None
    # The `ce` term's class weights, for the student and the baseline: "balanced" gives class c
    # n / (C * n_c) from the training labels; a list gives one weight per class.
    class_weights: Literal["balanced"] | list[float] | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # Std of Gaussian noise added to each training batch's inputs (drawn from the seed);
    # more than 0 needs teacher_outputs "online" (JobCreate refuses it with cached logits).
    augment_noise: float = Field(default=0.0, ge=0.0, le=10.0, allow_inf_nan=False)

    @field_validator("class_weights")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not 1 <= len(value) <= 100_000:
                raise ValueError("class_weights needs one weight per class (1 to 100000)")
            if any(not math.isfinite(w) or w < 0 for w in value):
                raise ValueError("each class weight must be a finite number >= 0")
            if not any(w > 0 for w in value):
                raise ValueError("all class weights are 0; give at least one class a weight > 0")
        return value

    @model_validator(mode="after")
    def _warmup(self) -> TrainingSpec:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs}); "
                "shorten the warm-up or train for more epochs"
            )
        return self


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
        if self.training.augment_noise > 0 and self.student.params.get("vocab_size") is not None:
            raise ValueError(
                "training.augment_noise adds Gaussian noise to float inputs but the student "
                "reads token ids (student.params.vocab_size is set); set augment_noise to 0"
            )
        return self

    @property
    def task(self) -> str:
        """ "regression" when `mse_logits` is the job's only loss term with a weight above 0:
        the teacher's outputs are then matched as values, and the report scores the student's
        outputs against them by MSE and R^2; "classification" otherwise."""
        active = {t.name for t in self.losses if t.weight > 0}
        return "regression" if active == {"mse_logits"} else "classification"

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
