"""The student families: each one's parameter schema (a pydantic model, its defaults in
the fields), the module paths of its feature layers, and its parameter count.

`FAMILIES` is the registry. The gateway validates `student.params` with the family's
`params` model (an unknown or out-of-range parameter is a 422 at submission) and counts
the student's parameters before the job is queued; the engine (distill/students.py)
builds the model from the same parsed parameters, and a test holds each count equal to
the built model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Layer widths stay below this: a bigger value is a typo, and the size limit refuses the
# student by its parameter count long before (STILLHOUSE_MAX_STUDENT_PARAMS).
MAX_WIDTH = 1 << 24
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


class StudentParams(BaseModel):
    """Base of every family's parameters: unknown names are refused."""

    model_config = ConfigDict(extra="forbid")


class MLPParams(StudentParams):
    hidden: list[Width] = Field(
        default_factory=lambda: [64],
        max_length=32,
        description="Widths of the hidden layers, in order; [] is a linear model.",
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer."
    )


class CNN1dParams(StudentParams):
    channels: int = Field(default=16, ge=1, le=4096, description="Channels of every conv layer.")
    layers: int = Field(default=2, ge=1, le=64, description="Conv -> BatchNorm -> ReLU blocks.")
    kernel_size: int = Field(default=3, ge=1, le=255, description="Kernel width of every conv.")


def _mlp_count(p: MLPParams, shape: Sequence[int], classes: int) -> int:
    """Linear(in, h) per hidden width, then Linear(last, classes); weights plus biases."""
    count, fan_in = 0, math.prod(shape)
    for width in [*p.hidden, classes]:
        count += fan_in * width + width
        fan_in = width
    return count


def _cnn1d_count(p: CNN1dParams, shape: Sequence[int], classes: int) -> int:
    """Per layer Conv1d(c_in, channels, k, bias=False) and BatchNorm1d (weight, bias; its
    running statistics are buffers), then Linear(channels, classes)."""
    count, c_in = 0, shape[0] if len(shape) == 2 else 1  # a flat sample is one channel
    for _ in range(p.layers):
        count += c_in * p.channels * p.kernel_size + 2 * p.channels
        c_in = p.channels
    return count + p.channels * classes + classes


def _cnn1d_shape(shape: Sequence[int]) -> str | None:
    if len(shape) > 2:
        return (
            f"The student architecture 'cnn1d' takes samples of shape (L,) or (C, L), got "
            f"{tuple(shape)}; flatten the samples or use 'mlp' or 'cnn2d'."
        )
    return None


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    params: type[StudentParams]
    # Module paths (model.get_submodule) whose outputs a feature loss may read; the first
    # is the default `student_layer` of a feature loss.
    feature_layers: tuple[str, ...]
    # (params, sample shape without the batch dim, classes) -> parameter count.
    count: Callable[[Any, Sequence[int], int], int]
    # (sample shape) -> a sentence when the family cannot take such samples, else None.
    check_shape: Callable[[Sequence[int]], str | None] = lambda shape: None
    # What a sample is: "float" features, or "float or tokens" (int64 ids with vocab_size).
    inputs: str = "float"


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="mlp",
            description="Flatten -> [Linear -> ReLU -> Dropout] per hidden width -> Linear.",
            params=MLPParams,
            feature_layers=("hidden",),
            count=_mlp_count,
        ),
        Family(
            name="cnn1d",
            description=(
                "[Conv1d -> BatchNorm -> ReLU] x layers -> global average pool -> Linear, "
                "for (L,) or (C, L) signals."
            ),
            params=CNN1dParams,
            feature_layers=("features",),
            count=_cnn1d_count,
            check_shape=_cnn1d_shape,
        ),
    )
}
ARCHITECTURES = tuple(FAMILIES)


def parse_params(architecture: str, params: dict[str, Any]) -> StudentParams:
    """The family's parsed parameters; raises ValueError (unknown family) or pydantic's
    ValidationError (bad parameters)."""
    family = FAMILIES.get(architecture)
    if family is None:
        raise ValueError(
            f"unknown student architecture '{architecture}'; valid: {', '.join(ARCHITECTURES)}"
        )
    return family.params.model_validate(params)


def param_count(
    architecture: str, params: dict[str, Any], sample_shape: Sequence[int], num_classes: int
) -> int | None:
    """The student's parameter count for samples of `sample_shape` and `num_classes`
    outputs, computed without building it; None when the params or the shape are not a
    model the family builds (the job is then refused or failed with the family's sentence)."""
    family = FAMILIES.get(architecture)
    if family is None or not isinstance(params, dict):
        return None
    try:
        parsed = family.params.model_validate(params)
    except ValidationError:
        return None
    shape = [int(d) for d in sample_shape]
    if not shape or any(d < 1 for d in shape) or num_classes < 1 or family.check_shape(shape):
        return None
    return family.count(parsed, shape, num_classes)
